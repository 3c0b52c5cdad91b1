#include "metrics.hpp"

#include <gtest/gtest.h>

namespace certfleet {
namespace {

TEST(Metrics, OneGaugePerHostWithEscapedLabels) {
  HostRecord good;
  good.host = "web1";
  good.not_before = 1000;
  good.not_after = 1000 + 90 * 86400;
  good.fingerprint = good.deployed_fingerprint = "ab";
  good.last_result = "ok";
  good.last_attempt = 5000;
  HostRecord failed;
  failed.host = "web\"2";
  failed.last_result = "deploy failed";

  std::string text = renderMetrics("shop", "staging", {good, failed});
  EXPECT_NE(text.find("certfleet_certificate_not_after_timestamp_seconds{pipeline=\"shop\","
                      "environment=\"staging\",host=\"web1\"} 7777000\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("certfleet_renewal_timestamp_seconds{pipeline=\"shop\",environment="
                      "\"staging\",host=\"web1\"} 5185000\n"),
            std::string::npos);
  EXPECT_NE(text.find("certfleet_last_run_success{pipeline=\"shop\",environment=\"staging\","
                      "host=\"web\\\"2\"} 0\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("certfleet_certificate_deployed{pipeline=\"shop\",environment="
                      "\"staging\",host=\"web1\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE certfleet_last_run_success gauge\n"), std::string::npos);
}

}  // namespace
}  // namespace certfleet
