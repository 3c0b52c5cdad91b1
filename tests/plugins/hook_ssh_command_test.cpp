// Contract tests of the hook/ssh-command plugin against a real OpenSSH sshd from tests/env.
// They skip unless CERTFLEET_TEST_ENV names a started environment (tests/env/start-env).
#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "plugin_loader.hpp"
#include "services.hpp"
#include <netinet/in.h>
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

class HookSshCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env_dir = std::getenv("CERTFLEET_TEST_ENV");
    if (env_dir == nullptr) {
      GTEST_SKIP() << "CERTFLEET_TEST_ENV is not set (tests/env/start-env DIR, then export it)";
    }
    env_ = readEnvFile(fs::path(env_dir) / "env.sh");
    ASSERT_FALSE(env_["HOST1_SSH_PORT"].empty()) << "no HOST1_SSH_PORT in " << env_dir;

    auto loaded =
        PluginLoader::loadFile(fs::path(CERTFLEET_PLUGIN_BUILD_DIR) / "hook-ssh-command.so");
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    ASSERT_NE(plugin_->as<HookPlugin>(), nullptr);
    services_ =
        std::make_unique<CoreServices>("reload", "ssh-command", "", "/nonexistent",
                                       std::chrono::steady_clock::now() + std::chrono::minutes(2));
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

  Status run(const std::string& command,
             const HostTarget& target,
             const std::string& timeout = "20s") {
    Settings settings("reload.ssh-command", "hook_ssh_command_test");
    auto set = [&settings](const std::string& key, const std::string& value) {
      settings.set(key, {value, "hook_ssh_command_test:" + key, false});
    };
    set("known_hosts", env_["SSH_KNOWN_HOSTS"]);
    set("identity_file", env_["SSH_IDENTITY"]);
    set("connect_timeout", "5s");
    set("command", command);
    set("timeout", timeout);
    Status configured = plugin_->instance().configure(settings, *services_);
    if (!configured.ok()) {
      return configured;
    }
    return plugin_->as<HookPlugin>()->run(target, settings, CertificateBundle{});
  }

  std::map<std::string, std::string> env_;
  std::unique_ptr<CoreServices> services_;
  std::unique_ptr<LoadedPlugin> plugin_;
};

TEST_F(HookSshCommandTest, TrueSucceeds) {
  Status status = run("true", host());
  EXPECT_TRUE(status.ok()) << status.message();
}

TEST_F(HookSshCommandTest, NonZeroExitIsAnErrorWithTheCodeAndStderrTail) {
  Status status = run("echo 'nginx: [emerg] cannot load certificate' >&2; exit 3", host());

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message().rfind("reload.ssh-command: command exited 3: ", 0), 0U)
      << status.message();
  EXPECT_NE(status.message().find("nginx: [emerg] cannot load certificate"), std::string::npos)
      << status.message();
}

TEST_F(HookSshCommandTest, RunsOnTheHostAsTheHostUser) {
  fs::path marker =
      fs::path(env_["HOST1_TLS_DIR"]) / ("ssh-command-test-" + std::to_string(::getpid()));
  fs::remove(marker);

  Status status = run("touch '" + marker.string() + "'", host());

  ASSERT_TRUE(status.ok()) << status.message();
  struct stat info {};
  ASSERT_EQ(::stat(marker.c_str(), &info), 0) << marker;
  passwd* user = ::getpwnam(env_["SSH_USER"].c_str());
  ASSERT_NE(user, nullptr);
  EXPECT_EQ(info.st_uid, user->pw_uid);
  fs::remove(marker);
}

TEST_F(HookSshCommandTest, CommandOutlivingItsTimeoutIsStopped) {
  auto started = std::chrono::steady_clock::now();

  Status status = run("sleep 30", host(), "500ms");

  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.message();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
}

TEST_F(HookSshCommandTest, NothingListeningIsUnavailableAndNamesHostAndPort) {
  HostTarget target = host();
  target.port = unusedPort();

  Status status = run("true", target);

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("127.0.0.1:" + std::to_string(target.port)), std::string::npos)
      << status.message();
}

TEST_F(HookSshCommandTest, RefusedIdentityIsPermissionDenied) {
  char scratch[] = "/tmp/certfleet-ssh-command-test-XXXXXX";
  ASSERT_NE(::mkdtemp(scratch), nullptr);
  std::string stranger = std::string(scratch) + "/id_ed25519";
  std::string command = "ssh-keygen -q -N '' -t ed25519 -f " + stranger + " >/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0);
  env_["SSH_IDENTITY"] = stranger;

  Status status = run("true", host());

  EXPECT_EQ(status.code(), StatusCode::kPermissionDenied) << status.message();
  EXPECT_NE(status.message().find(env_["SSH_USER"]), std::string::npos) << status.message();
  fs::remove_all(scratch);
}

// Settings are checked without any server: this runs even without an environment.
TEST(HookSshCommandSettingsTest, CommandMayComeFromTheHostButMustBeThere) {
  auto loaded =
      PluginLoader::loadFile(fs::path(CERTFLEET_PLUGIN_BUILD_DIR) / "hook-ssh-command.so");
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  CoreServices services("reload", "ssh-command", "", "/nonexistent",
                        std::chrono::steady_clock::now());
  Settings stage("reload.ssh-command", "hook_ssh_command_test");
  stage.set("known_hosts", {"/dev/null", "hook_ssh_command_test:known_hosts", false});
  stage.set("identity_file", {"/dev/null", "hook_ssh_command_test:identity_file", false});
  ASSERT_TRUE((*loaded)->instance().configure(stage, services).ok());
  HostTarget target{"web1", "127.0.0.1", 22, "deploy", {"web1.example.test"}};

  Status without = (*loaded)->instance().checkHost(target, stage);

  EXPECT_EQ(without.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(without.message().find("command"), std::string::npos) << without.message();
  Settings host("reload.ssh-command", "hook_ssh_command_test");
  host.set("command", {"true", "hook_ssh_command_test:command", false});
  Status with = (*loaded)->instance().checkHost(target, stage.mergedWith(host));
  EXPECT_TRUE(with.ok()) << with.message();
}

}  // namespace
}  // namespace certfleet
