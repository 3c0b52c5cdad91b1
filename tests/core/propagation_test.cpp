// PropagationChecker: address parsing offline, then polling against the real BIND9 servers of
// tests/env/start-env (CERTFLEET_TEST_ENV names its folder). Records are written with
// nsupdate, so these tests do not lean on any certfleet plugin.
#include "propagation.hpp"

#include <stdio.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace certfleet {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

TEST(ParseNameserver, AcceptsAddressLiteralsWithAndWithoutPort) {
  struct Case {
    std::string text;
    std::string address;
    std::uint16_t port;
  };
  for (const Case& good : std::vector<Case>{{"127.0.0.1", "127.0.0.1", 53},
                                            {"127.0.0.1:5300", "127.0.0.1", 5300},
                                            {"[::1]:5300", "::1", 5300},
                                            {"[::1]", "::1", 53},
                                            {"::1", "::1", 53},
                                            {"2001:db8::53", "2001:db8::53", 53}}) {
    auto parsed = parseNameserver(good.text);
    ASSERT_TRUE(parsed.ok()) << good.text << ": " << parsed.status().message();
    EXPECT_EQ(parsed->address, good.address) << good.text;
    EXPECT_EQ(parsed->port, good.port) << good.text;
  }
}

TEST(ParseNameserver, RefusesNamesAndBadPorts) {
  for (const std::string bad : {"", "ns1.example.test", "ns1.example.test:53",
                                "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:53x",
                                "[::1]:", "[::1", "[127.0.0.1]:53", "300.0.0.1", "[::1]x"}) {
    auto parsed = parseNameserver(bad);
    EXPECT_FALSE(parsed.ok()) << "'" << bad << "' was accepted";
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(parsed.status().message().find("'" + bad + "'"), std::string::npos)
          << parsed.status().message();
    }
  }
}

TEST(PropagationChecker, ANameserverThatDoesNotAnswerFailsByTheDeadline) {
  // A UDP port that was just free: queries there go unanswered.
  int probe = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&address), length), 0);
  ::getsockname(probe, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(probe);
  std::uint16_t port = ntohs(address.sin_port);

  PropagationChecker checker({Nameserver{"127.0.0.1", port}});
  Clock::time_point start = Clock::now();
  Status status = checker.waitForRecords({{"_acme-challenge.web1.example.test", "value"}},
                                         start + milliseconds(500));
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.message();
  EXPECT_NE(status.message().find("127.0.0.1:" + std::to_string(port)), std::string::npos)
      << status.message();
  EXPECT_LT(Clock::now() - start, seconds(3));
}

// ---------------------------------------------------------------------------------------

std::map<std::string, std::string> readEnvFile(const std::string& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("export ", 0) != 0 || line.find('=') == std::string::npos) {
      continue;
    }
    std::size_t equals = line.find('=');
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
    values[line.substr(7, equals - 7)] = value;
  }
  return values;
}

std::string randomLabel() {
  static std::mt19937_64 generator{std::random_device{}()};
  std::ostringstream label;
  label << "p" << std::hex << std::uniform_int_distribution<std::uint64_t>()(generator);
  return label.str().substr(0, 13);
}

class PropagationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("CERTFLEET_TEST_ENV");
    if (dir == nullptr) {
      GTEST_SKIP() << "CERTFLEET_TEST_ENV is not set: run tests/env/start-env DIR and export "
                      "CERTFLEET_TEST_ENV=DIR";
    }
    env_ = readEnvFile(std::string(dir) + "/env.sh");
    for (const char* name : {"DNS_SERVER", "DNS_SECONDARY", "DNS_ZONE", "TSIG_NAME",
                             "TSIG_ALGORITHM", "TSIG_SECRET_FILE"}) {
      ASSERT_FALSE(env_[name].empty()) << name << " missing from " << dir << "/env.sh";
    }
    auto primary = parseNameserver(env_["DNS_SERVER"]);
    auto secondary = parseNameserver(env_["DNS_SECONDARY"]);
    ASSERT_TRUE(primary.ok() && secondary.ok());
    primary_ = *primary;
    secondary_ = *secondary;

    std::ifstream secret_file(env_["TSIG_SECRET_FILE"]);
    std::string secret;
    std::getline(secret_file, secret);
    ASSERT_FALSE(secret.empty());
    key_file_ = ::testing::TempDir() + "/propagation-" + randomLabel() + ".key";
    std::ofstream key(key_file_);
    key << "key \"" << env_["TSIG_NAME"] << "\" {\n  algorithm " << env_["TSIG_ALGORITHM"]
        << ";\n  secret \"" << secret << "\";\n};\n";
    base_ = randomLabel() + "." + env_["DNS_ZONE"];
  }

  void TearDown() override {
    if (!key_file_.empty()) {
      std::remove(key_file_.c_str());
    }
  }

  // Adds (or with `remove`, deletes) TXT records on one server with nsupdate.
  void nsupdate(const Nameserver& server,
                const std::vector<TxtRecord>& records,
                bool remove = false) {
    std::string script_file = key_file_ + ".nsupdate";
    {
      std::ofstream script(script_file);
      script << "server " << server.address << " " << server.port << "\n"
             << "zone " << env_["DNS_ZONE"] << "\n";
      for (const TxtRecord& record : records) {
        script << "update " << (remove ? "delete " : "add ") << record.fqdn
               << (remove ? " TXT \"" : " 60 TXT \"") << record.value << "\"\n";
      }
      script << "send\n";
    }
    std::string command = "nsupdate -t 5 -k " + key_file_ + " " + script_file + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buffer[512];
    while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
      output += buffer;
    }
    EXPECT_EQ(::pclose(pipe), 0) << output;
    std::remove(script_file.c_str());
  }

  std::map<std::string, std::string> env_;
  Nameserver primary_;
  Nameserver secondary_;
  std::string key_file_;
  std::string base_;
};

TEST_F(PropagationTest, SeesAValueTheServerServes) {
  TxtRecord record{"_acme-challenge." + base_, "value-" + randomLabel()};
  PropagationChecker checker({primary_});
  auto before = checker.isVisible(record);
  ASSERT_TRUE(before.ok()) << before.status().message();
  EXPECT_FALSE(*before);

  nsupdate(primary_, {record});

  auto after = checker.isVisible(record);
  ASSERT_TRUE(after.ok()) << after.status().message();
  EXPECT_TRUE(*after);
  Status waited = checker.waitForRecords({record}, Clock::now() + seconds(5));
  EXPECT_TRUE(waited.ok()) << waited.message();
  nsupdate(primary_, {record}, true);
}

TEST_F(PropagationTest, AnotherValueOnTheSameNameDoesNotCount) {
  std::string name = "_acme-challenge." + base_;
  nsupdate(primary_, {{name, "present-" + randomLabel()}});

  PropagationChecker checker({primary_});
  auto visible = checker.isVisible({name, "expected-" + randomLabel()});
  ASSERT_TRUE(visible.ok()) << visible.status().message();
  EXPECT_FALSE(*visible);
}

TEST_F(PropagationTest, WaitsForARecordThatAppearsLater) {
  TxtRecord record{"_acme-challenge." + base_, "late-" + randomLabel()};
  PropagationChecker checker({primary_});

  Clock::time_point start = Clock::now();
  std::thread writer([&] {
    std::this_thread::sleep_for(milliseconds(400));
    nsupdate(primary_, {record});
  });
  Status waited = checker.waitForRecords({record}, start + seconds(10));
  auto took = Clock::now() - start;
  writer.join();

  EXPECT_TRUE(waited.ok()) << waited.message();
  EXPECT_GE(took, milliseconds(400));
  // The poll interval is at most 1s, so the record is seen soon after it lands.
  EXPECT_LT(took, seconds(3));
}

TEST_F(PropagationTest, TimesOutNamingTheMissingRecordAndEachServer) {
  TxtRecord never{"_acme-challenge.never." + base_, "never-written"};
  PropagationChecker checker({primary_, secondary_});

  Clock::time_point start = Clock::now();
  Status waited = checker.waitForRecords({never}, start + milliseconds(300));
  auto took = Clock::now() - start;

  EXPECT_EQ(waited.code(), StatusCode::kDeadlineExceeded) << waited.message();
  EXPECT_NE(waited.message().find(never.fqdn), std::string::npos) << waited.message();
  EXPECT_NE(waited.message().find(env_["DNS_SERVER"]), std::string::npos) << waited.message();
  EXPECT_NE(waited.message().find(env_["DNS_SECONDARY"]), std::string::npos) << waited.message();
  EXPECT_GE(took, milliseconds(300));
  EXPECT_LT(took, milliseconds(2500));
}

TEST_F(PropagationTest, NamesOnlyTheServerThatLacksTheRecord) {
  // start-env runs two independent primaries: what is written to one stays off the other.
  TxtRecord record{"_acme-challenge." + base_, "primary-only-" + randomLabel()};
  TxtRecord everywhere{"_acme-challenge.both." + base_, "both-" + randomLabel()};
  nsupdate(primary_, {record, everywhere});
  nsupdate(secondary_, {everywhere});

  PropagationChecker checker({primary_, secondary_});
  Status waited = checker.waitForRecords({record, everywhere}, Clock::now() + milliseconds(300));

  EXPECT_EQ(waited.code(), StatusCode::kDeadlineExceeded) << waited.message();
  EXPECT_NE(waited.message().find(record.fqdn + " missing on " + env_["DNS_SECONDARY"]),
            std::string::npos)
      << waited.message();
  EXPECT_EQ(waited.message().find(env_["DNS_SERVER"]), std::string::npos) << waited.message();
  EXPECT_EQ(waited.message().find(everywhere.fqdn), std::string::npos) << waited.message();
  EXPECT_NE(waited.message().find("1 of 2"), std::string::npos) << waited.message();

  EXPECT_TRUE(checker.waitForRecords({everywhere}, Clock::now() + seconds(5)).ok());
  nsupdate(primary_, {record, everywhere}, true);
  nsupdate(secondary_, {everywhere}, true);
}

}  // namespace
}  // namespace certfleet
