// The CAA decision of RFC 8659 as a pure function over parsed records: no DNS involved.
#include "caa.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace certfleet {
namespace {

CaaRecord issue(const std::string& value, std::uint8_t flags = 0) {
  return CaaRecord{flags, "issue", value};
}
CaaRecord issuewild(const std::string& value) {
  return CaaRecord{0, "issuewild", value};
}

constexpr const char* kCa = "letsencrypt.org";

TEST(EvaluateCaa, NoRecordsAllowEveryCa) {
  EXPECT_TRUE(evaluateCaa({}, kCa, false).allowed);
  EXPECT_TRUE(evaluateCaa({}, kCa, true).allowed);
}

TEST(EvaluateCaa, IssueNamingTheCaAllows) {
  EXPECT_TRUE(evaluateCaa({issue("letsencrypt.org")}, kCa, false).allowed);
  // Issuer domain names compare without regard to case.
  EXPECT_TRUE(evaluateCaa({issue("LetsEncrypt.ORG")}, kCa, false).allowed);
  // One of several is enough.
  EXPECT_TRUE(evaluateCaa({issue("other-ca.test"), issue("letsencrypt.org")}, kCa, false).allowed);
}

TEST(EvaluateCaa, IssueNamingAnotherCaRefusesAndSaysWhich) {
  CaaDecision decision = evaluateCaa({issue("other-ca.test")}, kCa, false);
  EXPECT_FALSE(decision.allowed);
  ASSERT_EQ(decision.deciding.size(), 1u);
  EXPECT_EQ(formatCaa(decision.deciding[0]), "0 issue \"other-ca.test\"");
  EXPECT_EQ(decision.reason, "does not allow letsencrypt.org");
}

TEST(EvaluateCaa, ParametersAfterTheSemicolonAreIgnoredForMatching) {
  EXPECT_TRUE(evaluateCaa({issue("letsencrypt.org; accounturi=https://ca.test/acct/1")}, kCa, false)
                  .allowed);
  EXPECT_TRUE(
      evaluateCaa({issue("  letsencrypt.org  ;validationmethods=dns-01")}, kCa, false).allowed);
  // The parameter mentions the CA, the issuer does not: still refused.
  EXPECT_FALSE(evaluateCaa({issue("other-ca.test; note=letsencrypt.org")}, kCa, false).allowed);
  // A prefix of the identity is another name.
  EXPECT_FALSE(evaluateCaa({issue("encrypt.org")}, kCa, false).allowed);
}

TEST(EvaluateCaa, AnEmptyIssueValueForbidsEveryCa) {
  EXPECT_FALSE(evaluateCaa({issue(";")}, kCa, false).allowed);
  EXPECT_FALSE(evaluateCaa({issue("")}, kCa, false).allowed);
  EXPECT_FALSE(evaluateCaa({issue(" ; foo=bar")}, kCa, false).allowed);
  // Another issue record may still name the CA.
  EXPECT_TRUE(evaluateCaa({issue(";"), issue("letsencrypt.org")}, kCa, false).allowed);
}

TEST(EvaluateCaa, IssuewildDecidesForWildcardsWhenPresent) {
  std::vector<CaaRecord> records{issue("letsencrypt.org"), issuewild(";")};
  EXPECT_TRUE(evaluateCaa(records, kCa, false).allowed);
  CaaDecision wildcard = evaluateCaa(records, kCa, true);
  EXPECT_FALSE(wildcard.allowed);
  ASSERT_EQ(wildcard.deciding.size(), 1u);
  EXPECT_EQ(wildcard.deciding[0].tag, "issuewild");

  std::vector<CaaRecord> only_wild{issue("other-ca.test"), issuewild("letsencrypt.org")};
  EXPECT_TRUE(evaluateCaa(only_wild, kCa, true).allowed);
  EXPECT_FALSE(evaluateCaa(only_wild, kCa, false).allowed);
}

TEST(EvaluateCaa, WildcardsFallBackToIssueWithoutIssuewild) {
  EXPECT_FALSE(evaluateCaa({issue("other-ca.test")}, kCa, true).allowed);
  EXPECT_TRUE(evaluateCaa({issue("letsencrypt.org")}, kCa, true).allowed);
}

TEST(EvaluateCaa, IssuewildAloneDoesNotRestrictOtherNames) {
  EXPECT_TRUE(evaluateCaa({issuewild(";")}, kCa, false).allowed);
  EXPECT_FALSE(evaluateCaa({issuewild(";")}, kCa, true).allowed);
}

TEST(EvaluateCaa, ACriticalUnknownTagRefusesEvenTheNamedCa) {
  CaaRecord unknown{128, "tbs", "anything"};
  CaaDecision decision = evaluateCaa({issue("letsencrypt.org"), unknown}, kCa, false);
  EXPECT_FALSE(decision.allowed);
  ASSERT_EQ(decision.deciding.size(), 1u);
  EXPECT_EQ(formatCaa(decision.deciding[0]), "128 tbs \"anything\"");
  EXPECT_NE(decision.reason.find("critical"), std::string::npos);
}

TEST(EvaluateCaa, NonCriticalUnknownAndCriticalKnownTagsAreFine) {
  EXPECT_TRUE(
      evaluateCaa({issue("letsencrypt.org"), CaaRecord{0, "tbs", "x"}}, kCa, false).allowed);
  EXPECT_TRUE(evaluateCaa({issue("letsencrypt.org", 128)}, kCa, false).allowed);
  EXPECT_TRUE(evaluateCaa({CaaRecord{128, "iodef", "mailto:security@example.test"},
                           issue("letsencrypt.org")},
                          kCa, false)
                  .allowed);
  // Flag value 1 is bit 7, not the critical bit 0.
  EXPECT_TRUE(evaluateCaa({CaaRecord{1, "tbs", "x"}}, kCa, false).allowed);
}

TEST(EvaluateCaa, TagsCompareWithoutRegardToCase) {
  EXPECT_FALSE(evaluateCaa({CaaRecord{0, "ISSUE", "other-ca.test"}}, kCa, false).allowed);
  EXPECT_FALSE(evaluateCaa({CaaRecord{128, "Issue", "other-ca.test"}}, kCa, false).allowed);
  EXPECT_TRUE(evaluateCaa({CaaRecord{128, "Issue", "letsencrypt.org"}}, kCa, false).allowed);
}

TEST(FormatCaa, QuotesTheValueAsAZoneFileWould) {
  EXPECT_EQ(formatCaa(CaaRecord{0, "issue", "a\"b\\c"}), "0 issue \"a\\\"b\\\\c\"");
}

}  // namespace
}  // namespace certfleet
