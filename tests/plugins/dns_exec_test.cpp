// Contract tests of the dns/exec plugin with small shell scripts written by the test: what
// the program receives, what a failure reports, and that a hanging program is killed.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "plugin_loader.hpp"
#include "services.hpp"
#include <sys/stat.h>

namespace certfleet {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

std::string readFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

std::vector<std::string> readLines(const fs::path& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
  }
  return lines;
}

Settings::Entry plain(std::string value) {
  return Settings::Entry{std::move(value), "pipelines/test.yaml:9:7", false};
}

// A pid is gone once it no longer exists or is a zombie waiting for its new parent.
bool processGone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) {
    return true;
  }
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::size_t close = content.rfind(')');
  return close != std::string::npos && close + 2 < content.size() && content[close + 2] == 'Z';
}

class ExecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::path(::testing::TempDir()) / "dns-exec-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;

    auto loaded = PluginLoader::loadFile(CERTFLEET_EXEC_PLUGIN);
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    ASSERT_EQ(plugin_->name(), "exec");
    ASSERT_EQ(plugin_->stage(), Stage::kDns);
    services_ = std::make_unique<CoreServices>("dns", "exec", "", dir_ / "state",
                                               Clock::now() + std::chrono::minutes(5));

    // The store script keeps "FQDN VALUE" lines: present appends one, cleanup removes
    // exactly that line and no other.
    store_ = dir_ / "records.txt";
    writeScript("store.sh", R"(set -eu
action=$1 fqdn=$2 value=$3
case "$action" in
  present) printf '%s %s\n' "$fqdn" "$value" >> ")" +
                                store_.string() + R"(" ;;
  cleanup)
    touch ")" + store_.string() +
                                R"("
    grep -v -x -F "$fqdn $value" ")" +
                                store_.string() + R"(" > ")" + store_.string() +
                                R"(.new" || true
    mv ")" + store_.string() + R"(.new" ")" +
                                store_.string() + R"(" ;;
  *) echo "unknown action $action" >&2; exit 2 ;;
esac
)");
  }

  void TearDown() override {
    plugin_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  fs::path writeScript(const std::string& name, const std::string& body) {
    fs::path path = dir_ / name;
    std::ofstream(path) << "#!/bin/sh\n" << body;
    ::chmod(path.c_str(), 0755);
    return path;
  }

  Status configure(const std::map<std::string, std::string>& values,
                   const std::vector<std::string>& args = {}) {
    Settings settings("dns.exec", "pipelines/test.yaml:8:5");
    for (const auto& [key, value] : values) {
      settings.set(key, plain(value));
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
      settings.set("args." + std::to_string(i), plain(args[i]));
    }
    return plugin_->instance().configure(settings, *services_);
  }

  DnsPlugin& configured(const std::string& script,
                        const std::vector<std::string>& args = {},
                        const std::string& timeout = "") {
    std::map<std::string, std::string> values{{"program", (dir_ / script).string()}};
    if (!timeout.empty()) {
      values["timeout"] = timeout;
    }
    Status status = configure(values, args);
    EXPECT_TRUE(status.ok()) << status.message();
    return *plugin_->as<DnsPlugin>();
  }

  fs::path dir_;
  fs::path store_;
  std::unique_ptr<LoadedPlugin> plugin_;
  std::unique_ptr<CoreServices> services_;
};

TEST_F(ExecTest, PresentAddsEveryValueAndCleanupRemovesExactlyThoseGiven) {
  DnsPlugin& dns = configured("store.sh");
  const std::string name = "_acme-challenge.web1.example.test";
  TxtRecord first{name, "first-value"};
  TxtRecord second{name, "second-value"};
  TxtRecord other{"_acme-challenge.web2.example.test", "other-value"};

  Status added = dns.present({first, second, other});
  ASSERT_TRUE(added.ok()) << added.message();
  EXPECT_EQ(readLines(store_),
            (std::vector<std::string>{name + " first-value", name + " second-value",
                                      other.fqdn + " other-value"}));

  Status cleaned = dns.cleanup({first});
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  EXPECT_EQ(readLines(store_),
            (std::vector<std::string>{name + " second-value", other.fqdn + " other-value"}));

  ASSERT_TRUE(dns.cleanup({second, other}).ok());
  EXPECT_TRUE(readLines(store_).empty());
}

TEST_F(ExecTest, TheProgramGetsArgsFirstThenActionNameValueAndTheEnvironment) {
  fs::path seen = dir_ / "seen.txt";
  writeScript("record.sh", R"(for arg in "$@"; do printf 'arg=%s\n' "$arg"; done > ")" +
                               seen.string() + R"("
printf 'action=%s\nfqdn=%s\nvalue=%s\nmarker=%s\n' "$CERTFLEET_DNS_ACTION" \
  "$CERTFLEET_DNS_FQDN" "$CERTFLEET_DNS_VALUE" "${CERTFLEET_TEST_MARKER-unset}" >> ")" +
                               seen.string() + R"("
input=$(cat)
printf 'stdin=%s\n' "$input" >> ")" +
                               seen.string() + R"("
)");
  ::setenv("CERTFLEET_TEST_MARKER", "passed through", 1);
  // A stale value in the orchestrator's environment must not reach the program.
  ::setenv("CERTFLEET_DNS_VALUE", "stale", 1);
  DnsPlugin& dns = configured("record.sh", {"--zone", "example test"});

  Status added = dns.present({{"_acme-challenge.web1.example.test", "-starts-with-dash"}});
  ::unsetenv("CERTFLEET_TEST_MARKER");
  ::unsetenv("CERTFLEET_DNS_VALUE");
  ASSERT_TRUE(added.ok()) << added.message();
  EXPECT_EQ(readLines(seen), (std::vector<std::string>{
                                 "arg=--zone",
                                 "arg=example test",
                                 "arg=present",
                                 "arg=_acme-challenge.web1.example.test",
                                 "arg=-starts-with-dash",
                                 "action=present",
                                 "fqdn=_acme-challenge.web1.example.test",
                                 "value=-starts-with-dash",
                                 "marker=passed through",
                                 "stdin=",
                             }));
}

TEST_F(ExecTest, AFailingProgramReportsTheNameExitStatusAndStderr) {
  writeScript("fail.sh", R"(echo "progress on stdout"
echo "first line of the complaint" >&2
echo "zone example.test is locked by another change" >&2
exit 3
)");
  DnsPlugin& dns = configured("fail.sh");

  Status added = dns.present({{"_acme-challenge.web1.example.test", "value"}});
  EXPECT_EQ(added.code(), StatusCode::kUnavailable) << added.message();
  const std::string& message = added.message();
  EXPECT_EQ(message.rfind("dns.exec: present _acme-challenge.web1.example.test: ", 0), 0u)
      << message;
  EXPECT_NE(message.find("exited with status 3"), std::string::npos) << message;
  EXPECT_NE(message.find("first line of the complaint | zone example.test is locked by another "
                         "change"),
            std::string::npos)
      << message;
  EXPECT_EQ(message.find("progress on stdout"), std::string::npos) << message;
}

TEST_F(ExecTest, AFailedPresentTakesBackWhatItAddedAndCleanupGoesOnAfterAFailure) {
  // Fails for one value only, after storing nothing for it.
  writeScript("picky.sh", R"(case "$3" in
  bad-*) echo "refusing $3" >&2; exit 4 ;;
esac
exec ")" + (dir_ / "store.sh").string() +
                              R"(" "$@"
)");
  DnsPlugin& dns = configured("picky.sh");
  TxtRecord good{"_acme-challenge.web1.example.test", "good-value"};
  TxtRecord bad{"_acme-challenge.web2.example.test", "bad-value"};

  Status added = dns.present({good, bad});
  EXPECT_EQ(added.code(), StatusCode::kUnavailable) << added.message();
  EXPECT_NE(added.message().find("present _acme-challenge.web2.example.test"), std::string::npos)
      << added.message();
  EXPECT_TRUE(readLines(store_).empty()) << readFile(store_);

  ASSERT_TRUE(dns.present({good}).ok());
  Status cleaned = dns.cleanup({bad, good});
  EXPECT_EQ(cleaned.code(), StatusCode::kUnavailable) << cleaned.message();
  EXPECT_NE(cleaned.message().find("exited with status 4"), std::string::npos) << cleaned.message();
  EXPECT_TRUE(readLines(store_).empty()) << readFile(store_);
}

TEST_F(ExecTest, AHangingProgramIsKilledWithItsChildrenAtTheTimeout) {
  fs::path child_pid = dir_ / "child.pid";
  writeScript("hang.sh", R"(echo "waiting for the provider" >&2
sleep 30 &
echo $! > ")" + child_pid.string() +
                             R"("
wait
)");
  DnsPlugin& dns = configured("hang.sh", {}, "500ms");

  Clock::time_point start = Clock::now();
  Status added = dns.present({{"_acme-challenge.web1.example.test", "value"}});
  auto took = Clock::now() - start;

  EXPECT_EQ(added.code(), StatusCode::kDeadlineExceeded) << added.message();
  EXPECT_NE(added.message().find("killed after its timeout of 500ms"), std::string::npos)
      << added.message();
  EXPECT_NE(added.message().find("waiting for the provider"), std::string::npos) << added.message();
  EXPECT_LT(took, std::chrono::seconds(5));

  // The background `sleep` got the same SIGKILL as the script.
  pid_t pid = static_cast<pid_t>(std::stol(readFile(child_pid)));
  Clock::time_point until = Clock::now() + std::chrono::seconds(5);
  while (!processGone(pid) && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(processGone(pid)) << "pid " << pid;
}

TEST_F(ExecTest, TheRunDeadlineShortensTheTimeout) {
  writeScript("slow.sh", "sleep 30\n");
  services_ = std::make_unique<CoreServices>("dns", "exec", "", dir_ / "state",
                                             Clock::now() + std::chrono::milliseconds(400));
  DnsPlugin& dns = configured("slow.sh");

  Clock::time_point start = Clock::now();
  Status added = dns.present({{"_acme-challenge.web1.example.test", "value"}});
  EXPECT_EQ(added.code(), StatusCode::kDeadlineExceeded) << added.message();
  EXPECT_NE(added.message().find("deadline"), std::string::npos) << added.message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST_F(ExecTest, CapturedOutputIsBounded) {
  // 200 KiB on stderr, then a last line that must survive.
  writeScript("noisy.sh", R"(i=0
while [ $i -lt 3200 ]; do
  echo "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" >&2
  i=$((i + 1))
done
echo "the actual reason" >&2
exit 1
)");
  DnsPlugin& dns = configured("noisy.sh");

  Status added = dns.present({{"_acme-challenge.web1.example.test", "value"}});
  EXPECT_EQ(added.code(), StatusCode::kUnavailable);
  EXPECT_LT(added.message().size(), 1500u);
  EXPECT_NE(added.message().find("the actual reason"), std::string::npos);
  EXPECT_NE(added.message().find("exited with status 1: ..."), std::string::npos);
}

TEST_F(ExecTest, SettingsAreCheckedWithoutRunningAnything) {
  Status relative = configure({{"program", "hooks/dns.sh"}});
  EXPECT_EQ(relative.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(relative.message().find("pipelines/test.yaml:9:7: dns.exec: 'program' must be an "
                                    "absolute path"),
            std::string::npos)
      << relative.message();

  Status missing = configure({{"program", (dir_ / "missing.sh").string()}});
  EXPECT_EQ(missing.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.message().find("is not a file"), std::string::npos) << missing.message();

  fs::path not_executable = dir_ / "plain.txt";
  std::ofstream(not_executable) << "echo\n";
  Status plain_file = configure({{"program", not_executable.string()}});
  EXPECT_NE(plain_file.message().find("is not executable"), std::string::npos)
      << plain_file.message();

  Status scalar_args = configure({{"program", (dir_ / "store.sh").string()}, {"args", "--zone x"}});
  EXPECT_NE(scalar_args.message().find("'args' must be a list"), std::string::npos)
      << scalar_args.message();

  Status unknown = configure({{"program", (dir_ / "store.sh").string()}, {"shell", "yes"}});
  EXPECT_NE(unknown.message().find("unknown setting 'shell'"), std::string::npos)
      << unknown.message();

  Status timeout = configure({{"program", (dir_ / "store.sh").string()}, {"timeout", "soon"}});
  EXPECT_EQ(timeout.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace certfleet
