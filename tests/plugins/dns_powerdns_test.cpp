// Contract tests of the dns/powerdns plugin against a real PowerDNS Authoritative server
// (Debian's pdns-server with the gsqlite3 backend) that this test starts on 127.0.0.1 in a
// folder of its own, and stops by pid when the tests are done, whatever their outcome.
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "logging.hpp"
#include "plugin_loader.hpp"
#include "services.hpp"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

namespace certfleet {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kPdnsServer = "/usr/sbin/pdns_server";
constexpr const char* kPdnsUtil = "/usr/bin/pdnsutil";
constexpr const char* kSchema = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";

std::string readFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

std::string randomText(std::size_t length, const char* alphabet, std::size_t alphabet_size) {
  static std::mt19937_64 generator{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, alphabet_size - 1);
  std::string text;
  for (std::size_t i = 0; i < length; ++i) {
    text += alphabet[pick(generator)];
  }
  return text;
}

// A value shaped like a DNS-01 digest: 43 base64url characters.
std::string randomValue() {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  return randomText(43, kAlphabet, 64);
}

std::string randomLabel() {
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  return "t" + randomText(11, kAlphabet, 36);
}

// A port the kernel just handed out for both TCP and UDP on 127.0.0.1. Another process may
// take it before the server binds it; the server's start is retried for that.
int freePort(bool udp_too) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    int tcp = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (::bind(tcp, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        ::getsockname(tcp, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ::close(tcp);
      continue;
    }
    bool free = true;
    if (udp_too) {
      int udp = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      free = ::bind(udp, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
      ::close(udp);
    }
    ::close(tcp);
    if (free) {
      return ntohs(address.sin_port);
    }
  }
  return 0;
}

// Runs a command line (test-controlled text only) and returns its exit status.
int run(const std::string& command) {
  return std::system(command.c_str());
}

// ---------------------------------------------------------------------------------------
// One pdns_server for the whole test binary.

class PowerDnsServer : public ::testing::Environment {
 public:
  static PowerDnsServer* instance() { return instance_; }

  void SetUp() override {
    instance_ = this;
    ASSERT_EQ(::access(kPdnsServer, X_OK), 0)
        << kPdnsServer << " is missing: install pdns-server and pdns-backend-sqlite3 "
        << "(scripts/lib/install-deps)";
    std::string pattern = (fs::path(::testing::TempDir()) / "certfleet-pdns-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    api_key_ = "pdns-key-" + randomText(24, "abcdefghijklmnopqrstuvwxyz0123456789", 36);

    fs::path database = dir_ / "pdns.sqlite3";
    ASSERT_EQ(run("sqlite3 '" + database.string() + "' < '" + kSchema + "'"), 0);

    // A port taken between freePort() and the server's bind makes it exit: try again.
    for (int attempt = 0; attempt < 3 && pid_ <= 0; ++attempt) {
      api_port_ = freePort(false);
      dns_port_ = freePort(true);
      ASSERT_GT(api_port_, 0);
      ASSERT_GT(dns_port_, 0);
      writeConfig(database);
      if (attempt == 0) {
        for (const char* zone : {"example.test", "sub.example.test", "other.test"}) {
          ASSERT_EQ(pdnsutil(std::string("create-zone ") + zone + " ns1." + zone), 0) << zone;
        }
      }
      start();
    }
    ASSERT_GT(pid_, 0) << "pdns_server did not come up; its log:\n" << readFile(dir_ / "pdns.log");
    probePatch();
  }

  void TearDown() override {
    stop();
    if (::testing::UnitTest::GetInstance()->Passed()) {
      std::error_code ignored;
      fs::remove_all(dir_, ignored);
    } else {
      std::fprintf(stderr, "pdns_server files kept in %s\n", dir_.c_str());
    }
  }

  std::string apiUrl() const { return "http://127.0.0.1:" + std::to_string(api_port_); }
  int dnsPort() const { return dns_port_; }
  const std::string& apiKey() const { return api_key_; }

  // Why the core's HTTP client cannot send PATCH, which every change through PowerDNS's API
  // needs; empty when it can.
  const std::string& patchRefusal() const { return patch_refusal_; }

  // Changes the zone behind the API's back, as another tool of the operator would.
  int pdnsutil(const std::string& arguments) const {
    return run(std::string(kPdnsUtil) + " --config-dir='" + dir_.string() + "' " + arguments +
               " >>'" + (dir_ / "pdnsutil.log").string() + "' 2>&1");
  }

 private:
  void writeConfig(const fs::path& database) {
    std::ofstream config(dir_ / "pdns.conf");
    config << "launch=gsqlite3\n"
           << "gsqlite3-database=" << database.string() << "\n"
           << "api=yes\n"
           << "api-key=" << api_key_ << "\n"
           << "webserver=yes\n"
           << "webserver-address=127.0.0.1\n"
           << "webserver-port=" << api_port_ << "\n"
           << "webserver-allow-from=127.0.0.0/8\n"
           << "local-address=127.0.0.1\n"
           << "local-port=" << dns_port_
           << "\n"
           // Without this PowerDNS asks the system resolver for its security status.
           << "security-poll-suffix=\n"
           << "daemon=no\n"
           << "guardian=no\n"
           << "socket-dir=" << dir_.string() << "\n"
           << "config-dir=" << dir_.string()
           << "\n"
           // Caches would make dig see a change made with pdnsutil only seconds later.
           << "cache-ttl=0\n"
           << "query-cache-ttl=0\n"
           << "negquery-cache-ttl=0\n"
           << "zone-cache-refresh-interval=0\n"
           << "loglevel=4\n";
  }

  void start() {
    fs::path log = dir_ / "pdns.log";
    pid_t pid = ::fork();
    if (pid == 0) {
      // The server must not outlive a test binary that crashes before TearDown.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      int in = ::open("/dev/null", O_RDONLY);
      if (out < 0 || in < 0) {
        ::_exit(127);
      }
      ::dup2(in, 0);
      ::dup2(out, 1);
      ::dup2(out, 2);
      std::string config_dir = "--config-dir=" + dir_.string();
      ::execl(kPdnsServer, kPdnsServer, config_dir.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    if (pid < 0) {
      return;
    }

    // Ready when the API answers; gone when the process exits first (port taken).
    CoreServices services("dns", "powerdns-test", "", dir_ / "state",
                          Clock::now() + std::chrono::minutes(1));
    Clock::time_point until = Clock::now() + std::chrono::seconds(20);
    while (Clock::now() < until) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        return;
      }
      HttpRequest request;
      request.url = apiUrl() + "/api/v1/servers/localhost";
      request.headers.emplace_back("X-API-Key", api_key_);
      request.timeout = std::chrono::milliseconds(1000);
      Result<HttpResponse> response = services.http(request);
      if (response.ok() && response->status == 200) {
        pid_ = pid;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }

  // An empty PATCH changes nothing on the server and tells whether the core can send one.
  void probePatch() {
    CoreServices services("dns", "powerdns-test", "", dir_ / "state",
                          Clock::now() + std::chrono::minutes(1));
    HttpRequest request;
    request.method = "PATCH";
    request.url = apiUrl() + "/api/v1/servers/localhost/zones/example.test.";
    request.headers.emplace_back("X-API-Key", api_key_);
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = R"({"rrsets": []})";
    Result<HttpResponse> response = services.http(request);
    if (!response.ok()) {
      patch_refusal_ = response.status().message();
    } else if (response->status != 204) {
      patch_refusal_ = "empty PATCH answered with http " + std::to_string(response->status);
    }
  }

  void stop() {
    if (pid_ <= 0) {
      return;
    }
    ::kill(pid_, SIGTERM);
    Clock::time_point until = Clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() >= until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
  }

  static inline PowerDnsServer* instance_ = nullptr;
  fs::path dir_;
  std::string api_key_;
  int api_port_ = 0;
  int dns_port_ = 0;
  pid_t pid_ = -1;
  std::string patch_refusal_;
};

::testing::Environment* const kServer = ::testing::AddGlobalTestEnvironment(new PowerDnsServer);

// What dig, not our own code, sees at `name`: each TXT record's strings joined, sorted.
std::vector<std::string> digTxt(const std::string& name) {
  std::string command = "dig @127.0.0.1 -p " +
                        std::to_string(PowerDnsServer::instance()->dnsPort()) +
                        " +norecurse +time=2 +tries=1 +short TXT " + name + " 2>&1";
  std::vector<std::string> values;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "cannot run " << command;
    return values;
  }
  char buffer[4096];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
    std::string line(buffer);
    if (line.find('"') == std::string::npos) {
      ADD_FAILURE() << "unexpected dig output: " << line;
      continue;
    }
    std::string joined;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') {
        quoted = !quoted;
      } else if (quoted) {
        joined += c;
      }
    }
    values.push_back(joined);
  }
  EXPECT_EQ(::pclose(pipe), 0) << command;
  std::sort(values.begin(), values.end());
  return values;
}

std::vector<std::string> sorted(std::vector<std::string> values) {
  std::sort(values.begin(), values.end());
  return values;
}

class PowerDnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = PowerDnsServer::instance();
    ASSERT_NE(server_, nullptr);
    // TheCoreCanSendPatch fails with the reason; the tests that need PATCH would only repeat it.
    if (!server_->patchRefusal().empty() && needsPatch()) {
      GTEST_SKIP() << "the core cannot send PATCH: " << server_->patchRefusal();
    }
    auto loaded = PluginLoader::loadFile(CERTFLEET_POWERDNS_PLUGIN);
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    ASSERT_EQ(plugin_->name(), "powerdns");
    ASSERT_EQ(plugin_->stage(), Stage::kDns);
    services_ = std::make_unique<CountingServices>(Clock::now() + std::chrono::minutes(5));
    // Each test works below a name of its own, so no test sees another's records.
    label_ = randomLabel();
  }

  // CoreServices that also counts the requests per method, to check the grouping.
  class CountingServices final : public Services {
   public:
    explicit CountingServices(Clock::time_point deadline)
        : core_("dns", "powerdns", "", ::testing::TempDir(), deadline) {}
    void log(LogLevel level, std::string_view message) override { core_.log(level, message); }
    Result<HttpResponse> http(const HttpRequest& request) override {
      ++requests_[request.method];
      return core_.http(request);
    }
    std::string stateDirectory() override { return core_.stateDirectory(); }
    Clock::time_point deadline() override { return core_.deadline(); }
    int count(const std::string& method) const {
      auto found = requests_.find(method);
      return found == requests_.end() ? 0 : found->second;
    }

   private:
    CoreServices core_;
    std::map<std::string, int> requests_;
  };

  Settings settings(const std::map<std::string, std::string>& extra = {}) const {
    Settings result("dns.powerdns", "pipelines/test.yaml:8:5");
    result.set("url", Settings::Entry{server_->apiUrl(), "pipelines/test.yaml:10:12", false});
    result.set("api_key",
               Settings::Entry{server_->apiKey() + "\n", "pipelines/test.yaml:11:16", true});
    for (const auto& [key, value] : extra) {
      result.set(key, Settings::Entry{value, "pipelines/test.yaml:12:7", key == "api_key"});
    }
    return result;
  }

  DnsPlugin& configured(const Settings& plugin_settings) {
    Status status = plugin_->instance().configure(plugin_settings, *services_);
    EXPECT_TRUE(status.ok()) << status.message();
    return *plugin_->as<DnsPlugin>();
  }

  DnsPlugin& configured() { return configured(settings({{"zone", "example.test"}})); }

  // The TXT values of `name` as the API holds them in `zone` (unquoted, sorted), or the
  // marker "<no rrset>" when the zone has no TXT RRset at that name.
  std::vector<std::string> apiTxt(const std::string& zone, const std::string& name) {
    CoreServices services("dns", "powerdns-test", "", ::testing::TempDir(),
                          Clock::now() + std::chrono::minutes(1));
    HttpRequest request;
    request.url = server_->apiUrl() + "/api/v1/servers/localhost/zones/" + zone + ".";
    request.headers.emplace_back("X-API-Key", server_->apiKey());
    Result<HttpResponse> response = services.http(request);
    EXPECT_TRUE(response.ok() && response->status == 200)
        << (response.ok() ? response->body : response.status().message());
    if (!response.ok()) {
      return {};
    }
    Json body = Json::parse(response->body);
    for (const Json& rrset : body["rrsets"]) {
      if (rrset["name"] != name + "." || rrset["type"] != "TXT") {
        continue;
      }
      std::vector<std::string> values;
      for (const Json& record : rrset["records"]) {
        std::string content = record["content"].get<std::string>();
        EXPECT_EQ(content.front(), '"') << content;
        values.push_back(content.substr(1, content.size() - 2));
      }
      return sorted(values);
    }
    return {"<no rrset>"};
  }

  // Tests that only read from the server or fail before writing run without PATCH.
  static bool needsPatch() {
    static const char* const kReadOnly[] = {
        "TheCoreCanSendPatch",
        "ANameInNoZoneOfTheServerIsNotFound",
        "AConfiguredZoneTheServerLacksIsInvalid",
        "AWrongApiKeyIsPermissionDeniedAndNeverPrinted",
        "AnUnreachableServerIsUnavailable",
        "SettingsAreCheckedWithoutTheNetwork",
    };
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    return std::none_of(std::begin(kReadOnly), std::end(kReadOnly),
                        [&](const char* read_only) { return name == read_only; });
  }

  PowerDnsServer* server_ = nullptr;
  std::unique_ptr<LoadedPlugin> plugin_;
  std::unique_ptr<CountingServices> services_;
  std::string label_;
};

TEST_F(PowerDnsTest, TheCoreCanSendPatch) {
  // PowerDNS changes RRsets only through PATCH; a core whose HTTP client refuses it leaves
  // the plugin unable to add or remove anything.
  EXPECT_EQ(server_->patchRefusal(), "")
      << "the core's HTTP client (core/src/http_client.cpp) must send PATCH for dns/powerdns "
         "to change any record";
}

TEST_F(PowerDnsTest, TwoValuesOnOneNameAreBothServed) {
  DnsPlugin& dns = configured();
  std::string name = "_acme-challenge." + label_ + ".example.test";
  TxtRecord first{name, randomValue()};
  TxtRecord second{name, randomValue()};

  // Two calls: PowerDNS replaces whole RRsets, so the second must merge, not overwrite.
  Status added = dns.present({first});
  ASSERT_TRUE(added.ok()) << added.message();
  added = dns.present({second});
  ASSERT_TRUE(added.ok()) << added.message();

  EXPECT_EQ(digTxt(name), sorted({first.value, second.value}));
  EXPECT_EQ(apiTxt("example.test", name), sorted({first.value, second.value}));
  EXPECT_TRUE(dns.cleanup({first, second}).ok());
}

TEST_F(PowerDnsTest, AValueSomeoneElseAddedStays) {
  DnsPlugin& dns = configured();
  std::string name = "_acme-challenge." + label_ + ".example.test";
  ASSERT_EQ(server_->pdnsutil("add-record example.test _acme-challenge." + label_ +
                              " TXT 300 '\"set by hand\"'"),
            0);
  TxtRecord ours{name, randomValue()};

  ASSERT_TRUE(dns.present({ours}).ok());
  EXPECT_EQ(digTxt(name), sorted({ours.value, "set by hand"}));

  Status cleaned = dns.cleanup({ours});
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  EXPECT_EQ(digTxt(name), std::vector<std::string>{"set by hand"});
  EXPECT_EQ(apiTxt("example.test", name), std::vector<std::string>{"set by hand"});
}

TEST_F(PowerDnsTest, CleanupOfOneValueLeavesTheOther) {
  DnsPlugin& dns = configured();
  std::string name = "_acme-challenge." + label_ + ".example.test";
  TxtRecord kept{name, randomValue()};
  TxtRecord removed{name, randomValue()};
  ASSERT_TRUE(dns.present({kept, removed}).ok());
  ASSERT_EQ(digTxt(name), sorted({kept.value, removed.value}));

  Status cleaned = dns.cleanup({removed});
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();

  EXPECT_EQ(digTxt(name), std::vector<std::string>{kept.value});
  EXPECT_EQ(apiTxt("example.test", name), std::vector<std::string>{kept.value});
  EXPECT_TRUE(dns.cleanup({kept}).ok());
}

TEST_F(PowerDnsTest, CleanupOfEveryValueLeavesNoRrset) {
  DnsPlugin& dns = configured();
  std::string name = "_acme-challenge." + label_ + ".example.test";
  std::vector<TxtRecord> records = {{name, randomValue()}, {name, randomValue()}};
  ASSERT_TRUE(dns.present(records).ok());
  ASSERT_EQ(digTxt(name).size(), 2u);

  Status cleaned = dns.cleanup(records);
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();

  EXPECT_TRUE(digTxt(name).empty());
  EXPECT_EQ(apiTxt("example.test", name), std::vector<std::string>{"<no rrset>"});

  // Cleaning up what is gone already is no error and sends no change.
  int patches = services_->count("PATCH");
  Status again = dns.cleanup(records);
  EXPECT_TRUE(again.ok()) << again.message();
  EXPECT_EQ(services_->count("PATCH"), patches);
}

TEST_F(PowerDnsTest, WithoutTheZoneSettingTheLongestMatchingZoneIsUsed) {
  DnsPlugin& dns = configured(settings());
  TxtRecord in_sub{"_acme-challenge." + label_ + ".sub.example.test", randomValue()};
  TxtRecord in_parent{"_acme-challenge." + label_ + ".example.test", randomValue()};
  TxtRecord in_other{"_acme-challenge." + label_ + ".other.test", randomValue()};

  Status added = dns.present({in_sub, in_parent, in_other});
  ASSERT_TRUE(added.ok()) << added.message();

  EXPECT_EQ(apiTxt("sub.example.test", in_sub.fqdn), std::vector<std::string>{in_sub.value});
  EXPECT_EQ(apiTxt("example.test", in_sub.fqdn), std::vector<std::string>{"<no rrset>"});
  EXPECT_EQ(apiTxt("example.test", in_parent.fqdn), std::vector<std::string>{in_parent.value});
  EXPECT_EQ(apiTxt("other.test", in_other.fqdn), std::vector<std::string>{in_other.value});
  EXPECT_EQ(digTxt(in_sub.fqdn), std::vector<std::string>{in_sub.value});
  // One zone list, then one PATCH per zone.
  EXPECT_EQ(services_->count("PATCH"), 3);

  Status cleaned = dns.cleanup({in_sub, in_parent, in_other});
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  EXPECT_TRUE(digTxt(in_sub.fqdn).empty());
  EXPECT_TRUE(digTxt(in_other.fqdn).empty());
}

TEST_F(PowerDnsTest, AFailedPresentTakesBackWhatItAddedToOtherZones) {
  DnsPlugin& dns = configured(settings());
  // PowerDNS refuses a TXT RRset beside a CNAME, so the second zone's PATCH fails after the
  // first zone's went through.
  ASSERT_EQ(server_->pdnsutil("add-record other.test _acme-challenge." + label_ +
                              " CNAME 300 elsewhere.example.test."),
            0);
  TxtRecord first{"_acme-challenge." + label_ + ".example.test", randomValue()};
  TxtRecord refused{"_acme-challenge." + label_ + ".other.test", randomValue()};

  Status added = dns.present({first, refused});
  EXPECT_EQ(added.code(), StatusCode::kInvalidArgument) << added.message();
  EXPECT_NE(added.message().find("zone other.test"), std::string::npos) << added.message();
  EXPECT_EQ(apiTxt("example.test", first.fqdn), std::vector<std::string>{"<no rrset>"});
  EXPECT_TRUE(digTxt(first.fqdn).empty());
}

TEST_F(PowerDnsTest, ANameInNoZoneOfTheServerIsNotFound) {
  DnsPlugin& dns = configured(settings());
  Status added = dns.present({{"_acme-challenge.web1.not-served.invalid", randomValue()}});
  EXPECT_EQ(added.code(), StatusCode::kNotFound) << added.message();
  EXPECT_NE(added.message().find("_acme-challenge.web1.not-served.invalid"), std::string::npos)
      << added.message();
}

TEST_F(PowerDnsTest, AConfiguredZoneTheServerLacksIsInvalid) {
  DnsPlugin& dns = configured(settings({{"zone", "missing.test"}}));
  Status added = dns.present({{"_acme-challenge.web1.missing.test", randomValue()}});
  EXPECT_EQ(added.code(), StatusCode::kInvalidArgument) << added.message();
  EXPECT_NE(added.message().find("zone 'missing.test' not found"), std::string::npos)
      << added.message();
}

TEST_F(PowerDnsTest, AWrongApiKeyIsPermissionDeniedAndNeverPrinted) {
  const std::string wrong = "wrong-key-" + randomLabel();
  DnsPlugin& dns = configured(settings({{"api_key", wrong}, {"zone", "example.test"}}));

  LogLevel previous = logging::level();
  logging::setLevel(LogLevel::kTrace);
  ::testing::internal::CaptureStderr();
  Status added = dns.present({{"_acme-challenge." + label_ + ".example.test", randomValue()}});
  std::string logged = ::testing::internal::GetCapturedStderr();
  logging::setLevel(previous);

  EXPECT_EQ(added.code(), StatusCode::kPermissionDenied) << added.message();
  EXPECT_NE(added.message().find(server_->apiUrl()), std::string::npos) << added.message();
  EXPECT_NE(added.message().find("api key refused"), std::string::npos) << added.message();
  for (const std::string& key : {wrong, server_->apiKey()}) {
    EXPECT_EQ(added.message().find(key), std::string::npos) << added.message();
    EXPECT_EQ(logged.find(key), std::string::npos) << logged;
  }
}

TEST_F(PowerDnsTest, AnUnreachableServerIsUnavailable) {
  int port = freePort(false);
  DnsPlugin& dns = configured(settings({{"url", "http://127.0.0.1:" + std::to_string(port)},
                                        {"zone", "example.test"},
                                        {"timeout", "2s"}}));
  Status added = dns.present({{"_acme-challenge." + label_ + ".example.test", randomValue()}});
  EXPECT_EQ(added.code(), StatusCode::kUnavailable) << added.message();
}

TEST_F(PowerDnsTest, FiftyRecordsOverTwoNamesInOneBatch) {
  DnsPlugin& dns = configured(settings());
  std::string first = "_acme-challenge.a" + label_ + ".example.test";
  std::string second = "_acme-challenge.b" + label_ + ".example.test";
  std::vector<TxtRecord> records;
  std::vector<std::string> first_values;
  std::vector<std::string> second_values;
  for (int i = 0; i < 50; ++i) {
    TxtRecord record{i % 2 == 0 ? first : second, randomValue()};
    (i % 2 == 0 ? first_values : second_values).push_back(record.value);
    records.push_back(record);
  }

  Status added = dns.present(records);
  ASSERT_TRUE(added.ok()) << added.message();
  EXPECT_EQ(services_->count("PATCH"), 1);
  EXPECT_EQ(digTxt(first), sorted(first_values));
  EXPECT_EQ(digTxt(second), sorted(second_values));
  EXPECT_EQ(apiTxt("example.test", first), sorted(first_values));

  // Half of them go; the other half stays on both names.
  std::vector<TxtRecord> half(records.begin(), records.begin() + 26);
  Status cleaned = dns.cleanup(half);
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  EXPECT_EQ(digTxt(first).size(), 12u);
  EXPECT_EQ(digTxt(second).size(), 12u);

  cleaned = dns.cleanup(records);
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  EXPECT_TRUE(digTxt(first).empty());
  EXPECT_TRUE(digTxt(second).empty());
  EXPECT_EQ(services_->count("PATCH"), 3);
}

TEST_F(PowerDnsTest, SettingsAreCheckedWithoutTheNetwork) {
  Settings inline_key("dns.powerdns", "pipelines/test.yaml:8:5");
  inline_key.set("url", Settings::Entry{server_->apiUrl(), "pipelines/test.yaml:10:12", false});
  inline_key.set("api_key", Settings::Entry{"inline", "pipelines/test.yaml:11:16", false});
  Status refused = plugin_->instance().configure(inline_key, *services_);
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("pipelines/test.yaml:11:16: dns.powerdns: secret 'api_key' "
                                   "must come from ${env:NAME} or ${file:PATH}"),
            std::string::npos)
      << refused.message();

  Status url = plugin_->instance().configure(settings({{"url", "127.0.0.1:8081"}}), *services_);
  EXPECT_NE(url.message().find("'url' must be the API's base address"), std::string::npos)
      << url.message();
  Status unknown = plugin_->instance().configure(settings({{"server", "x"}}), *services_);
  EXPECT_NE(unknown.message().find("unknown setting 'server'"), std::string::npos)
      << unknown.message();
  Status ttl = plugin_->instance().configure(settings({{"ttl", "-1"}}), *services_);
  EXPECT_EQ(ttl.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(services_->count("GET") + services_->count("PATCH"), 0);
}

}  // namespace
}  // namespace certfleet
