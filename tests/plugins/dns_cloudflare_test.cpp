// Contract tests of the dns/cloudflare plugin against a local test double of Cloudflare's
// published v4 API (tests/doubles/cloudflare_api_double.hpp): no Cloudflare server can be
// reached from here, and a test must never touch a real account.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cloudflare_api_double.hpp"
#include "logging.hpp"
#include "plugin_loader.hpp"
#include "services.hpp"

namespace certfleet {
namespace {

using Clock = std::chrono::steady_clock;
using testing::CloudflareApiDouble;

constexpr const char* kToken = "cf-token-0123456789abcdefghijklmnopqrstuv";
constexpr const char* kExampleZone = "023e105f4ecef8ad9ca31a8372d0c353";
constexpr const char* kSubZone = "9a7806061c88ada191ed06f989cc3dac";
constexpr const char* kPagedZone = "5b4a1c3b2e4f4a6d8e0c2b4a6d8f0e1c";
constexpr const char* kAccount = "01a7362d577a6c3019a474fd6f485823";

std::vector<std::string> sorted(std::vector<std::string> values) {
  std::sort(values.begin(), values.end());
  return values;
}

std::size_t countContaining(const std::vector<std::string>& lines, const std::string& part) {
  return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](const auto& line) {
    return line.find(part) != std::string::npos;
  }));
}

class CloudflareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    api_ = std::make_unique<CloudflareApiDouble>(kToken);
    ASSERT_TRUE(api_->start());
    api_->addZone({kExampleZone, "example.test", "active", kAccount});
    api_->addZone({kSubZone, "sub.example.test", "active", kAccount});
    // The same name in three accounts, the active one last: with two zones per page the
    // plugin has to read page 2 to find it.
    api_->addZone({"11111111111111111111111111111111", "paged.test", "moved", "0ld"});
    api_->addZone({"22222222222222222222222222222222", "paged.test", "pending", "n3w"});
    api_->addZone({kPagedZone, "paged.test", "active", kAccount});

    auto loaded = PluginLoader::loadFile(CERTFLEET_CLOUDFLARE_PLUGIN);
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    ASSERT_EQ(plugin_->name(), "cloudflare");
    ASSERT_EQ(plugin_->stage(), Stage::kDns);
    services_ = makeServices(std::chrono::minutes(5));
  }

  void TearDown() override {
    plugin_.reset();
    api_->stop();
  }

  static std::unique_ptr<CoreServices> makeServices(Clock::duration left) {
    return std::make_unique<CoreServices>("dns", "cloudflare", "", ::testing::TempDir(),
                                          Clock::now() + left);
  }

  Settings settings(const std::map<std::string, std::string>& extra = {}) const {
    Settings result("dns.cloudflare", "pipelines/test.yaml:8:5");
    result.set("api_token", Settings::Entry{kToken, "pipelines/test.yaml:10:16", true});
    result.set("base_url", Settings::Entry{api_->baseUrl(), "pipelines/test.yaml:11:15", false});
    for (const auto& [key, value] : extra) {
      bool secret = key == "api_token";
      result.set(key, Settings::Entry{value, "pipelines/test.yaml:12:7", secret});
    }
    return result;
  }

  DnsPlugin& configured(const Settings& plugin_settings) {
    Status status = plugin_->instance().configure(plugin_settings, *services_);
    EXPECT_TRUE(status.ok()) << status.message();
    return *plugin_->as<DnsPlugin>();
  }

  DnsPlugin& configured() { return configured(settings()); }

  std::unique_ptr<CloudflareApiDouble> api_;
  std::unique_ptr<LoadedPlugin> plugin_;
  std::unique_ptr<CoreServices> services_;
};

TEST_F(CloudflareTest, TwoValuesOnOneNameAreBothStored) {
  DnsPlugin& dns = configured();
  const std::string name = "_acme-challenge.web1.example.test";

  // Two calls: the second value must join the first, not replace it.
  Status first = dns.present({{name, "first-value"}});
  ASSERT_TRUE(first.ok()) << first.message();
  Status second = dns.present({{name, "second-value"}});
  ASSERT_TRUE(second.ok()) << second.message();

  EXPECT_EQ(api_->txtValues(kExampleZone, name),
            (std::vector<std::string>{"first-value", "second-value"}));
  for (const auto& record : api_->records()) {
    EXPECT_EQ(record.ttl, 120);
    EXPECT_EQ(record.type, "TXT");
  }
  // The zone was looked up once and remembered.
  EXPECT_EQ(countContaining(api_->requests(), "GET /client/v4/zones?name=example.test"), 1u);
}

TEST_F(CloudflareTest, CleanupRemovesOnlyTheGivenValues) {
  DnsPlugin& dns = configured();
  const std::string name = "_acme-challenge.web1.example.test";
  api_->addRecord(kExampleZone, name, "someone-elses-value");
  api_->addRecord(kExampleZone, "_acme-challenge.web2.example.test", "kept-value");
  ASSERT_TRUE(dns.present({{name, "kept-value"}, {name, "removed-value"}}).ok());

  // Three records on the name span two pages of the listing.
  Status cleaned = dns.cleanup({{name, "removed-value"}});
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  EXPECT_EQ(sorted(api_->txtValues(kExampleZone, name)),
            sorted({"someone-elses-value", "kept-value"}));
  EXPECT_EQ(api_->txtValues(kExampleZone, "_acme-challenge.web2.example.test"),
            std::vector<std::string>{"kept-value"});
  EXPECT_GE(countContaining(api_->requests(),
                            "dns_records?type=TXT&name=_acme-challenge.web1."
                            "example.test&per_page=100&page=2"),
            1u);

  ASSERT_TRUE(dns.cleanup({{name, "kept-value"}}).ok());
  EXPECT_EQ(api_->txtValues(kExampleZone, name), std::vector<std::string>{"someone-elses-value"});

  // Cleaning up what is gone already is no error.
  Status again = dns.cleanup({{name, "kept-value"}});
  EXPECT_TRUE(again.ok()) << again.message();
}

TEST_F(CloudflareTest, TheZoneIsFoundOnALaterPageOfTheZoneList) {
  DnsPlugin& dns = configured();
  const std::string name = "_acme-challenge.www.paged.test";

  Status added = dns.present({{name, "value"}});
  ASSERT_TRUE(added.ok()) << added.message();
  EXPECT_EQ(api_->txtValues(kPagedZone, name), std::vector<std::string>{"value"});
  EXPECT_EQ(countContaining(api_->requests(), "/zones?name=paged.test&per_page=50&page=2"), 1u);

  ASSERT_TRUE(dns.cleanup({{name, "value"}}).ok());
  EXPECT_TRUE(api_->txtValues(kPagedZone, name).empty());
}

TEST_F(CloudflareTest, TheClosestEnclosingZoneWins) {
  DnsPlugin& dns = configured();
  ASSERT_TRUE(dns.present({{"_acme-challenge.a.sub.example.test", "deep"},
                           {"_acme-challenge.example.test", "apex"}})
                  .ok());
  EXPECT_EQ(api_->txtValues(kSubZone, "_acme-challenge.a.sub.example.test"),
            std::vector<std::string>{"deep"});
  EXPECT_EQ(api_->txtValues(kExampleZone, "_acme-challenge.example.test"),
            std::vector<std::string>{"apex"});
  // Names starting with '_' are never asked for: they cannot be a zone.
  EXPECT_EQ(countContaining(api_->requests(), "name=_acme"), 0u);
}

TEST_F(CloudflareTest, AnActiveZoneInSeveralAccountsNeedsAccountId) {
  api_->addZone({"33333333333333333333333333333333", "example.test", "active", "0th3r"});
  DnsPlugin& ambiguous = configured();
  Status added = ambiguous.present({{"_acme-challenge.example.test", "value"}});
  EXPECT_EQ(added.code(), StatusCode::kInvalidArgument) << added.message();
  EXPECT_NE(added.message().find("set account_id"), std::string::npos) << added.message();

  DnsPlugin& dns = configured(settings({{"account_id", kAccount}}));
  Status chosen = dns.present({{"_acme-challenge.example.test", "value"}});
  ASSERT_TRUE(chosen.ok()) << chosen.message();
  EXPECT_EQ(api_->txtValues(kExampleZone, "_acme-challenge.example.test"),
            std::vector<std::string>{"value"});
}

TEST_F(CloudflareTest, AConfiguredZoneIdSkipsTheLookup) {
  DnsPlugin& dns = configured(settings({{"zone_id", kExampleZone}, {"ttl", "1"}}));
  ASSERT_TRUE(dns.present({{"_acme-challenge.web1.example.test", "value"}}).ok());
  EXPECT_EQ(countContaining(api_->requests(), "/zones?"), 0u);
  EXPECT_EQ(api_->records().at(0).ttl, 1);
}

TEST_F(CloudflareTest, A429IsWaitedOutAndRetried) {
  DnsPlugin& dns = configured();
  api_->rateLimitNext(1, 1);

  Clock::time_point start = Clock::now();
  Status added = dns.present({{"_acme-challenge.web1.example.test", "value"}});
  ASSERT_TRUE(added.ok()) << added.message();
  EXPECT_GE(Clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(api_->rateLimitedCount(), 1);
  EXPECT_EQ(api_->txtValues(kExampleZone, "_acme-challenge.web1.example.test"),
            std::vector<std::string>{"value"});
}

TEST_F(CloudflareTest, ARetryAfterPastTheDeadlineFailsAtOnce) {
  services_ = makeServices(std::chrono::seconds(3));
  DnsPlugin& dns = configured();
  api_->rateLimitNext(1, 60);

  Clock::time_point start = Clock::now();
  Status added = dns.present({{"_acme-challenge.web1.example.test", "value"}});
  EXPECT_EQ(added.code(), StatusCode::kDeadlineExceeded) << added.message();
  EXPECT_NE(added.message().find("http 429"), std::string::npos) << added.message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
}

TEST_F(CloudflareTest, AWrongTokenIsPermissionDeniedAndNeverPrinted) {
  const std::string wrong = "cf-wrong-token-zyxwvutsrqponmlkjihgfedcba98";
  DnsPlugin& dns = configured(settings({{"api_token", wrong}}));

  LogLevel previous = logging::level();
  logging::setLevel(LogLevel::kTrace);
  ::testing::internal::CaptureStderr();
  Status added = dns.present({{"_acme-challenge.web1.example.test", "value"}});
  std::string logged = ::testing::internal::GetCapturedStderr();
  logging::setLevel(previous);

  EXPECT_EQ(added.code(), StatusCode::kPermissionDenied) << added.message();
  EXPECT_NE(added.message().find("api token refused"), std::string::npos) << added.message();
  EXPECT_NE(added.message().find("10000 Authentication error"), std::string::npos)
      << added.message();
  EXPECT_NE(added.message().find(api_->baseUrl()), std::string::npos) << added.message();
  EXPECT_FALSE(logged.empty());
  for (const std::string& token : {wrong, std::string(kToken)}) {
    EXPECT_EQ(added.message().find(token), std::string::npos) << added.message();
    EXPECT_EQ(logged.find(token), std::string::npos) << logged;
  }
  EXPECT_TRUE(api_->records().empty());
}

TEST_F(CloudflareTest, ANameInNoZoneIsNotFoundAndAFailedPresentTakesItsRecordsBack) {
  DnsPlugin& dns = configured();
  Status added = dns.present({{"_acme-challenge.web1.example.test", "good"},
                              {"_acme-challenge.web1.not-here.invalid", "bad"}});
  EXPECT_EQ(added.code(), StatusCode::kNotFound) << added.message();
  EXPECT_NE(added.message().find("_acme-challenge.web1.not-here.invalid"), std::string::npos)
      << added.message();
  EXPECT_TRUE(api_->records().empty());
}

TEST_F(CloudflareTest, PresentingAValueAlreadyThereSucceeds) {
  DnsPlugin& dns = configured();
  const std::string name = "_acme-challenge.web1.example.test";
  ASSERT_TRUE(dns.present({{name, "value"}}).ok());
  Status again = dns.present({{name, "value"}});
  EXPECT_TRUE(again.ok()) << again.message();
  EXPECT_EQ(api_->txtValues(kExampleZone, name), std::vector<std::string>{"value"});
}

TEST_F(CloudflareTest, FiftyRecordsOverTwoNamesGoInAndOutWithOneDeleteBatch) {
  DnsPlugin& dns = configured();
  std::vector<TxtRecord> records;
  for (int i = 0; i < 50; ++i) {
    records.push_back(
        {i % 2 == 0 ? "_acme-challenge.web1.example.test" : "_acme-challenge.web2.example.test",
         "value-" + std::to_string(i)});
  }
  ASSERT_TRUE(dns.present(records).ok());
  EXPECT_EQ(api_->records().size(), 50u);

  Status cleaned = dns.cleanup(records);
  ASSERT_TRUE(cleaned.ok()) << cleaned.message();
  EXPECT_TRUE(api_->records().empty());
  EXPECT_EQ(countContaining(api_->requests(), "/dns_records/batch"), 1u);
}

TEST_F(CloudflareTest, SettingsAreCheckedWithoutTheNetwork) {
  Settings inline_token("dns.cloudflare", "pipelines/test.yaml:8:5");
  inline_token.set("api_token", Settings::Entry{kToken, "pipelines/test.yaml:10:16", false});
  Status refused = plugin_->instance().configure(inline_token, *services_);
  EXPECT_EQ(refused.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.message().find("pipelines/test.yaml:10:16: dns.cloudflare: secret "
                                   "'api_token' must come from ${env:NAME} or ${file:PATH}"),
            std::string::npos)
      << refused.message();
  EXPECT_EQ(refused.message().find(kToken), std::string::npos);

  Status ttl = plugin_->instance().configure(settings({{"ttl", "10"}}), *services_);
  EXPECT_NE(ttl.message().find("'ttl' must be 1 (automatic) or between 30 and 86400"),
            std::string::npos)
      << ttl.message();
  Status url =
      plugin_->instance().configure(settings({{"base_url", "api.cloudflare.com"}}), *services_);
  EXPECT_NE(url.message().find("'base_url' must be an http(s) address"), std::string::npos)
      << url.message();
  Status zone = plugin_->instance().configure(settings({{"zone_id", "../etc"}}), *services_);
  EXPECT_NE(zone.message().find("'zone_id' must be a zone's identifier"), std::string::npos)
      << zone.message();
  EXPECT_TRUE(api_->requests().empty());
}

}  // namespace
}  // namespace certfleet
