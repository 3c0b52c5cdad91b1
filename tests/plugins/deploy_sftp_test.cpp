// Contract tests of the deploy/sftp plugin against a real OpenSSH sshd from tests/env.
// The host's folders are on this machine, so the tests check the result on disk directly.
// They skip unless CERTFLEET_TEST_ENV names a started environment (tests/env/start-env).
#include <poll.h>
#include <pwd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "plugin_loader.hpp"
#include "services.hpp"
#include "test_pki.hpp"
#include <netinet/in.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>

namespace certfleet {
namespace {

namespace fs = std::filesystem;

// env.sh holds `export NAME='value'` lines, quoted for a POSIX shell.
std::map<std::string, std::string> readEnvFile(const fs::path& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const std::string prefix = "export ";
    std::size_t equals = line.find('=');
    if (line.rfind(prefix, 0) != 0 || equals == std::string::npos) {
      continue;
    }
    std::string name = line.substr(prefix.size(), equals - prefix.size());
    std::string value;
    for (std::size_t i = equals + 1; i < line.size(); ++i) {
      if (line[i] == '\'') {
        std::size_t end = line.find('\'', i + 1);
        value += line.substr(i + 1, end - i - 1);
        i = end == std::string::npos ? line.size() : end;
      } else if (line[i] == '\\' && i + 1 < line.size()) {
        value += line[++i];
      } else {
        value += line[i];
      }
    }
    values[name] = value;
  }
  return values;
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void writeFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// What a reader of the host's file would see, and which file it is.
struct FileState {
  std::string contents;
  ino_t inode = 0;
  mode_t mode = 0;
  uid_t owner = 0;

  bool operator==(const FileState& other) const {
    return contents == other.contents && inode == other.inode && mode == other.mode;
  }
};

FileState fileState(const fs::path& path) {
  FileState state;
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    ADD_FAILURE() << "cannot stat " << path;
    return state;
  }
  state.contents = readFile(path);
  state.inode = info.st_ino;
  state.mode = info.st_mode & 07777;
  state.owner = info.st_uid;
  return state;
}

std::vector<std::string> temporaryFiles(const fs::path& folder) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(folder)) {
    std::string name = entry.path().filename().string();
    if (name.find(".certfleet-") != std::string::npos) {
      found.push_back(name);
    }
  }
  return found;
}

// A loopback port with no listener (closed right after the kernel picked it).
std::uint16_t unusedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    ADD_FAILURE() << "cannot pick a free loopback port";
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

Settings makeSettings(const std::map<std::string, std::string>& values) {
  Settings settings("deploy.sftp", "deploy_sftp_test");
  for (const auto& [key, value] : values) {
    settings.set(key, {value, "deploy_sftp_test:" + key, false});
  }
  return settings;
}

CertificateBundle makeBundle(const std::string& name) {
  testing::SelfSigned pair = testing::makeSelfSigned(name, 2);
  return {Secret(pair.key_pem), pair.cert_pem, pair.cert_pem};
}

class DeploySftpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env_dir = std::getenv("CERTFLEET_TEST_ENV");
    if (env_dir == nullptr) {
      GTEST_SKIP() << "CERTFLEET_TEST_ENV is not set (tests/env/start-env DIR, then export it)";
    }
    env_ = readEnvFile(fs::path(env_dir) / "env.sh");
    ASSERT_FALSE(env_["HOST1_TLS_DIR"].empty()) << "no HOST1_TLS_DIR in " << env_dir << "/env.sh";
    tls_dir_ = env_["HOST1_TLS_DIR"];
    key_path_ = tls_dir_ / "key.pem";
    chain_path_ = tls_dir_ / "fullchain.pem";

    char scratch[] = "/tmp/certfleet-deploy-sftp-test-XXXXXX";
    ASSERT_NE(::mkdtemp(scratch), nullptr);
    scratch_ = scratch;

    auto loaded = PluginLoader::loadFile(fs::path(CERTFLEET_PLUGIN_BUILD_DIR) / "deploy-sftp.so");
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    ASSERT_NE(plugin_->as<DeployPlugin>(), nullptr);
    services_ =
        std::make_unique<CoreServices>("deploy", "sftp", "", scratch_ / "state",
                                       std::chrono::steady_clock::now() + std::chrono::minutes(2));
  }

  void TearDown() override {
    if (!scratch_.empty()) {
      fs::remove_all(scratch_);
    }
  }

  // The stage settings the tests start from: the environment's key, paths in HOST1_TLS_DIR.
  std::map<std::string, std::string> baseSettings() {
    return {{"known_hosts", env_["SSH_KNOWN_HOSTS"]},
            {"identity_file", env_["SSH_IDENTITY"]},
            {"connect_timeout", "5s"},
            {"key_path", key_path_.string()},
            {"chain_path", chain_path_.string()}};
  }

  HostTarget host() {
    HostTarget target;
    target.name = env_["HOST1_NAME"];
    target.address = "127.0.0.1";
    target.port = static_cast<std::uint16_t>(std::stoi(env_["HOST1_SSH_PORT"]));
    target.user = env_["SSH_USER"];
    target.names = {env_["HOST1_NAME"] + ".example.test"};
    return target;
  }

  Status deploy(const std::map<std::string, std::string>& values,
                const CertificateBundle& bundle,
                const HostTarget& target) {
    Settings settings = makeSettings(values);
    Status configured = plugin_->instance().configure(settings, *services_);
    if (!configured.ok()) {
      return configured;
    }
    return plugin_->as<DeployPlugin>()->deploy(target, settings, bundle);
  }

  // A copy of the environment's known_hosts in which this host has another key of the
  // same type, as after a man-in-the-middle or a reinstall.
  fs::path knownHostsWithChangedKey() {
    std::string marker = "[127.0.0.1]:" + env_["HOST1_SSH_PORT"] + " ";
    std::istringstream lines(readFile(env_["SSH_KNOWN_HOSTS"]));
    std::string line;
    std::string changed;
    while (std::getline(lines, line)) {
      if (line.rfind(marker, 0) != 0) {
        changed += line + "\n";
        continue;
      }
      std::string type = line.substr(marker.size(), line.find(' ', marker.size()) - marker.size());
      std::string keygen_type = type == "ssh-ed25519"           ? "-t ed25519"
                                : type == "ecdsa-sha2-nistp256" ? "-t ecdsa -b 256"
                                                                : "-t rsa -b 2048";
      fs::path other = scratch_ / ("other-" + std::to_string(changed.size()));
      std::string command =
          "ssh-keygen -q -N '' " + keygen_type + " -f " + other.string() + " >/dev/null";
      EXPECT_EQ(std::system(command.c_str()), 0) << command;
      std::string public_key = readFile(other.string() + ".pub");
      changed += marker + public_key.substr(0, public_key.find(' ', type.size() + 1)) + "\n";
    }
    EXPECT_NE(changed, readFile(env_["SSH_KNOWN_HOSTS"])) << "no line for " << marker;
    fs::path path = scratch_ / "known_hosts.changed";
    writeFile(path, changed);
    return path;
  }

  std::map<std::string, std::string> env_;
  fs::path tls_dir_;
  fs::path key_path_;
  fs::path chain_path_;
  fs::path scratch_;
  std::unique_ptr<CoreServices> services_;
  std::unique_ptr<LoadedPlugin> plugin_;
};

TEST_F(DeploySftpTest, ReplacesKeyAndChainWithExactContentsModesAndOwner) {
  FileState key_before = fileState(key_path_);
  FileState chain_before = fileState(chain_path_);
  CertificateBundle bundle = makeBundle(env_["HOST1_NAME"]);

  Status status = deploy(baseSettings(), bundle, host());

  ASSERT_TRUE(status.ok()) << status.message();
  FileState key = fileState(key_path_);
  FileState chain = fileState(chain_path_);
  EXPECT_EQ(key.contents, bundle.key_pem.reveal());
  EXPECT_EQ(chain.contents, bundle.fullchain_pem);
  EXPECT_EQ(key.mode, 0600U);
  EXPECT_EQ(chain.mode, 0644U);
  // A new file renamed over the old one, not the old one rewritten in place.
  EXPECT_NE(key.inode, key_before.inode);
  EXPECT_NE(chain.inode, chain_before.inode);
  passwd* user = ::getpwnam(env_["SSH_USER"].c_str());
  ASSERT_NE(user, nullptr);
  EXPECT_EQ(key.owner, user->pw_uid);
  EXPECT_EQ(temporaryFiles(tls_dir_), std::vector<std::string>{});
}

TEST_F(DeploySftpTest, TemporaryFilesAreNeverMoreReadableThanTheirFinalMode) {
  // Catch each temporary file the moment it appears and look at its mode before the
  // plugin's next request can reach the server.
  int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(watch, 0);
  ASSERT_GE(::inotify_add_watch(watch, tls_dir_.c_str(), IN_CREATE), 0);
  std::atomic<bool> done = false;
  std::vector<std::pair<std::string, mode_t>> seen;
  std::thread watcher([&] {
    alignas(inotify_event) char buffer[4096];
    while (!done) {
      pollfd ready{watch, POLLIN, 0};
      if (::poll(&ready, 1, 10) <= 0) {
        continue;
      }
      ssize_t size = ::read(watch, buffer, sizeof(buffer));
      for (ssize_t at = 0; at < size;) {
        auto* event = reinterpret_cast<inotify_event*>(buffer + at);
        struct stat info {};
        if (event->len > 0 && ::stat((tls_dir_ / event->name).c_str(), &info) == 0) {
          seen.emplace_back(event->name, info.st_mode & 07777);
        }
        at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      }
    }
  });

  Status status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]), host());
  done = true;
  watcher.join();
  ::close(watch);

  ASSERT_TRUE(status.ok()) << status.message();
  int key_files = 0;
  for (const auto& [name, mode] : seen) {
    if (name.rfind(".key.pem.certfleet-", 0) == 0) {
      ++key_files;
      EXPECT_EQ(mode & ~0600U, 0U) << name << " appeared with mode 0" << std::oct << mode;
    } else if (name.rfind(".fullchain.pem.certfleet-", 0) == 0) {
      EXPECT_EQ(mode & ~0644U, 0U) << name << " appeared with mode 0" << std::oct << mode;
    }
  }
  EXPECT_EQ(key_files, 1) << "the key's temporary file was not seen in " << tls_dir_;
}

TEST_F(DeploySftpTest, SecondDeployReplacesTheFirst) {
  CertificateBundle first = makeBundle(env_["HOST1_NAME"]);
  CertificateBundle second = makeBundle(env_["HOST1_NAME"]);
  ASSERT_NE(first.fullchain_pem, second.fullchain_pem);

  Status status = deploy(baseSettings(), first, host());
  ASSERT_TRUE(status.ok()) << status.message();
  status = deploy(baseSettings(), second, host());

  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(readFile(key_path_), second.key_pem.reveal());
  EXPECT_EQ(readFile(chain_path_), second.fullchain_pem);
  EXPECT_EQ(temporaryFiles(tls_dir_), std::vector<std::string>{});
}

TEST_F(DeploySftpTest, ModesAreExactWhateverTheServersUmask) {
  // sshd's umask (022) would turn 0664 into 0644 if the plugin relied on the create mode.
  auto settings = baseSettings();
  settings["key_mode"] = "0640";
  settings["chain_mode"] = "0664";

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]), host());

  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(fileState(key_path_).mode, 0640U);
  EXPECT_EQ(fileState(chain_path_).mode, 0664U);

  status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]), host());
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(fileState(chain_path_).mode, 0644U);
}

TEST_F(DeploySftpTest, ChangedHostKeyIsRefusedLoudlyAndFilesStayUntouched) {
  FileState key_before = fileState(key_path_);
  FileState chain_before = fileState(chain_path_);
  auto settings = baseSettings();
  settings["known_hosts"] = knownHostsWithChangedKey().string();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]), host());

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("host key changed"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("127.0.0.1:" + env_["HOST1_SSH_PORT"]), std::string::npos)
      << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
  EXPECT_EQ(fileState(chain_path_), chain_before);
  EXPECT_EQ(temporaryFiles(tls_dir_), std::vector<std::string>{});
}

TEST_F(DeploySftpTest, UnknownHostIsRefused) {
  FileState key_before = fileState(key_path_);
  auto settings = baseSettings();
  fs::path empty = scratch_ / "known_hosts.empty";
  writeFile(empty, "");
  settings["known_hosts"] = empty.string();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]), host());

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("unknown host key"), std::string::npos) << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
}

TEST_F(DeploySftpTest, NothingListeningIsUnavailableAndNamesHostAndPort) {
  HostTarget target = host();
  target.port = unusedPort();

  Status status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]), target);

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("127.0.0.1:" + std::to_string(target.port)), std::string::npos)
      << status.message();
}

TEST_F(DeploySftpTest, FailedChainUploadRemovesTheKeysTemporaryFileAndKeepsTheOldPair) {
  // Establish a known pair first, so that "unchanged" means something.
  ASSERT_TRUE(deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]), host()).ok());
  FileState key_before = fileState(key_path_);
  FileState chain_before = fileState(chain_path_);
  auto settings = baseSettings();
  settings["chain_path"] = (tls_dir_ / "no-such-folder" / "fullchain.pem").string();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]), host());

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kNotFound);
  EXPECT_NE(status.message().find("no-such-folder"), std::string::npos) << status.message();
  EXPECT_EQ(status.message().rfind("deploy.sftp: ", 0), 0U) << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
  EXPECT_EQ(fileState(chain_path_), chain_before);
  // The key was uploaded under its temporary name before the chain failed.
  EXPECT_EQ(temporaryFiles(tls_dir_), std::vector<std::string>{});
}

TEST_F(DeploySftpTest, FolderTheUserCannotWriteIsPermissionDenied) {
  auto settings = baseSettings();
  settings["key_path"] = "/etc/certfleet-deploy-sftp-test-key.pem";

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]), host());

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(status.message().find("permission denied"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("/etc/.certfleet-deploy-sftp-test-key.pem.certfleet-"),
            std::string::npos)
      << status.message();
  EXPECT_FALSE(fs::exists("/etc/certfleet-deploy-sftp-test-key.pem"));
}

// Settings are checked without any server: these run even without an environment.
class DeploySftpSettingsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto loaded = PluginLoader::loadFile(fs::path(CERTFLEET_PLUGIN_BUILD_DIR) / "deploy-sftp.so");
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    services_ = std::make_unique<CoreServices>("deploy", "sftp", "", "/nonexistent",
                                               std::chrono::steady_clock::now());
  }

  Status configure(std::map<std::string, std::string> values) {
    values.emplace("known_hosts", "/dev/null");
    values.emplace("identity_file", "/dev/null");
    return plugin_->instance().configure(makeSettings(values), *services_);
  }

  std::unique_ptr<CoreServices> services_;
  std::unique_ptr<LoadedPlugin> plugin_;
};

TEST_F(DeploySftpSettingsTest, AcceptsPathsGivenOnlyPerHost) {
  Status status = configure({});
  EXPECT_TRUE(status.ok()) << status.message();
}

TEST_F(DeploySftpSettingsTest, RefusesAWorldReadableKeyMode) {
  Status status = configure({{"key_mode", "0644"}});
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("key_mode"), std::string::npos) << status.message();
}

TEST_F(DeploySftpSettingsTest, RefusesARelativePathAndABadMode) {
  EXPECT_EQ(configure({{"key_path", "tls/key.pem"}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(configure({{"chain_mode", "rw-r--r--"}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(configure({{"chain_mode", "4755"}}).code(), StatusCode::kInvalidArgument);
}

TEST_F(DeploySftpSettingsTest, RequiresReadableKnownHostsAndIdentity) {
  Status status = configure({{"known_hosts", "/nonexistent/known_hosts"}});
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("/nonexistent/known_hosts"), std::string::npos)
      << status.message();

  // A host may bring its own identity, so only the effective settings must have one.
  Settings without_identity = makeSettings({{"known_hosts", "/dev/null"}});
  ASSERT_TRUE(plugin_->instance().configure(without_identity, *services_).ok());
  HostTarget target{"web1", "127.0.0.1", 22, "deploy", {"web1.example.test"}};
  without_identity.set("key_path", {"/k.pem", "deploy_sftp_test:key_path", false});
  without_identity.set("chain_path", {"/c.pem", "deploy_sftp_test:chain_path", false});
  status = plugin_->instance().checkHost(target, without_identity);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("identity_file"), std::string::npos) << status.message();
}

TEST_F(DeploySftpSettingsTest, CheckHostRequiresBothPaths) {
  ASSERT_TRUE(configure({}).ok());
  HostTarget target{"web1", "127.0.0.1", 22, "deploy", {"web1.example.test"}};
  Settings only_key = makeSettings(
      {{"known_hosts", "/dev/null"}, {"identity_file", "/dev/null"}, {"key_path", "/k.pem"}});
  Status status = plugin_->instance().checkHost(target, only_key);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("chain_path"), std::string::npos) << status.message();
}

}  // namespace
}  // namespace certfleet
