// Contract tests of the dns/rfc2136 plugin against a real BIND9 from tests/env/start-env
// (CERTFLEET_TEST_ENV names its folder), plus the failure paths a fake server can provoke.
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "logging.hpp"
#include "plugin_loader.hpp"
#include "propagation.hpp"
#include "services.hpp"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace certfleet {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// `export NAME='value'` lines as tests/env/start-env writes them.
std::map<std::string, std::string> readEnvFile(const std::string& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("export ", 0) != 0) {
      continue;
    }
    std::size_t equals = line.find('=');
    if (equals == std::string::npos) {
      continue;
    }
    std::string name = line.substr(7, equals - 7);
    std::string value;
    for (std::size_t i = equals + 1; i < line.size(); ++i) {
      if (line[i] == '\'') {
        std::size_t close = line.find('\'', i + 1);
        value += line.substr(i + 1, close - i - 1);
        i = close;
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

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

std::string randomLabel() {
  static std::mt19937_64 generator{std::random_device{}()};
  std::uniform_int_distribution<std::uint64_t> digits;
  std::ostringstream label;
  label << "t" << std::hex << digits(generator);
  return label.str().substr(0, 13);
}

// A value shaped like a DNS-01 digest: 43 base64url characters.
std::string randomValue() {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  static std::mt19937 generator{std::random_device{}()};
  std::uniform_int_distribution<int> pick(0, 63);
  std::string value;
  for (int i = 0; i < 43; ++i) {
    value += kAlphabet[pick(generator)];
  }
  return value;
}

// 32 random bytes in base64, like `openssl rand -base64 32`.
std::string randomSecret() {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  // The last character before '=' carries 2 bits of data and 4 zero bits.
  static const char kLast[] = "AEIMQUYcgkosw048";
  static std::mt19937 generator{std::random_device{}()};
  std::uniform_int_distribution<int> pick(0, 63);
  std::string value;
  for (int i = 0; i < 42; ++i) {
    value += kAlphabet[pick(generator)];
  }
  return value + kLast[pick(generator) % 16] + "=";
}

// What dig, not our own code, sees at `name`: each TXT record's strings joined.
std::vector<std::string> digTxt(const std::string& server, const std::string& name) {
  std::size_t colon = server.rfind(':');
  std::string command = "dig @" + server.substr(0, colon) + " -p " + server.substr(colon + 1) +
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
    std::string joined;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') {
        quoted = !quoted;
      } else if (quoted) {
        joined += c;
      }
    }
    if (line.find('"') == std::string::npos) {
      ADD_FAILURE() << "unexpected dig output: " << line;
      continue;
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

Settings::Entry plain(std::string value, std::string location = "pipelines/test.yaml:9:7") {
  return Settings::Entry{std::move(value), std::move(location), false};
}

Settings::Entry fromSecretSource(std::string value) {
  return Settings::Entry{std::move(value), "pipelines/test.yaml:12:18", true};
}

std::unique_ptr<LoadedPlugin> loadPlugin() {
  auto loaded = PluginLoader::loadFile(CERTFLEET_RFC2136_PLUGIN);
  EXPECT_TRUE(loaded.ok()) << loaded.status().message();
  if (!loaded.ok()) {
    return nullptr;
  }
  EXPECT_EQ((*loaded)->name(), "rfc2136");
  EXPECT_EQ((*loaded)->stage(), Stage::kDns);
  return std::move(*loaded);
}

// ---------------------------------------------------------------------------------------
// Against the local BIND.

class Rfc2136Test : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("CERTFLEET_TEST_ENV");
    if (dir == nullptr) {
      GTEST_SKIP() << "CERTFLEET_TEST_ENV is not set: run tests/env/start-env DIR and export "
                      "CERTFLEET_TEST_ENV=DIR";
    }
    env_ = readEnvFile(std::string(dir) + "/env.sh");
    for (const char* name :
         {"DNS_SERVER", "DNS_ZONE", "TSIG_NAME", "TSIG_ALGORITHM", "TSIG_SECRET_FILE"}) {
      ASSERT_FALSE(env_[name].empty()) << name << " missing from " << dir << "/env.sh";
    }
    // Raw file content, trailing newline included, as ${file:...} hands it over.
    secret_ = readFile(env_["TSIG_SECRET_FILE"]);
    ASSERT_FALSE(secret_.empty());

    auto server = parseNameserver(env_["DNS_SERVER"]);
    ASSERT_TRUE(server.ok()) << server.status().message();
    primary_ = *server;

    plugin_ = loadPlugin();
    ASSERT_TRUE(plugin_);
    services_ = std::make_unique<CoreServices>("dns", "rfc2136", "", ::testing::TempDir(),
                                               Clock::now() + std::chrono::minutes(5));
    // Each test works below a name of its own, so reruns against one environment and
    // records left by an aborted run cannot make a test pass or fail.
    base_ = randomLabel() + "." + env_["DNS_ZONE"];
  }

  Settings settings(const std::map<std::string, std::string>& extra = {}) const {
    Settings result("dns.rfc2136", "pipelines/test.yaml:8:5");
    result.set("server", plain(env_.at("DNS_SERVER")));
    result.set("tsig_name", plain(env_.at("TSIG_NAME")));
    result.set("tsig_algorithm", plain(env_.at("TSIG_ALGORITHM")));
    result.set("tsig_secret", fromSecretSource(secret_));
    for (const auto& [key, value] : extra) {
      result.set(key, key == "tsig_secret" ? fromSecretSource(value) : plain(value));
    }
    return result;
  }

  DnsPlugin& configured(const Settings& plugin_settings) {
    Status status = plugin_->instance().configure(plugin_settings, *services_);
    EXPECT_TRUE(status.ok()) << status.message();
    return *plugin_->as<DnsPlugin>();
  }

  DnsPlugin& configured() { return configured(settings()); }

  void expectVisible(const std::vector<TxtRecord>& records) {
    PropagationChecker checker({primary_});
    Status seen = checker.waitForRecords(records, Clock::now() + seconds(10));
    EXPECT_TRUE(seen.ok()) << seen.message();
  }

  std::map<std::string, std::string> env_;
  std::string secret_;
  Nameserver primary_;
  std::unique_ptr<LoadedPlugin> plugin_;
  std::unique_ptr<CoreServices> services_;
  std::string base_;
};

TEST_F(Rfc2136Test, PresentAddsValuesWithoutReplacingOthersOnTheName) {
  DnsPlugin& dns = configured();
  std::string name = "_acme-challenge." + base_;
  TxtRecord first{name, randomValue()};
  TxtRecord second{name, randomValue()};

  // Two calls: a second value must join the first, not replace it.
  ASSERT_TRUE(dns.present({first}).ok());
  Status added = dns.present({second});
  ASSERT_TRUE(added.ok()) << added.message();

  expectVisible({first, second});
  EXPECT_EQ(digTxt(env_["DNS_SERVER"], name), sorted({first.value, second.value}));
  EXPECT_TRUE(dns.cleanup({first, second}).ok());
}

TEST_F(Rfc2136Test, CleanupOfOneValueLeavesTheOther) {
  DnsPlugin& dns = configured();
  std::string name = "_acme-challenge." + base_;
  TxtRecord kept{name, randomValue()};
  TxtRecord removed{name, randomValue()};
  ASSERT_TRUE(dns.present({kept, removed}).ok());
  EXPECT_EQ(digTxt(env_["DNS_SERVER"], name), sorted({kept.value, removed.value}));

  Status cleaned = dns.cleanup({removed});
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();

  EXPECT_EQ(digTxt(env_["DNS_SERVER"], name), std::vector<std::string>{kept.value});
  PropagationChecker checker({primary_});
  auto kept_visible = checker.isVisible(kept);
  auto removed_visible = checker.isVisible(removed);
  ASSERT_TRUE(kept_visible.ok() && removed_visible.ok());
  EXPECT_TRUE(*kept_visible);
  EXPECT_FALSE(*removed_visible);
  EXPECT_TRUE(dns.cleanup({kept}).ok());
}

TEST_F(Rfc2136Test, CleanupOfEveryValueLeavesNone) {
  DnsPlugin& dns = configured();
  std::string name = "_acme-challenge." + base_;
  std::vector<TxtRecord> records = {{name, randomValue()}, {name, randomValue()}};
  ASSERT_TRUE(dns.present(records).ok());
  ASSERT_EQ(digTxt(env_["DNS_SERVER"], name).size(), 2u);

  Status cleaned = dns.cleanup(records);
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();

  EXPECT_TRUE(digTxt(env_["DNS_SERVER"], name).empty());
  PropagationChecker checker({primary_});
  for (const TxtRecord& record : records) {
    auto visible = checker.isVisible(record);
    ASSERT_TRUE(visible.ok()) << visible.status().message();
    EXPECT_FALSE(*visible);
  }
}

TEST_F(Rfc2136Test, CleanupOfAnAbsentValueSucceeds) {
  DnsPlugin& dns = configured();
  Status cleaned = dns.cleanup({{"_acme-challenge." + base_, randomValue()}});
  EXPECT_TRUE(cleaned.ok()) << cleaned.message();
}

TEST_F(Rfc2136Test, FindsTheZoneOfADeepNameWithoutTheZoneSetting) {
  DnsPlugin& dns = configured();  // no `zone`: found with SOA queries
  std::string name = "_acme-challenge.a.b.c." + base_;
  TxtRecord record{name, randomValue()};

  Status added = dns.present({record});
  ASSERT_TRUE(added.ok()) << added.message();
  expectVisible({record});
  EXPECT_EQ(digTxt(env_["DNS_SERVER"], name), std::vector<std::string>{record.value});

  ASSERT_TRUE(dns.cleanup({record}).ok());
  EXPECT_TRUE(digTxt(env_["DNS_SERVER"], name).empty());
}

TEST_F(Rfc2136Test, ANameInNoZoneOfTheServerIsNotFound) {
  DnsPlugin& dns = configured();
  Status added = dns.present({{"_acme-challenge.web1.not-served.invalid", randomValue()}});
  EXPECT_EQ(added.code(), StatusCode::kNotFound) << added.message();
  EXPECT_NE(added.message().find("_acme-challenge.web1.not-served.invalid"), std::string::npos)
      << added.message();
  EXPECT_NE(added.message().find(env_["DNS_SERVER"]), std::string::npos) << added.message();
}

TEST_F(Rfc2136Test, ARecordOutsideTheConfiguredZoneIsRefusedBeforeSending) {
  DnsPlugin& dns = configured(settings({{"zone", env_["DNS_ZONE"]}}));
  Status added = dns.present({{"_acme-challenge.web1.elsewhere.invalid", randomValue()}});
  EXPECT_EQ(added.code(), StatusCode::kInvalidArgument) << added.message();
  EXPECT_NE(added.message().find("not inside zone"), std::string::npos) << added.message();
}

TEST_F(Rfc2136Test, AWrongSecretIsPermissionDeniedAndNeverPrinted) {
  std::string wrong = randomSecret();
  DnsPlugin& dns = configured(settings({{"tsig_secret", wrong}, {"zone", env_["DNS_ZONE"]}}));
  TxtRecord record{"_acme-challenge." + base_, randomValue()};

  // Everything the plugin logs goes to stderr, debug lines included.
  LogLevel previous = logging::level();
  logging::setLevel(LogLevel::kTrace);
  ::testing::internal::CaptureStderr();
  Status added = dns.present({record});
  std::string logged = ::testing::internal::GetCapturedStderr();
  logging::setLevel(previous);

  EXPECT_EQ(added.code(), StatusCode::kPermissionDenied) << added.message();
  EXPECT_NE(added.message().find(env_["TSIG_NAME"]), std::string::npos) << added.message();
  EXPECT_NE(added.message().find("BADSIG"), std::string::npos) << added.message();
  EXPECT_FALSE(logged.empty());
  std::string good = secret_.substr(0, secret_.find_first_of("\r\n"));
  for (const std::string& secret : std::vector<std::string>{wrong, good}) {
    EXPECT_EQ(added.message().find(secret), std::string::npos) << added.message();
    EXPECT_EQ(logged.find(secret), std::string::npos) << logged;
  }
  EXPECT_TRUE(digTxt(env_["DNS_SERVER"], record.fqdn).empty());
}

TEST_F(Rfc2136Test, AnUnknownKeyNameIsPermissionDeniedNamingTheKey) {
  DnsPlugin& dns = configured(settings({{"tsig_name", "no-such-key"}, {"zone", env_["DNS_ZONE"]}}));
  Status added = dns.present({{"_acme-challenge." + base_, randomValue()}});
  EXPECT_EQ(added.code(), StatusCode::kPermissionDenied) << added.message();
  EXPECT_NE(added.message().find("no-such-key"), std::string::npos) << added.message();
  EXPECT_NE(added.message().find("BADKEY"), std::string::npos) << added.message();
}

TEST_F(Rfc2136Test, AZoneTheServerDoesNotServeIsNamedInTheError) {
  DnsPlugin& dns = configured(settings({{"zone", "not-served.invalid"}}));
  Status added = dns.present({{"_acme-challenge.web1.not-served.invalid", randomValue()}});
  EXPECT_EQ(added.code(), StatusCode::kInvalidArgument) << added.message();
  EXPECT_NE(added.message().find("not-served.invalid"), std::string::npos) << added.message();
}

std::vector<TxtRecord> manyRecords(const std::string& base, std::size_t count, std::size_t pad) {
  std::vector<TxtRecord> records;
  for (std::size_t i = 0; i < count; ++i) {
    // `pad` long labels, each distinct so that name compression cannot shrink them, make
    // the records big enough to need several messages.
    std::string index = std::to_string(i);
    std::string name = "_acme-challenge.h" + index;
    for (std::size_t p = 0; p < pad; ++p) {
      name += '.';
      name.append(60 - index.size(), static_cast<char>('a' + p));
      name += index;
    }
    name += '.';
    name += base;
    records.push_back({name, randomValue()});
  }
  return records;
}

void expectCleanedUp(const std::string& server, const std::vector<TxtRecord>& records) {
  PropagationChecker checker({*parseNameserver(server)});
  std::size_t still_there = 0;
  for (const TxtRecord& record : records) {
    auto visible = checker.isVisible(record);
    ASSERT_TRUE(visible.ok()) << visible.status().message();
    still_there += *visible ? 1 : 0;
  }
  EXPECT_EQ(still_there, 0u);
  EXPECT_TRUE(digTxt(server, records.front().fqdn).empty());
  EXPECT_TRUE(digTxt(server, records.back().fqdn).empty());
}

TEST_F(Rfc2136Test, ABatchOf300RecordsIsPresentedAndCleanedUp) {
  DnsPlugin& dns = configured();
  std::vector<TxtRecord> records = manyRecords(base_, 300, 0);

  Status added = dns.present(records);
  ASSERT_TRUE(added.ok()) << added.message();
  expectVisible(records);
  EXPECT_EQ(digTxt(env_["DNS_SERVER"], records[150].fqdn),
            std::vector<std::string>{records[150].value});

  Status cleaned = dns.cleanup(records);
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  expectCleanedUp(env_["DNS_SERVER"], records);
}

TEST_F(Rfc2136Test, ABatchLargerThanOneMessageIsSplit) {
  DnsPlugin& dns = configured(settings({{"zone", env_["DNS_ZONE"]}}));
  // About 300 bytes per record: 300 records need more than one 64 KiB message.
  std::vector<TxtRecord> records = manyRecords(base_, 300, 3);
  ASSERT_GT(records.size() * (records.front().fqdn.size() + records.front().value.size()), 65535u);

  ::testing::internal::CaptureStderr();
  Status added = dns.present(records);
  std::string logged = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(added.ok()) << added.message();
  EXPECT_NE(logged.find("in 2 updates"), std::string::npos) << logged;
  expectVisible(records);

  Status cleaned = dns.cleanup(records);
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  expectCleanedUp(env_["DNS_SERVER"], records);
}

// ---------------------------------------------------------------------------------------
// Without a DNS server: settings, and servers that misbehave.

class Rfc2136OfflineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    plugin_ = loadPlugin();
    ASSERT_TRUE(plugin_);
    services_ = std::make_unique<CoreServices>("dns", "rfc2136", "", ::testing::TempDir(),
                                               Clock::now() + std::chrono::minutes(5));
  }

  static Settings settings(const std::string& server) {
    Settings result("dns.rfc2136", "pipelines/test.yaml:8:5");
    result.set("server", plain(server, "pipelines/test.yaml:9:13"));
    result.set("zone", plain("example.test"));
    result.set("tsig_name", plain("certfleet-key"));
    result.set("tsig_secret", fromSecretSource(kSecret));
    return result;
  }

  Status configure(const Settings& plugin_settings) {
    return plugin_->instance().configure(plugin_settings, *services_);
  }

  static constexpr const char* kSecret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=\n";

  std::unique_ptr<LoadedPlugin> plugin_;
  std::unique_ptr<CoreServices> services_;
};

TEST_F(Rfc2136OfflineTest, AcceptsCompleteSettings) {
  Settings valid = settings("127.0.0.1:5300");
  valid.set("tsig_algorithm", plain("hmac-sha512"));
  valid.set("ttl", plain("120"));
  valid.set("timeout", plain("3s"));
  Status status = configure(valid);
  EXPECT_TRUE(status.ok()) << status.message();
  EXPECT_TRUE(configure(settings("::1")).ok());
  EXPECT_TRUE(configure(settings("[::1]:5300")).ok());
  EXPECT_TRUE(configure(settings("127.0.0.1")).ok());
}

TEST_F(Rfc2136OfflineTest, RefusesAnInlineSecretWithItsLocation) {
  Settings inline_secret = settings("127.0.0.1:5300");
  inline_secret.set("tsig_secret", plain("c2VjcmV0", "pipelines/test.yaml:14:18"));
  Status status = configure(inline_secret);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message().rfind("pipelines/test.yaml:14:18: dns.rfc2136: ", 0), 0u)
      << status.message();
  EXPECT_NE(status.message().find("${env:NAME} or ${file:PATH}"), std::string::npos)
      << status.message();
}

TEST_F(Rfc2136OfflineTest, RefusesBadSettingsAtTheirLocation) {
  struct Case {
    std::string key;
    std::string value;
    std::string expected;
  };
  for (const Case& bad : std::vector<Case>{
           {"server", "dns.example.test:53", "IPv4 or IPv6 address"},
           {"server", "127.0.0.1:99999", "IPv4 or IPv6 address"},
           {"tsig_algorithm", "hmac-md5", "unsupported tsig_algorithm 'hmac-md5'"},
           {"tsig_algorithm", "hmac-sha1", "unsupported tsig_algorithm 'hmac-sha1'"},
           {"ttl", "-1", "'ttl' must be between"},
           {"timeout", "soon", "'timeout' must be a duration"},
           {"timeout", "0s", "'timeout' must be longer than zero"},
           {"zone", "bad..zone", "not a valid dns name"},
           {"tsig_nmae", "certfleet-key", "unknown setting 'tsig_nmae'"},
       }) {
    Settings with_error = settings("127.0.0.1:5300");
    with_error.set(bad.key, plain(bad.value, "pipelines/test.yaml:20:3"));
    Status status = configure(with_error);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << bad.key << ": " << bad.value;
    EXPECT_EQ(status.message().rfind("pipelines/test.yaml:20:3: dns.rfc2136: ", 0), 0u)
        << status.message();
    EXPECT_NE(status.message().find(bad.expected), std::string::npos) << status.message();
  }
}

TEST_F(Rfc2136OfflineTest, RefusesASecretThatIsNotBase64WithoutPrintingIt) {
  // The second has stray bits after its last byte, which ldns would refuse at signing time.
  for (const std::string secret : {"not base64: s3cr3t-value!", "s3cr3tValu1="}) {
    Settings bad = settings("127.0.0.1:5300");
    bad.set("tsig_secret", fromSecretSource(secret));
    Status status = configure(bad);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << secret;
    EXPECT_NE(status.message().find("not base64"), std::string::npos) << status.message();
    EXPECT_EQ(status.message().find("s3cr3t"), std::string::npos) << status.message();
  }
}

TEST_F(Rfc2136OfflineTest, RequiresServerKeyAndSecret) {
  for (const char* key : {"server", "tsig_name", "tsig_secret"}) {
    Settings complete = settings("127.0.0.1:5300");
    Settings missing("dns.rfc2136", "pipelines/test.yaml:8:5");
    for (const auto& [name, entry] : complete.entries()) {
      if (name != key) {
        missing.set(name, entry);
      }
    }
    Status status = configure(missing);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << key;
    EXPECT_EQ(status.message().rfind("pipelines/test.yaml:8:5: dns.rfc2136: ", 0), 0u)
        << status.message();
    EXPECT_NE(status.message().find(key), std::string::npos) << status.message();
  }
}

// A loopback TCP listener that runs `serve` on its first connection.
class FakeServer {
 public:
  template <typename Serve>
  explicit FakeServer(Serve serve) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), length), 0);
    EXPECT_EQ(::listen(fd_, 4), 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, serve] {
      int client = ::accept(fd_, nullptr, nullptr);
      if (client >= 0) {
        serve(client);
        ::close(client);
      }
    });
  }
  ~FakeServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

std::vector<std::uint8_t> readMessage(int fd) {
  std::uint8_t length[2];
  if (::recv(fd, length, 2, MSG_WAITALL) != 2) {
    return {};
  }
  std::vector<std::uint8_t> message(static_cast<std::size_t>(length[0]) << 8 | length[1]);
  if (::recv(fd, message.data(), message.size(), MSG_WAITALL) !=
      static_cast<ssize_t>(message.size())) {
    return {};
  }
  return message;
}

TEST_F(Rfc2136OfflineTest, AReplyWithoutAValidSignatureIsAnError) {
  // Answers NOERROR with the request's id but no TSIG: what a spoofed reply looks like.
  FakeServer server([](int client) {
    std::vector<std::uint8_t> request = readMessage(client);
    if (request.size() < 12) {
      return;
    }
    std::uint8_t reply[14] = {0, 12, request[0], request[1], 0x80 | (5 << 3), 0};
    ::send(client, reply, sizeof(reply), MSG_NOSIGNAL);
    std::uint8_t rest[1];
    ::recv(client, rest, 1, 0);
  });
  ASSERT_TRUE(configure(settings(server.address())).ok());
  Status added = plugin_->as<DnsPlugin>()->present({{"_acme-challenge.web1.example.test", "v"}});
  EXPECT_EQ(added.code(), StatusCode::kInternal) << added.message();
  EXPECT_NE(added.message().find("no valid signature"), std::string::npos) << added.message();
}

TEST_F(Rfc2136OfflineTest, AServerThatDoesNotAnswerIsUnavailableAfterTheTimeout) {
  std::atomic<bool> done{false};
  FakeServer server([&](int client) {
    readMessage(client);
    while (!done) {
      std::this_thread::sleep_for(milliseconds(10));
    }
  });
  Settings quick = settings(server.address());
  quick.set("timeout", plain("300ms"));
  ASSERT_TRUE(configure(quick).ok());

  Clock::time_point start = Clock::now();
  Status added = plugin_->as<DnsPlugin>()->present({{"_acme-challenge.web1.example.test", "v"}});
  auto took = Clock::now() - start;
  done = true;
  EXPECT_EQ(added.code(), StatusCode::kUnavailable) << added.message();
  EXPECT_NE(added.message().find(server.address()), std::string::npos) << added.message();
  EXPECT_NE(added.message().find("within 300ms"), std::string::npos) << added.message();
  EXPECT_LT(took, seconds(3));
}

TEST_F(Rfc2136OfflineTest, AClosedPortIsUnavailableNamingTheServer) {
  // A port that was just free: nothing listens there.
  std::string address;
  {
    FakeServer probe([](int) {});
    address = probe.address();
  }
  ASSERT_TRUE(configure(settings(address)).ok());
  Status added = plugin_->as<DnsPlugin>()->present({{"_acme-challenge.web1.example.test", "v"}});
  EXPECT_EQ(added.code(), StatusCode::kUnavailable) << added.message();
  EXPECT_NE(added.message().find("cannot reach " + address), std::string::npos) << added.message();
}

}  // namespace
}  // namespace certfleet
