// DnsLookup and the CAA climb against the local environment's primary BIND9 server, the one
// Pebble validates against (tests/env/start-env DIR, then CERTFLEET_TEST_ENV=DIR).
#include "dns_lookup.hpp"

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "caa.hpp"

namespace certfleet {
namespace {

std::string randomLabel() {
  static std::mt19937_64 generator{std::random_device{}()};
  std::ostringstream label;
  label << "d" << std::hex << std::uniform_int_distribution<std::uint64_t>()(generator);
  return label.str().substr(0, 13);
}

class EnvironmentDnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("CERTFLEET_TEST_ENV");
    if (dir == nullptr) {
      GTEST_SKIP() << "CERTFLEET_TEST_ENV is not set: run tests/env/start-env DIR and export "
                      "CERTFLEET_TEST_ENV=DIR";
    }
    std::ifstream env(std::string(dir) + "/env.sh");
    for (std::string line; std::getline(env, line);) {
      std::string prefix = "export DNS_SERVER='";
      if (line.rfind(prefix, 0) == 0) {
        server_text_ = line.substr(prefix.size(), line.size() - prefix.size() - 1);
      }
    }
    auto parsed = parseNameserver(server_text_);
    ASSERT_TRUE(parsed.ok()) << "no DNS_SERVER in " << dir << "/env.sh";
    server_ = *parsed;
  }

  std::string server_text_;
  Nameserver server_;
};

TEST_F(EnvironmentDnsTest, FindsTheZoneOfADeepName) {
  DnsLookup lookup({server_}, server_.port);
  auto zone = lookup.findZone("_acme-challenge.a.b.c." + randomLabel() + ".example.test");
  ASSERT_TRUE(zone.ok()) << zone.status().message();
  EXPECT_EQ(*zone, "example.test");

  auto servers = lookup.authoritativeServers("example.test");
  ASSERT_TRUE(servers.ok()) << servers.status().message();
  // ns1.example.test is 127.0.0.1; the environment serves it on its own port.
  EXPECT_EQ(servers->servers, std::vector<Nameserver>{server_});
}

TEST_F(EnvironmentDnsTest, ANameWithoutCnameIsItsOwnTarget) {
  DnsLookup lookup({server_});
  auto target = lookup.followCname("_acme-challenge.web1.example.test");
  ASSERT_TRUE(target.ok()) << target.status().message();
  EXPECT_EQ(*target, "_acme-challenge.web1.example.test");
}

TEST_F(EnvironmentDnsTest, NoCaaAnywhereAllowsAnyCa) {
  DnsLookup lookup({server_});
  auto relevant = findRelevantCaa(lookup, "*.web1.example.test");
  ASSERT_TRUE(relevant.ok()) << relevant.status().message();
  EXPECT_TRUE(relevant->records.empty());
  EXPECT_EQ(relevant->owner, "");
  EXPECT_TRUE(checkCaa(lookup, "web1.example.test", "letsencrypt.org").ok());
}

}  // namespace
}  // namespace certfleet
