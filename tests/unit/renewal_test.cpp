#include "renewal.hpp"

#include <gtest/gtest.h>

namespace certfleet {
namespace {

constexpr std::int64_t kDay = 24 * 3600;
constexpr std::int64_t kIssued = 1'800'000'000;

HostConfig host() {
  HostConfig config;
  config.target.name = "web1";
  config.target.names = {"web1.example.test", "www.web1.example.test"};
  return config;
}

HostRecord deployedRecord() {
  HostRecord record;
  record.host = "web1";
  record.names = "web1.example.test,www.web1.example.test";
  record.key_type = "ec-256";
  record.not_before = kIssued;
  record.not_after = kIssued + 90 * kDay;
  record.fingerprint = "aa";
  record.deployed_fingerprint = "aa";
  return record;
}

TEST(Renewal, ANinetyDayCertificateRenewsWithThirtyDaysLeft) {
  EXPECT_EQ(renewalMoment(kIssued, kIssued + 90 * kDay), kIssued + 60 * kDay);
}

TEST(Renewal, AShortLivedCertificateRenewsAtHalfItsLifetime) {
  EXPECT_EQ(renewalMoment(kIssued, kIssued + 6 * kDay), kIssued + 3 * kDay);
}

TEST(Renewal, NothingDueForAFreshDeployedCertificate) {
  RenewalDecision decision = decideRenewal(host(), deployedRecord(), true, kIssued + kDay, false);
  EXPECT_FALSE(decision.issue);
  EXPECT_FALSE(decision.deploy);
  EXPECT_EQ(decision.renew_at, kIssued + 60 * kDay);
}

TEST(Renewal, IssuesWithoutACertificate) {
  RenewalDecision decision = decideRenewal(host(), std::nullopt, false, kIssued, false);
  EXPECT_TRUE(decision.issue);
  EXPECT_EQ(decision.reason, "no certificate yet");
}

TEST(Renewal, ForceRenewsAnUpToDateHost) {
  EXPECT_TRUE(decideRenewal(host(), deployedRecord(), true, kIssued + kDay, true).issue);
}

TEST(Renewal, EntersTheWindowAtTheRenewalMoment) {
  EXPECT_FALSE(decideRenewal(host(), deployedRecord(), true, kIssued + 60 * kDay - 1, false).issue);
  EXPECT_TRUE(decideRenewal(host(), deployedRecord(), true, kIssued + 60 * kDay, false).issue);
}

TEST(Renewal, ChangedNamesOrKeyTypeIssueAgain) {
  HostConfig renamed = host();
  renamed.target.names.push_back("api.example.test");
  EXPECT_EQ(decideRenewal(renamed, deployedRecord(), true, kIssued, false).reason, "names changed");
  HostConfig rsa = host();
  rsa.key_type = KeyType::kRsa2048;
  EXPECT_EQ(decideRenewal(rsa, deployedRecord(), true, kIssued, false).reason, "key type changed");
}

TEST(Renewal, AnUndeployedCertificateIsDeployedWithoutIssuing) {
  HostRecord record = deployedRecord();
  record.deployed_fingerprint = "old";
  RenewalDecision decision = decideRenewal(host(), record, true, kIssued + kDay, false);
  EXPECT_FALSE(decision.issue);
  EXPECT_TRUE(decision.deploy);
}

TEST(Renewal, ALostKeyIssuesAgain) {
  EXPECT_TRUE(decideRenewal(host(), deployedRecord(), false, kIssued + kDay, false).issue);
}

}  // namespace
}  // namespace certfleet

namespace certfleet {
namespace {

TEST(Renewal, AFailedIssuanceBacksOffUntilItsNextAttempt) {
  HostRecord failed;
  failed.host = "web1";
  failed.failures = 2;
  failed.next_attempt = kIssued + 1200;
  RenewalDecision waiting = decideRenewal(host(), failed, false, kIssued, false);
  EXPECT_FALSE(waiting.issue);
  EXPECT_NE(waiting.reason.find("backing off after 2 failed issuance(s)"), std::string::npos)
      << waiting.reason;
  EXPECT_TRUE(decideRenewal(host(), failed, false, kIssued + 1200, false).issue);
  EXPECT_TRUE(decideRenewal(host(), failed, false, kIssued, true).issue);
}

TEST(Renewal, TheCasRenewalWindowWinsOverTheLifetimeRule) {
  HostRecord record = deployedRecord();
  record.ari_renew_at = kIssued + 10 * kDay;
  RenewalDecision early = decideRenewal(host(), record, true, kIssued + 10 * kDay, false);
  EXPECT_TRUE(early.issue);
  EXPECT_EQ(early.reason, "inside the CA's renewal window (ARI)");
  EXPECT_FALSE(decideRenewal(host(), record, true, kIssued + 10 * kDay - 1, false).issue);
}

TEST(Renewal, ARevokedCertificateIsReplaced) {
  HostRecord record = deployedRecord();
  record.revoked = true;
  EXPECT_EQ(decideRenewal(host(), record, true, kIssued + kDay, false).reason,
            "the certificate was revoked");
}

}  // namespace
}  // namespace certfleet
