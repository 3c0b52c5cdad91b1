// Contract tests of the deploy plugins against a real OpenSSH sshd from tests/env. Every
// case runs for each plugin (deploy/sftp and deploy/rsync), since both promise the same
// thing; a few cases at the end cover what only rsync does (the key it stages locally).
// The host's folders are on this machine, so the tests check the result on disk directly,
// in a folder of their own under the host's directory that they prepare as root.
// They skip unless CERTFLEET_TEST_ENV names a started environment (tests/env/start-env).
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "local_env.hpp"
#include "plugin_loader.hpp"
#include "services.hpp"
#include "test_pki.hpp"
#include <sys/inotify.h>
#include <sys/stat.h>

namespace certfleet {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const std::vector<std::string> kPlugins{"sftp", "rsync"};

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

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

// What a reader of the host's file would see, and which file it is.
struct FileState {
  std::string contents;
  ino_t inode = 0;
  mode_t mode = 0;
  uid_t owner = 0;
  gid_t group = 0;

  bool operator==(const FileState& other) const {
    return contents == other.contents && inode == other.inode && mode == other.mode &&
           owner == other.owner && group == other.group;
  }
};

std::ostream& operator<<(std::ostream& out, const FileState& state) {
  return out << "{inode " << state.inode << ", mode 0" << std::oct << state.mode << std::dec
             << ", owner " << state.owner << ":" << state.group << ", " << state.contents.size()
             << " bytes}";
}

FileState fileState(const fs::path& path) {
  FileState state;
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) {
    ADD_FAILURE() << "cannot stat " << path;
    return state;
  }
  state.contents = readFile(path);
  state.inode = info.st_ino;
  state.mode = info.st_mode & 07777;
  state.owner = info.st_uid;
  state.group = info.st_gid;
  return state;
}

// Every name in `folder`, hidden ones included: anything beyond the expected files is a
// temporary file or folder left behind.
std::set<std::string> entries(const fs::path& folder) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

// Every path under `folder`, recursively, relative to it.
std::vector<std::string> treeOf(const fs::path& folder) {
  std::vector<std::string> paths;
  std::error_code error;
  for (const auto& entry : fs::recursive_directory_iterator(folder, error)) {
    paths.push_back(fs::relative(entry.path(), folder).string());
  }
  return paths;
}

const std::set<std::string> kPair{"fullchain.pem", "key.pem"};
const std::set<std::string> kPairWithPrevious{"fullchain.pem", "fullchain.pem.previous", "key.pem",
                                              "key.pem.previous"};

Settings makeSettings(const std::string& plugin, const std::map<std::string, std::string>& values) {
  Settings settings("deploy." + plugin, "deploy_test");
  for (const auto& [key, value] : values) {
    settings.set(key, {value, "deploy_test:" + key, false});
  }
  return settings;
}

CertificateBundle makeBundle(const std::string& name) {
  testing::SelfSigned pair = testing::makeSelfSigned(name, 2);
  return {Secret(pair.key_pem), pair.cert_pem, pair.cert_pem};
}

fs::path pluginFile(const std::string& plugin) {
  return fs::path(CERTFLEET_PLUGIN_BUILD_DIR) / ("deploy-" + plugin + ".so");
}

std::string testName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

class DeployTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const char* env_dir = std::getenv("CERTFLEET_TEST_ENV");
    if (env_dir == nullptr) {
      GTEST_SKIP() << "CERTFLEET_TEST_ENV is not set (tests/env/start-env DIR, then export it)";
    }
    if (::geteuid() != 0) {
      GTEST_SKIP() << "needs root, to prepare a folder owned by the host's deploy user";
    }
    env_ = testing::readEnvFile(fs::path(env_dir) / "env.sh");
    ASSERT_FALSE(env_["HOST1_DIR"].empty()) << "no HOST1_DIR in " << env_dir << "/env.sh";
    passwd* user = ::getpwnam(env_["SSH_USER"].c_str());
    ASSERT_NE(user, nullptr) << "no user " << env_["SSH_USER"];
    uid_ = user->pw_uid;
    gid_ = user->pw_gid;

    // A folder of this test's own, owned by the deploy user as the host's TLS folder is,
    // holding the pair the host has before the deploy.
    std::string pattern = env_["HOST1_DIR"] + "/deploy-test-" + GetParam() + "-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << pattern;
    folder_ = pattern;
    ASSERT_EQ(::chown(folder_.c_str(), uid_, gid_), 0);
    ASSERT_EQ(::chmod(folder_.c_str(), 0755), 0);
    key_path_ = folder_ / "key.pem";
    chain_path_ = folder_ / "fullchain.pem";
    old_ = makeBundle(env_["HOST1_NAME"]);
    placeAsHostUser(key_path_, old_.key_pem.reveal(), 0600);
    placeAsHostUser(chain_path_, old_.fullchain_pem, 0644);

    char scratch[] = "/tmp/certfleet-deploy-test-XXXXXX";
    ASSERT_NE(::mkdtemp(scratch), nullptr);
    scratch_ = scratch;
    state_dir_ = scratch_ / "state";

    auto loaded = PluginLoader::loadFile(pluginFile(GetParam()));
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    ASSERT_NE(plugin_->as<DeployPlugin>(), nullptr);
    services_ = std::make_unique<CoreServices>("deploy", GetParam(), "", state_dir_,
                                               Clock::now() + std::chrono::minutes(2));
  }

  void TearDown() override {
    std::error_code ignored;
    if (!folder_.empty()) {
      fs::remove_all(folder_, ignored);
    }
    if (!scratch_.empty()) {
      fs::remove_all(scratch_, ignored);
    }
  }

  void placeAsHostUser(const fs::path& path, const std::string& contents, mode_t mode) {
    writeFile(path, contents);
    ASSERT_EQ(::chown(path.c_str(), uid_, gid_), 0) << path;
    ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
  }

  // The stage settings the tests start from: the environment's key, paths in our folder.
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
    Settings settings = makeSettings(GetParam(), values);
    Status configured = plugin_->instance().configure(settings, *services_);
    if (!configured.ok()) {
      return configured;
    }
    return plugin_->as<DeployPlugin>()->deploy(target, settings, bundle);
  }

  Status deploy(const std::map<std::string, std::string>& values, const CertificateBundle& bundle) {
    return deploy(values, bundle, host());
  }

  Result<bool> isInPlace(const std::map<std::string, std::string>& values,
                         const CertificateBundle& bundle,
                         const HostTarget& target) {
    Settings settings = makeSettings(GetParam(), values);
    Status configured = plugin_->instance().configure(settings, *services_);
    if (!configured.ok()) {
      return configured;
    }
    return plugin_->as<DeployPlugin>()->isInPlace(target, settings, bundle);
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

  std::string groupName(gid_t gid) {
    group* entry = ::getgrgid(gid);
    return entry != nullptr ? entry->gr_name : std::to_string(gid);
  }

  std::map<std::string, std::string> env_;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  fs::path folder_;
  fs::path key_path_;
  fs::path chain_path_;
  CertificateBundle old_;
  fs::path scratch_;
  fs::path state_dir_;
  std::unique_ptr<CoreServices> services_;
  std::unique_ptr<LoadedPlugin> plugin_;
};

// ---------------------------------------------------------------------------------------
// Placing the files

TEST_P(DeployTest, ReplacesKeyAndChainWithExactContentsModesAndOwner) {
  FileState key_before = fileState(key_path_);
  FileState chain_before = fileState(chain_path_);
  CertificateBundle bundle = makeBundle(env_["HOST1_NAME"]);

  Status status = deploy(baseSettings(), bundle);

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
  EXPECT_EQ(key.owner, uid_);
  EXPECT_EQ(chain.owner, uid_);
  EXPECT_EQ(entries(folder_), kPairWithPrevious);
}

TEST_P(DeployTest, TemporaryFilesAreNeverMoreReadableThanTheirFinalMode) {
  // Catch each temporary file the moment it appears and look at its mode before the
  // plugin's next request can reach the server.
  int watch = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  ASSERT_GE(watch, 0);
  ASSERT_GE(::inotify_add_watch(watch, folder_.c_str(), IN_CREATE), 0);
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
        // A file renamed away before we look is still counted, with no mode to check.
        struct stat info {};
        if (event->len > 0 && (event->mask & IN_ISDIR) == 0) {
          bool there = ::lstat((folder_ / event->name).c_str(), &info) == 0;
          seen.emplace_back(event->name, there ? info.st_mode & 07777 : 0);
        }
        at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      }
    }
  });

  Status status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]));
  done = true;
  watcher.join();
  ::close(watch);

  ASSERT_TRUE(status.ok()) << status.message();
  int key_files = 0;
  for (const auto& [name, mode] : seen) {
    if (name.rfind(".key.pem.", 0) == 0) {
      key_files += name.rfind(".key.pem.previous", 0) == 0 ? 0 : 1;
      EXPECT_EQ(mode & ~0600U, 0U) << name << " appeared with mode 0" << std::oct << mode;
    } else if (name.rfind(".fullchain.pem.", 0) == 0) {
      EXPECT_EQ(mode & ~0644U, 0U) << name << " appeared with mode 0" << std::oct << mode;
    }
  }
  EXPECT_EQ(key_files, 1) << "the key's temporary file was not seen in " << folder_;
}

TEST_P(DeployTest, SecondDeployReplacesTheFirst) {
  CertificateBundle first = makeBundle(env_["HOST1_NAME"]);
  CertificateBundle second = makeBundle(env_["HOST1_NAME"]);
  ASSERT_NE(first.fullchain_pem, second.fullchain_pem);

  Status status = deploy(baseSettings(), first);
  ASSERT_TRUE(status.ok()) << status.message();
  status = deploy(baseSettings(), second);

  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(readFile(key_path_), second.key_pem.reveal());
  EXPECT_EQ(readFile(chain_path_), second.fullchain_pem);
  EXPECT_EQ(entries(folder_), kPairWithPrevious);
}

TEST_P(DeployTest, ModesAreExactWhateverTheServersUmask) {
  // sshd's umask (022) would turn 0664 into 0644 if the plugin relied on the create mode.
  auto settings = baseSettings();
  settings["key_mode"] = "0640";
  settings["chain_mode"] = "0664";

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(fileState(key_path_).mode, 0640U);
  EXPECT_EQ(fileState(chain_path_).mode, 0664U);

  status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]));
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(fileState(key_path_).mode, 0600U);
  EXPECT_EQ(fileState(chain_path_).mode, 0644U);
}

TEST_P(DeployTest, FolderReachedThroughASymbolicLinkWorks) {
  // As /etc/nginx/tls -> /srv/tls: recent rsync refuses to follow a link in the folder part
  // of a destination, so the plugin must resolve it first.
  fs::path real = folder_ / "real";
  ASSERT_EQ(::mkdir(real.c_str(), 0755), 0);
  ASSERT_EQ(::chown(real.c_str(), uid_, gid_), 0);
  fs::create_directory_symlink(real, folder_ / "link");
  auto settings = baseSettings();
  settings["key_path"] = (folder_ / "link" / "key.pem").string();
  settings["chain_path"] = (folder_ / "link" / "fullchain.pem").string();
  CertificateBundle bundle = makeBundle(env_["HOST1_NAME"]);

  Status status = deploy(settings, bundle);

  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_TRUE(fs::is_symlink(folder_ / "link"));
  EXPECT_EQ(readFile(real / "key.pem"), bundle.key_pem.reveal());
  EXPECT_EQ(readFile(real / "fullchain.pem"), bundle.fullchain_pem);
  EXPECT_EQ(fileState(real / "key.pem").mode, 0600U);
}

// ---------------------------------------------------------------------------------------
// The previous pair on the host

TEST_P(DeployTest, PreviousCopiesHoldTheOldPairWithTheKeyStillPrivate) {
  CertificateBundle second = makeBundle(env_["HOST1_NAME"]);
  CertificateBundle third = makeBundle(env_["HOST1_NAME"]);

  Status status = deploy(baseSettings(), second);

  ASSERT_TRUE(status.ok()) << status.message();
  FileState key_previous = fileState(folder_ / "key.pem.previous");
  FileState chain_previous = fileState(folder_ / "fullchain.pem.previous");
  EXPECT_EQ(key_previous.contents, old_.key_pem.reveal());
  EXPECT_EQ(chain_previous.contents, old_.fullchain_pem);
  EXPECT_EQ(key_previous.mode, 0600U);
  EXPECT_EQ(chain_previous.mode, 0644U);
  EXPECT_EQ(key_previous.owner, uid_);

  status = deploy(baseSettings(), third);

  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(readFile(folder_ / "key.pem.previous"), second.key_pem.reveal());
  EXPECT_EQ(readFile(folder_ / "fullchain.pem.previous"), second.fullchain_pem);
  EXPECT_EQ(fileState(folder_ / "key.pem.previous").mode, 0600U);
  EXPECT_EQ(entries(folder_), kPairWithPrevious);
}

TEST_P(DeployTest, KeepPreviousFalseLeavesNoCopies) {
  auto settings = baseSettings();
  settings["keep_previous"] = "false";

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(entries(folder_), kPair);
}

TEST_P(DeployTest, PreviousThatIsAlreadyTheCurrentFileIsReplacedCleanly) {
  // As after a deploy that failed once the copies were made: `.previous` is another name
  // of the file in place, and rename(2) between two names of one file does nothing.
  ASSERT_EQ(::link(key_path_.c_str(), (folder_ / "key.pem.previous").c_str()), 0);
  ASSERT_EQ(::link(chain_path_.c_str(), (folder_ / "fullchain.pem.previous").c_str()), 0);
  CertificateBundle bundle = makeBundle(env_["HOST1_NAME"]);

  Status status = deploy(baseSettings(), bundle);

  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(entries(folder_), kPairWithPrevious);
  EXPECT_EQ(readFile(folder_ / "key.pem.previous"), old_.key_pem.reveal());
  EXPECT_EQ(readFile(key_path_), bundle.key_pem.reveal());
}

TEST_P(DeployTest, PreviousOfAFileTheUserMayNotLinkIsStillKept) {
  // With protected_hardlinks the kernel refuses to link a file the user neither owns nor
  // may write, as a chain installed by root is.
  if (readFile("/proc/sys/fs/protected_hardlinks").rfind('1', 0) != 0) {
    GTEST_SKIP() << "fs.protected_hardlinks is off: every link would succeed";
  }
  ASSERT_EQ(::chown(chain_path_.c_str(), 0, 0), 0);

  Status status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]));

  ASSERT_TRUE(status.ok()) << status.message();
  FileState previous = fileState(folder_ / "fullchain.pem.previous");
  EXPECT_EQ(previous.contents, old_.fullchain_pem);
  EXPECT_EQ(previous.mode, 0644U);
  EXPECT_EQ(entries(folder_), kPairWithPrevious);
}

// ---------------------------------------------------------------------------------------
// Refusals and failures leave the host as it was

TEST_P(DeployTest, ChangedHostKeyIsRefusedLoudlyAndFilesStayUntouched) {
  FileState key_before = fileState(key_path_);
  FileState chain_before = fileState(chain_path_);
  auto settings = baseSettings();
  settings["known_hosts"] = knownHostsWithChangedKey().string();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(contains(status.message(), "host key changed")) << status.message();
  EXPECT_TRUE(contains(status.message(), "127.0.0.1:" + env_["HOST1_SSH_PORT"]))
      << status.message();
  EXPECT_TRUE(contains(status.message(), "SHA256:")) << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
  EXPECT_EQ(fileState(chain_path_), chain_before);
  EXPECT_EQ(entries(folder_), kPair);
}

TEST_P(DeployTest, UnknownHostIsRefused) {
  FileState key_before = fileState(key_path_);
  auto settings = baseSettings();
  fs::path empty = scratch_ / "known_hosts.empty";
  writeFile(empty, "");
  settings["known_hosts"] = empty.string();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(contains(status.message(), "unknown host key")) << status.message();
  EXPECT_FALSE(contains(status.message(), "host key changed")) << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
  EXPECT_EQ(entries(folder_), kPair);
}

TEST_P(DeployTest, NothingListeningIsUnavailableAndNamesHostAndPort) {
  HostTarget target = host();
  target.port = testing::unusedLoopbackPort();
  ASSERT_NE(target.port, 0);

  Status status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]), target);

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.message();
  EXPECT_TRUE(contains(status.message(), "127.0.0.1:" + std::to_string(target.port)))
      << status.message();
}

TEST_P(DeployTest, MissingChainFolderIsNotFoundAndKeepsTheOldPair) {
  FileState key_before = fileState(key_path_);
  FileState chain_before = fileState(chain_path_);
  auto settings = baseSettings();
  settings["chain_path"] = (folder_ / "no-such-folder" / "fullchain.pem").string();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kNotFound) << status.message();
  EXPECT_TRUE(contains(status.message(), "no-such-folder")) << status.message();
  EXPECT_EQ(status.message().rfind("deploy." + GetParam() + ": ", 0), 0U) << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
  EXPECT_EQ(fileState(chain_path_), chain_before);
  // Neither a temporary file of the key, nor a previous copy, nor the folder itself.
  EXPECT_EQ(entries(folder_), kPair);
}

TEST_P(DeployTest, FolderTheUserCannotWriteIsPermissionDenied) {
  auto settings = baseSettings();
  settings["key_path"] = "/etc/certfleet-deploy-test-key.pem";

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kPermissionDenied) << status.message();
  EXPECT_TRUE(contains(status.message(), "permission denied")) << status.message();
  EXPECT_TRUE(contains(status.message(), "/etc")) << status.message();
  EXPECT_FALSE(fs::exists("/etc/certfleet-deploy-test-key.pem"));
  EXPECT_EQ(entries(folder_), kPair);
}

TEST_P(DeployTest, TargetThatIsAFolderFailsAndLeavesNothingBehind) {
  // The key cannot take the place of a folder: the chain must not change either.
  fs::remove(key_path_);
  ASSERT_EQ(::mkdir(key_path_.c_str(), 0755), 0);
  ASSERT_EQ(::chown(key_path_.c_str(), uid_, gid_), 0);
  writeFile(key_path_ / "keep", "x");
  FileState chain_before = fileState(chain_path_);

  Status status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(contains(status.message(), "key.pem")) << status.message();
  EXPECT_EQ(fileState(chain_path_), chain_before);
  EXPECT_TRUE(fs::is_directory(key_path_));
  EXPECT_EQ(entries(folder_), kPair);
  // Whatever the plugin staged on the orchestrator is gone too.
  EXPECT_EQ(treeOf(state_dir_), std::vector<std::string>{});
}

// ---------------------------------------------------------------------------------------
// isInPlace

TEST_P(DeployTest, IsInPlaceAfterTheDeployAndNotBefore) {
  CertificateBundle bundle = makeBundle(env_["HOST1_NAME"]);

  Result<bool> before = isInPlace(baseSettings(), bundle, host());
  ASSERT_TRUE(before.ok()) << before.status().message();
  EXPECT_FALSE(*before);
  ASSERT_TRUE(deploy(baseSettings(), bundle).ok());

  Result<bool> after = isInPlace(baseSettings(), bundle, host());

  ASSERT_TRUE(after.ok()) << after.status().message();
  EXPECT_TRUE(*after);
}

TEST_P(DeployTest, IsInPlaceIsFalseOnceTheKeyOrTheChainChanges) {
  CertificateBundle bundle = makeBundle(env_["HOST1_NAME"]);
  ASSERT_TRUE(deploy(baseSettings(), bundle).ok());

  // One byte of the key, length unchanged: only a full comparison notices.
  std::string key = bundle.key_pem.reveal();
  key[key.size() / 2] = key[key.size() / 2] == 'A' ? 'B' : 'A';
  placeAsHostUser(key_path_, key, 0600);
  Result<bool> changed_key = isInPlace(baseSettings(), bundle, host());
  ASSERT_TRUE(changed_key.ok()) << changed_key.status().message();
  EXPECT_FALSE(*changed_key);

  placeAsHostUser(key_path_, bundle.key_pem.reveal(), 0600);
  placeAsHostUser(chain_path_, bundle.fullchain_pem + "\n", 0644);
  Result<bool> changed_chain = isInPlace(baseSettings(), bundle, host());
  ASSERT_TRUE(changed_chain.ok()) << changed_chain.status().message();
  EXPECT_FALSE(*changed_chain);

  placeAsHostUser(chain_path_, bundle.fullchain_pem, 0644);
  Result<bool> restored = isInPlace(baseSettings(), bundle, host());
  ASSERT_TRUE(restored.ok()) << restored.status().message();
  EXPECT_TRUE(*restored);
}

TEST_P(DeployTest, IsInPlaceIsFalseWhenAFileIsMissing) {
  CertificateBundle bundle = makeBundle(env_["HOST1_NAME"]);
  ASSERT_TRUE(deploy(baseSettings(), bundle).ok());

  fs::remove(key_path_);
  Result<bool> no_key = isInPlace(baseSettings(), bundle, host());
  ASSERT_TRUE(no_key.ok()) << no_key.status().message();
  EXPECT_FALSE(*no_key);

  placeAsHostUser(key_path_, bundle.key_pem.reveal(), 0600);
  fs::remove(chain_path_);
  Result<bool> no_chain = isInPlace(baseSettings(), bundle, host());
  ASSERT_TRUE(no_chain.ok()) << no_chain.status().message();
  EXPECT_FALSE(*no_chain);
}

TEST_P(DeployTest, IsInPlaceCannotTellWhenTheHostIsUnreachable) {
  HostTarget target = host();
  target.port = testing::unusedLoopbackPort();
  ASSERT_NE(target.port, 0);

  Result<bool> in_place = isInPlace(baseSettings(), makeBundle(env_["HOST1_NAME"]), target);

  ASSERT_FALSE(in_place.ok());
  EXPECT_EQ(in_place.status().code(), StatusCode::kUnavailable) << in_place.status().message();
  EXPECT_TRUE(contains(in_place.status().message(), std::to_string(target.port)))
      << in_place.status().message();
}

// ---------------------------------------------------------------------------------------
// Owner and group

TEST_P(DeployTest, GroupOfTheUsersOwnIsSetByNameAndById) {
  // A setgid folder of a group the user is not in: new files get that group unless the
  // plugin changes it, so the assertions below cannot pass by accident.
  group* other = ::getgrnam("nogroup");
  if (other == nullptr) {
    GTEST_SKIP() << "no group 'nogroup' on this machine";
  }
  ASSERT_EQ(::chown(folder_.c_str(), uid_, other->gr_gid), 0);
  ASSERT_EQ(::chmod(folder_.c_str(), 02755), 0);
  ASSERT_TRUE(deploy(baseSettings(), makeBundle(env_["HOST1_NAME"])).ok());
  ASSERT_EQ(fileState(key_path_).group, other->gr_gid) << "the folder does not set the group";

  auto settings = baseSettings();
  settings["key_owner"] = env_["SSH_USER"];
  settings["key_group"] = groupName(gid_);
  settings["key_mode"] = "0640";
  settings["chain_group"] = std::to_string(gid_);
  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_TRUE(status.ok()) << status.message();
  FileState key = fileState(key_path_);
  FileState chain = fileState(chain_path_);
  EXPECT_EQ(key.owner, uid_);
  EXPECT_EQ(key.group, gid_);
  EXPECT_EQ(key.mode, 0640U);
  EXPECT_EQ(chain.group, gid_);
  EXPECT_EQ(chain.mode, 0644U);
  EXPECT_EQ(entries(folder_), kPairWithPrevious);
}

TEST_P(DeployTest, GroupTheUserIsNotInIsRefusedClearlyAndOldFilesStayUntouched) {
  FileState key_before = fileState(key_path_);
  FileState chain_before = fileState(chain_path_);
  auto settings = baseSettings();
  settings["key_group"] = "root";

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kPermissionDenied) << status.message();
  EXPECT_TRUE(contains(status.message(), "group root")) << status.message();
  EXPECT_TRUE(contains(status.message(), "only to a group it is a member of")) << status.message();
  EXPECT_TRUE(contains(status.message(), env_["SSH_USER"])) << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
  EXPECT_EQ(fileState(chain_path_), chain_before);
  EXPECT_EQ(entries(folder_), kPair);
}

TEST_P(DeployTest, AnotherOwnerIsRefusedClearlyAndOldFilesStayUntouched) {
  FileState key_before = fileState(key_path_);
  auto settings = baseSettings();
  settings["chain_owner"] = "0";

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kPermissionDenied) << status.message();
  EXPECT_TRUE(contains(status.message(), "only root may change a file's owner"))
      << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
  EXPECT_EQ(entries(folder_), kPair);
}

TEST_P(DeployTest, UnknownGroupNameIsAConfigurationError) {
  FileState key_before = fileState(key_path_);
  auto settings = baseSettings();
  settings["key_group"] = "certfleet-no-such-group";

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.message();
  EXPECT_TRUE(contains(status.message(), "no group named certfleet-no-such-group"))
      << status.message();
  EXPECT_EQ(fileState(key_path_), key_before);
  EXPECT_EQ(entries(folder_), kPair);
}

INSTANTIATE_TEST_SUITE_P(Plugins, DeployTest, ::testing::ValuesIn(kPlugins), testName);

// ---------------------------------------------------------------------------------------
// deploy/rsync alone: the key file it stages on the orchestrator

class RsyncDeployTest : public DeployTest {
 protected:
  // A stand-in for rsync that records how it was called and what it was given to send,
  // then behaves as `ending` says (shell commands).
  fs::path fakeRsync(const std::string& ending) {
    fs::path script = scratch_ / "fake-rsync";
    std::string text = R"sh(#!/bin/sh
log=LOG
for arg in "$@"; do echo "arg $arg" >> "$log"; done
for arg in "$@"; do
  if [ -f "$arg" ]; then
    echo "file $arg $(stat -c %a "$arg")" >> "$log"
    d=$(dirname "$arg")
    while [ "$d" != STATE ] && [ "$d" != / ]; do
      echo "folder $d $(stat -c %a "$d")" >> "$log"
      d=$(dirname "$d")
    done
  fi
done
)sh";
    text.replace(text.find("LOG"), 3, (scratch_ / "fake-rsync.log").string());
    text.replace(text.find("STATE"), 5, state_dir_.string());
    writeFile(script, text + ending + "\n");
    ::chmod(script.c_str(), 0755);
    return script;
  }

  std::vector<std::string> logLines(const std::string& kind) {
    std::vector<std::string> lines;
    std::istringstream in(readFile(scratch_ / "fake-rsync.log"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(kind + " ", 0) == 0) {
        lines.push_back(line.substr(kind.size() + 1));
      }
    }
    return lines;
  }
};

TEST_P(RsyncDeployTest, StagedKeyIsPrivateAndInTheStateDirectory) {
  auto settings = baseSettings();
  settings["rsync_path"] = fakeRsync("exit 0").string();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_TRUE(status.ok()) << status.message();
  std::vector<std::string> files = logLines("file");
  ASSERT_EQ(files.size(), 2U) << readFile(scratch_ / "fake-rsync.log");
  for (const std::string& file : files) {
    EXPECT_EQ(file.rfind(state_dir_.string() + "/", 0), 0U) << file;
    bool is_key = contains(file, "/key.pem ");
    EXPECT_EQ(file.substr(file.rfind(' ') + 1), is_key ? "600" : "644") << file;
  }
  std::vector<std::string> folders = logLines("folder");
  ASSERT_FALSE(folders.empty());
  for (const std::string& folder : folders) {
    EXPECT_EQ(folder.substr(folder.rfind(' ') + 1), "700") << folder;
  }
  std::vector<std::string> args = logLines("arg");
  EXPECT_NE(std::find(args.begin(), args.end(), "--delay-updates"), args.end());
  EXPECT_EQ(std::find(args.begin(), args.end(), "--inplace"), args.end());
  EXPECT_EQ(treeOf(state_dir_), std::vector<std::string>{});
}

TEST_P(RsyncDeployTest, StagedKeyIsGoneAfterARealDeploy) {
  Status status = deploy(baseSettings(), makeBundle(env_["HOST1_NAME"]));

  ASSERT_TRUE(status.ok()) << status.message();
  ASSERT_TRUE(fs::is_directory(state_dir_)) << "the plugin staged nothing in " << state_dir_;
  EXPECT_EQ(treeOf(state_dir_), std::vector<std::string>{});
}

TEST_P(RsyncDeployTest, StagedKeyIsGoneAfterRsyncFails) {
  auto settings = baseSettings();
  settings["rsync_path"] =
      fakeRsync("echo 'rsync: [receiver] something broke (5)' >&2; exit 12").string();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(contains(status.message(), "rsync exited 12")) << status.message();
  EXPECT_TRUE(contains(status.message(), "something broke")) << status.message();
  ASSERT_EQ(logLines("file").size(), 2U) << "the fake rsync was not given the staged files";
  EXPECT_EQ(treeOf(state_dir_), std::vector<std::string>{});
}

TEST_P(RsyncDeployTest, RsyncOutlivingTheTimeoutIsKilledAndItsKeyRemoved) {
  auto settings = baseSettings();
  settings["rsync_path"] = fakeRsync("sleep 30").string();
  settings["timeout"] = "2s";
  Clock::time_point start = Clock::now();

  Status status = deploy(settings, makeBundle(env_["HOST1_NAME"]));

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(treeOf(state_dir_), std::vector<std::string>{});
}

INSTANTIATE_TEST_SUITE_P(Rsync, RsyncDeployTest, ::testing::Values("rsync"), testName);

// ---------------------------------------------------------------------------------------
// Settings are checked without any server: these run even without an environment.

class DeploySettingsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto loaded = PluginLoader::loadFile(pluginFile(GetParam()));
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    services_ =
        std::make_unique<CoreServices>("deploy", GetParam(), "", "/nonexistent", Clock::now());
  }

  Status configure(std::map<std::string, std::string> values) {
    values.emplace("known_hosts", "/dev/null");
    values.emplace("identity_file", "/dev/null");
    return plugin_->instance().configure(makeSettings(GetParam(), values), *services_);
  }

  std::unique_ptr<CoreServices> services_;
  std::unique_ptr<LoadedPlugin> plugin_;
};

TEST_P(DeploySettingsTest, AcceptsPathsGivenOnlyPerHost) {
  Status status = configure({});
  EXPECT_TRUE(status.ok()) << status.message();
}

TEST_P(DeploySettingsTest, RefusesAWorldReadableKeyMode) {
  Status status = configure({{"key_mode", "0644"}});
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(status.message(), "key_mode")) << status.message();
}

TEST_P(DeploySettingsTest, RefusesARelativePathAndABadMode) {
  EXPECT_EQ(configure({{"key_path", "tls/key.pem"}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(configure({{"chain_mode", "rw-r--r--"}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(configure({{"chain_mode", "4755"}}).code(), StatusCode::kInvalidArgument);
}

TEST_P(DeploySettingsTest, RefusesOwnerNamesAShellOrRsyncWouldRead) {
  for (const char* bad : {"root;id", "-rf", "a b", "$(id)", "x:y", "4294967295"}) {
    Status status = configure({{"key_group", bad}});
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(contains(status.message(), "key_group")) << status.message();
  }
  EXPECT_TRUE(configure({{"key_owner", "www-data"}, {"key_group", "ssl-cert"}}).ok());
  EXPECT_TRUE(configure({{"chain_owner", "0"}, {"chain_group", "1000"}}).ok());
}

TEST_P(DeploySettingsTest, KeepPreviousIsABoolean) {
  EXPECT_TRUE(configure({{"keep_previous", "false"}}).ok());
  Status status = configure({{"keep_previous", "sometimes"}});
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(status.message(), "keep_previous")) << status.message();
}

TEST_P(DeploySettingsTest, RequiresReadableKnownHostsAndIdentity) {
  Status status = configure({{"known_hosts", "/nonexistent/known_hosts"}});
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(status.message(), "/nonexistent/known_hosts")) << status.message();

  // A host may bring its own identity, so only the effective settings must have one.
  Settings without_identity = makeSettings(GetParam(), {{"known_hosts", "/dev/null"}});
  ASSERT_TRUE(plugin_->instance().configure(without_identity, *services_).ok());
  HostTarget target{"web1", "127.0.0.1", 22, "deploy", {"web1.example.test"}};
  without_identity.set("key_path", {"/k.pem", "deploy_test:key_path", false});
  without_identity.set("chain_path", {"/c.pem", "deploy_test:chain_path", false});
  status = plugin_->instance().checkHost(target, without_identity);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(status.message(), "identity_file")) << status.message();
}

TEST_P(DeploySettingsTest, CheckHostRequiresBothPaths) {
  ASSERT_TRUE(configure({}).ok());
  HostTarget target{"web1", "127.0.0.1", 22, "deploy", {"web1.example.test"}};
  Settings only_key = makeSettings(
      GetParam(),
      {{"known_hosts", "/dev/null"}, {"identity_file", "/dev/null"}, {"key_path", "/k.pem"}});
  Status status = plugin_->instance().checkHost(target, only_key);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(status.message(), "chain_path")) << status.message();
}

INSTANTIATE_TEST_SUITE_P(Plugins, DeploySettingsTest, ::testing::ValuesIn(kPlugins), testName);

class RsyncSettingsTest : public DeploySettingsTest {};

TEST_P(RsyncSettingsTest, RefusesProgramsThatAreNotThere) {
  Status status = configure({{"rsync_path", "rsync"}});
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(status.message(), "rsync_path")) << status.message();

  status = configure({{"ssh_path", "/nonexistent/ssh"}});
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(status.message(), "/nonexistent/ssh")) << status.message();
}

TEST_P(RsyncSettingsTest, RefusesAPathRsyncsRemoteShellCannotCarry) {
  char scratch[] = "/tmp/certfleet-deploy-settings-XXXXXX";
  ASSERT_NE(::mkdtemp(scratch), nullptr);
  fs::path spaced = fs::path(scratch) / "known hosts";
  writeFile(spaced, "");

  Status status = configure({{"known_hosts", spaced.string()}});

  fs::remove_all(scratch);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(contains(status.message(), "white space")) << status.message();
}

INSTANTIATE_TEST_SUITE_P(Rsync, RsyncSettingsTest, ::testing::Values("rsync"), testName);

}  // namespace
}  // namespace certfleet
