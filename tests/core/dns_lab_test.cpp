// Zone, nameserver, CNAME and CAA lookups, and the propagation wait over discovered servers,
// against two BIND9 servers this test starts on 127.0.0.2 and 127.0.0.3 (one port), whose
// zones hold the NS, CNAME and CAA records the local environment's TXT-only key cannot add.
// The test runs in a network namespace of its own: nothing it sends can leave loopback.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "caa.hpp"
#include "dns_lookup.hpp"
#include "propagation.hpp"
#include "test_dns_server.hpp"

namespace certfleet {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;
using testing::TestDnsServer;

std::string randomLabel() {
  static std::mt19937_64 generator{std::random_device{}()};
  std::ostringstream label;
  label << "d" << std::hex << std::uniform_int_distribution<std::uint64_t>()(generator);
  return label.str().substr(0, 13);
}

std::string soa(const std::string& zone) {
  return "@ SOA ns1." + zone + ". hostmaster." + zone + ". ( 1 60 30 600 5 )\n";
}

// lab.test is served by both test servers (two NS records); sub.lab.test is a zone of its
// own below it, and other.test one that CNAMEs lead into.
TestDnsServer::Zones labZones() {
  std::string lab = soa("lab.test") +
                    "@ NS ns1.lab.test.\n"
                    "@ NS ns2.lab.test.\n"
                    "ns1 A 127.0.0.2\n"
                    "ns2 A 127.0.0.3\n"
                    "sub NS ns1.lab.test.\n"
                    "_acme-challenge.web7 CNAME _acme-challenge.alias.lab.test.\n"
                    "_acme-challenge.cross CNAME _acme-challenge.delegated.other.test.\n"
                    "to-apex CNAME other.test.\n"
                    "loop1 CNAME loop2.lab.test.\n"
                    "loop2 CNAME loop1.lab.test.\n"
                    "denied CAA 0 issue \"other-ca.test\"\n"
                    "allowed CAA 0 issue \"ca.lab.test; account=12345\"\n"
                    "wild CAA 0 issue \"ca.lab.test\"\n"
                    "wild CAA 0 issuewild \";\"\n"
                    "crit CAA 128 tbs \"anything\"\n"
                    "crit CAA 0 issue \"ca.lab.test\"\n"
                    "caa-cname CNAME denied.lab.test.\n";
  // hop0 -> ... -> hop8 is eight CNAMEs, the most followed; long0 -> ... -> long9 is nine.
  for (int i = 0; i < 8; ++i) {
    lab += "hop" + std::to_string(i) + " CNAME hop" + std::to_string(i + 1) + ".lab.test.\n";
  }
  for (int i = 0; i < 9; ++i) {
    lab += "long" + std::to_string(i) + " CNAME long" + std::to_string(i + 1) + ".lab.test.\n";
  }
  return {{"lab.test", lab},
          {"sub.lab.test", soa("sub.lab.test") + "@ NS ns1.lab.test.\n"},
          {"other.test", soa("other.test") + "@ NS ns1.other.test.\nns1 A 127.0.0.2\n"}};
}

class LabDnsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (TestDnsServer::namedBinary().empty()) {
      return;
    }
    isolation_ = TestDnsServer::enterPrivateLoopback({"127.0.0.2", "127.0.0.3"});
    if (!isolation_.empty()) {
      return;
    }
    std::uint16_t port = TestDnsServer::freePort({"127.0.0.2", "127.0.0.3"});
    first_ = std::make_unique<TestDnsServer>("127.0.0.2", port, labZones());
    second_ = std::make_unique<TestDnsServer>("127.0.0.3", port, labZones());
    started_ = first_->start() && second_->start();
  }

  static void TearDownTestSuite() {
    first_.reset();
    second_.reset();
  }

  void SetUp() override {
    if (TestDnsServer::namedBinary().empty()) {
      GTEST_SKIP() << "BIND9 (named) is not installed";
    }
    if (!isolation_.empty()) {
      GTEST_SKIP() << "needs a network namespace of its own (run as root): " << isolation_;
    }
    ASSERT_TRUE(started_) << first_->log() << "\n" << second_->log();
  }

  // Lookups through the first server, as a pipeline with `resolvers: [127.0.0.2:PORT]`.
  static DnsLookup& lookup() {
    static DnsLookup instance({Nameserver{"127.0.0.2", first_->port()}}, first_->port());
    return instance;
  }

  static Nameserver server(const TestDnsServer& which) {
    return Nameserver{which.address(), which.port()};
  }

  static std::unique_ptr<TestDnsServer> first_;
  static std::unique_ptr<TestDnsServer> second_;
  static bool started_;
  static std::string isolation_;
};

std::unique_ptr<TestDnsServer> LabDnsTest::first_;
std::unique_ptr<TestDnsServer> LabDnsTest::second_;
bool LabDnsTest::started_ = false;
std::string LabDnsTest::isolation_;

TEST_F(LabDnsTest, FindsTheZoneByItsSoaNotByCountingLabels) {
  auto deep = lookup().findZone("x.y._acme-challenge.deep.lab.test");
  ASSERT_TRUE(deep.ok()) << deep.status().message();
  EXPECT_EQ(*deep, "lab.test");

  // Three labels below a zone that itself has three.
  auto delegated = lookup().findZone("a.b.c.sub.lab.test");
  ASSERT_TRUE(delegated.ok()) << delegated.status().message();
  EXPECT_EQ(*delegated, "sub.lab.test");

  auto apex = lookup().findZone("Other.Test.");
  ASSERT_TRUE(apex.ok()) << apex.status().message();
  EXPECT_EQ(*apex, "other.test");
}

TEST_F(LabDnsTest, ACnameIsNotAZoneCutEvenWhenItPointsAtAnApex) {
  // The SOA query at to-apex.lab.test comes back with the CNAME and other.test's SOA.
  auto zone = lookup().findZone("to-apex.lab.test");
  ASSERT_TRUE(zone.ok()) << zone.status().message();
  EXPECT_EQ(*zone, "lab.test");

  auto challenge = lookup().findZone("_acme-challenge.web7.lab.test");
  ASSERT_TRUE(challenge.ok()) << challenge.status().message();
  EXPECT_EQ(*challenge, "lab.test");
}

TEST_F(LabDnsTest, ANameNoServedZoneHoldsIsAnErrorNamingTheResolver) {
  auto zone = lookup().findZone("web1.example.invalid");
  ASSERT_FALSE(zone.ok());
  EXPECT_NE(zone.status().message().find("web1.example.invalid"), std::string::npos)
      << zone.status().message();
  EXPECT_NE(zone.status().message().find(first_->endpoint()), std::string::npos)
      << zone.status().message();
}

TEST_F(LabDnsTest, ListsEveryAuthoritativeServerOnTheConfiguredPort) {
  auto servers = lookup().authoritativeServers("lab.test");
  ASSERT_TRUE(servers.ok()) << servers.status().message();
  std::vector<Nameserver> expected{server(*first_), server(*second_)};
  EXPECT_EQ(servers->servers, expected);
  EXPECT_TRUE(servers->unresolved.empty());

  auto sub = lookup().authoritativeServers("sub.lab.test");
  ASSERT_TRUE(sub.ok()) << sub.status().message();
  EXPECT_EQ(sub->servers, std::vector<Nameserver>{server(*first_)});
}

TEST_F(LabDnsTest, FollowsACnameAtTheChallengeName) {
  auto target = lookup().followCname("_acme-challenge.web7.lab.test");
  ASSERT_TRUE(target.ok()) << target.status().message();
  EXPECT_EQ(*target, "_acme-challenge.alias.lab.test");

  auto across = lookup().cnameChain("_ACME-challenge.Cross.lab.test.");
  ASSERT_TRUE(across.ok()) << across.status().message();
  EXPECT_EQ(*across, (std::vector<std::string>{"_acme-challenge.cross.lab.test",
                                               "_acme-challenge.delegated.other.test"}));

  auto none = lookup().followCname("_acme-challenge.plain.lab.test");
  ASSERT_TRUE(none.ok()) << none.status().message();
  EXPECT_EQ(*none, "_acme-challenge.plain.lab.test");
}

TEST_F(LabDnsTest, FollowsEightCnamesButNotNine) {
  auto eight = lookup().followCname("hop0.lab.test");
  ASSERT_TRUE(eight.ok()) << eight.status().message();
  EXPECT_EQ(*eight, "hop8.lab.test");

  auto nine = lookup().followCname("long0.lab.test");
  ASSERT_FALSE(nine.ok());
  EXPECT_NE(nine.status().message().find("more than 8"), std::string::npos)
      << nine.status().message();
}

TEST_F(LabDnsTest, ACnameLoopIsAnErrorShowingTheLoop) {
  auto loop = lookup().followCname("loop1.lab.test");
  ASSERT_FALSE(loop.ok());
  EXPECT_EQ(loop.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(loop.status().message().find("loop1.lab.test -> loop2.lab.test -> loop1.lab.test"),
            std::string::npos)
      << loop.status().message();
}

TEST_F(LabDnsTest, WaitsForTheAuthoritativeServerThatLags) {
  TxtRecord record{"_acme-challenge." + randomLabel() + ".lab.test", "lag-" + randomLabel()};
  std::string add = "add " + record.fqdn + " 60 TXT \"" + record.value + "\"";
  ASSERT_EQ(first_->update({add}, "lab.test"), "");

  DiscoveredChecks plan = discoverChecks(lookup(), {record});
  ASSERT_TRUE(plan.failed.empty()) << plan.failed.front().second.message();
  ASSERT_EQ(plan.groups.size(), 1u);
  EXPECT_EQ(plan.groups[0].servers, (std::vector<Nameserver>{server(*first_), server(*second_)}));

  Clock::time_point start = Clock::now();
  std::string late;
  std::thread writer([&] {
    std::this_thread::sleep_for(milliseconds(1500));
    late = second_->update({add}, "lab.test");
  });
  PropagationReport report = waitForPropagation(plan.groups, start + seconds(10));
  auto took = Clock::now() - start;
  writer.join();

  EXPECT_EQ(late, "");
  EXPECT_TRUE(report.status.ok()) << report.status.message();
  EXPECT_GE(took, milliseconds(1500));
  EXPECT_LT(took, seconds(4));
  EXPECT_EQ(report.servers, 2u);
}

TEST_F(LabDnsTest, AServerThatNeverGetsTheRecordIsNamed) {
  TxtRecord record{"_acme-challenge." + randomLabel() + ".lab.test", "never-" + randomLabel()};
  ASSERT_EQ(first_->update({"add " + record.fqdn + " 60 TXT \"" + record.value + "\""}, "lab.test"),
            "");

  PropagationConfig config;
  config.resolvers = {first_->endpoint()};
  config.nameserver_port = first_->port();
  Clock::time_point start = Clock::now();
  ConfirmOutcome outcome =
      confirmRecords(config, &lookup(), {record}, start + milliseconds(800), nullptr);

  ASSERT_EQ(outcome.failed.size(), 1u) << outcome.summary;
  const std::string& message = outcome.failed[0].second.message();
  EXPECT_EQ(outcome.failed[0].second.code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(message.find(record.fqdn + " is still not served by " + second_->endpoint()),
            std::string::npos)
      << message;
  EXPECT_EQ(message.find(first_->endpoint()), std::string::npos) << message;
  EXPECT_GE(Clock::now() - start, milliseconds(800));
  EXPECT_NE(outcome.summary.find("confirmed 0 of 1 record(s) on 2 server(s)"), std::string::npos)
      << outcome.summary;
}

TEST_F(LabDnsTest, OneWaitForRecordsInZonesWithDifferentServers) {
  std::string label = randomLabel();
  TxtRecord in_lab{"_acme-challenge." + label + ".lab.test", "lab-" + label};
  TxtRecord in_sub{"_acme-challenge." + label + ".sub.lab.test", "sub-" + label};
  for (const TestDnsServer* target : {first_.get(), second_.get()}) {
    ASSERT_EQ(
        target->update({"add " + in_lab.fqdn + " 60 TXT \"" + in_lab.value + "\""}, "lab.test"),
        "");
  }
  ASSERT_EQ(
      first_->update({"add " + in_sub.fqdn + " 60 TXT \"" + in_sub.value + "\""}, "sub.lab.test"),
      "");

  DiscoveredChecks plan = discoverChecks(lookup(), {in_lab, in_sub});
  ASSERT_TRUE(plan.failed.empty());
  EXPECT_EQ(plan.groups.size(), 2u);

  PropagationConfig config;
  config.resolvers = {first_->endpoint()};
  config.nameserver_port = first_->port();
  config.settle = milliseconds(300);
  Clock::time_point start = Clock::now();
  ConfirmOutcome outcome =
      confirmRecords(config, &lookup(), {in_lab, in_sub}, start + seconds(5), nullptr);
  EXPECT_TRUE(outcome.failed.empty()) << outcome.failed.front().second.message();
  EXPECT_NE(outcome.summary.find("confirmed 2 record(s) on 2 server(s)"), std::string::npos)
      << outcome.summary;
  EXPECT_NE(outcome.summary.find("settled 300 ms"), std::string::npos) << outcome.summary;
  EXPECT_GE(Clock::now() - start, milliseconds(300));
}

TEST_F(LabDnsTest, ARecordWhoseZoneCannotBeFoundFailsAlone) {
  std::string label = randomLabel();
  TxtRecord found{"_acme-challenge." + label + ".lab.test", "ok-" + label};
  TxtRecord lost{"_acme-challenge." + label + ".nowhere.invalid", "lost-" + label};
  for (const TestDnsServer* target : {first_.get(), second_.get()}) {
    ASSERT_EQ(target->update({"add " + found.fqdn + " 60 TXT \"" + found.value + "\""}, "lab.test"),
              "");
  }
  PropagationConfig config;
  config.resolvers = {first_->endpoint()};
  ConfirmOutcome outcome =
      confirmRecords(config, &lookup(), {found, lost}, Clock::now() + seconds(5), nullptr);
  ASSERT_EQ(outcome.failed.size(), 1u);
  EXPECT_EQ(outcome.failed[0].first.fqdn, lost.fqdn);
  EXPECT_NE(outcome.failed[0].second.message().find("find the zone of " + lost.fqdn),
            std::string::npos)
      << outcome.failed[0].second.message();
}

TEST_F(LabDnsTest, AStopRequestEndsTheWait) {
  TxtRecord never{"_acme-challenge." + randomLabel() + ".lab.test", "stop"};
  DiscoveredChecks plan = discoverChecks(lookup(), {never});
  Clock::time_point start = Clock::now();
  PropagationReport report = waitForPropagation(
      plan.groups, start + seconds(30), [&] { return Clock::now() - start > milliseconds(300); });
  EXPECT_FALSE(report.status.ok());
  EXPECT_NE(report.status.message().find("interrupted"), std::string::npos)
      << report.status.message();
  EXPECT_LT(Clock::now() - start, seconds(2));
}

TEST_F(LabDnsTest, CaaRefusalNamesTheRecordAndWhereItIs) {
  Status refused = checkCaa(lookup(), "x.denied.lab.test", "ca.lab.test");
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.message(),
            "x.denied.lab.test: CAA 0 issue \"other-ca.test\" at denied.lab.test does not "
            "allow ca.lab.test");

  Status through_cname = checkCaa(lookup(), "caa-cname.lab.test", "ca.lab.test");
  EXPECT_NE(through_cname.message().find("\"other-ca.test\" at caa-cname.lab.test"),
            std::string::npos)
      << through_cname.message();
}

TEST_F(LabDnsTest, CaaAllowsTheNamedCaAndNamesWithoutCaa) {
  Status parameters = checkCaa(lookup(), "www.allowed.lab.test", "ca.lab.test");
  EXPECT_TRUE(parameters.ok()) << parameters.message();
  // No CAA at web1.lab.test nor lab.test; the server refuses test. itself.
  Status none = checkCaa(lookup(), "web1.lab.test", "ca.lab.test");
  EXPECT_TRUE(none.ok()) << none.message();
}

TEST_F(LabDnsTest, CaaIssuewildDecidesForTheWildcardOnly) {
  Status apex = checkCaa(lookup(), "wild.lab.test", "ca.lab.test");
  EXPECT_TRUE(apex.ok()) << apex.message();
  Status wildcard = checkCaa(lookup(), "*.wild.lab.test", "ca.lab.test");
  EXPECT_EQ(wildcard.message(),
            "*.wild.lab.test: CAA 0 issuewild \";\" at wild.lab.test does not allow ca.lab.test");
}

TEST_F(LabDnsTest, CaaCriticalUnknownTagRefusesEvenTheNamedCa) {
  Status refused = checkCaa(lookup(), "crit.lab.test", "ca.lab.test");
  EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("CAA 128 tbs \"anything\" at crit.lab.test is critical"),
            std::string::npos)
      << refused.message();
}

}  // namespace
}  // namespace certfleet
