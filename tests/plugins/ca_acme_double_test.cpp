// Contract test of the ca/acme plugin against tests/doubles/acme_double.py, for what Pebble
// 2.4.0 cannot show: RFC 9773 renewal information and `replaces`, profiles, Retry-After
// after finalize, and the CA's "come back later" and refusal answers.
//
// The double runs on 127.0.0.1 with a certificate from a CA this test makes; it is started
// once for the suite and stopped by its pid afterwards. Each test sets the double's answers
// through its control endpoint, which also counts the requests it got.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "certfleet/plugin.hpp"

#include "acme_support.hpp"
#include "plugin_loader.hpp"
#include "services.hpp"

namespace certfleet {
namespace {

using acme_test::TempDir;
using Json = nlohmann::json;
using std::chrono::steady_clock;

class DoubleServer {
 public:
  static DoubleServer& get() {
    static DoubleServer server;
    return server;
  }

  bool start() {
    if (!acme_test::makeListenerPki(dir_.path())) {
      error_ = "cannot make the listener's PKI with openssl";
      return false;
    }
    const acme_test::fs::path port_file = dir_.path() / "port";
    if (!process_.start(
            {CERTFLEET_PYTHON3, CERTFLEET_ACME_DOUBLE, "--cert",
             (dir_.path() / "listener.pem").string(), "--key",
             (dir_.path() / "listener.key").string(), "--port-file", port_file.string()},
            {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE=1"},
            dir_.path() / "double.log")) {
      error_ = "cannot start the double";
      return false;
    }
    auto stop = steady_clock::now() + std::chrono::seconds(20);
    while (!acme_test::fs::exists(port_file)) {
      if (!process_.running() || steady_clock::now() > stop) {
        error_ = "the double did not start: " + acme_test::readText(dir_.path() / "double.log");
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    base_ = "https://127.0.0.1:" + std::to_string(std::stoi(acme_test::readText(port_file)));
    return true;
  }

  void stop() { process_.stop(); }

  const std::string& error() const { return error_; }
  std::string directoryUrl() const { return base_ + "/directory"; }
  std::string caBundle() const { return (dir_.path() / "ca.pem").string(); }

  // Sets the double's answers for the next test and clears its counters.
  ::testing::AssertionResult reset(const Json& config) {
    HttpRequest request;
    request.method = "POST";
    request.url = base_ + "/control/reset";
    request.body = config.dump();
    Result<HttpResponse> response = control().http(request);
    if (!response.ok() || response->status != 200) {
      return ::testing::AssertionFailure() << "cannot reset the double";
    }
    return ::testing::AssertionSuccess();
  }

  Json state() {
    HttpRequest request;
    request.url = base_ + "/control/state";
    Result<HttpResponse> response = control().http(request);
    if (!response.ok()) {
      return Json::object();
    }
    return Json::parse(response->body, nullptr, false);
  }

  int count(const std::string& endpoint) {
    Json counts = state()["counts"];
    return counts.contains(endpoint) ? counts[endpoint].get<int>() : 0;
  }

 private:
  CoreServices& control() {
    if (!control_) {
      control_ = std::make_unique<CoreServices>("test", "control", caBundle(), dir_.path(),
                                                steady_clock::now() + std::chrono::hours(1));
    }
    return *control_;
  }

  TempDir dir_;
  acme_test::ChildProcess process_;
  std::string base_;
  std::string error_;
  std::unique_ptr<CoreServices> control_;
};

class AcmeInstance {
 public:
  explicit AcmeInstance(std::chrono::seconds budget = std::chrono::seconds(60))
      : services_("ca",
                  "acme",
                  DoubleServer::get().caBundle(),
                  state_.path(),
                  steady_clock::now() + budget) {}

  Status start(const std::map<std::string, std::string>& extra = {}) {
    auto loaded = PluginLoader::loadFile(CERTFLEET_ACME_PLUGIN);
    if (!loaded.ok()) {
      return loaded.status();
    }
    plugin_ = std::move(*loaded);
    Settings settings("ca.acme", "test.yaml:1:1");
    settings.set("directory", {DoubleServer::get().directoryUrl(), "test.yaml:2:3", false});
    for (const auto& [key, value] : extra) {
      settings.set(key, {value, "test.yaml:3:3", false});
    }
    return plugin_->instance().configure(settings, services_);
  }

  CaPlugin& ca() { return *plugin_->as<CaPlugin>(); }

  // A whole issuance: order, (nothing to prove: the double's authorizations are valid),
  // finalize. Returns the chain, or an empty string after reporting a failure.
  std::string issue(const std::vector<std::string>& names, const std::string& replaces = "") {
    Result<Order> order = ca().newOrder(names, replaces);
    if (!order.ok()) {
      ADD_FAILURE() << order.status().message();
      return {};
    }
    for (const Authorization& authorization : order->authorizations) {
      EXPECT_TRUE(authorization.already_valid) << authorization.identifier;
    }
    Result<std::string> chain = ca().finalize(*order, acme_test::csrFor(names));
    if (!chain.ok()) {
      ADD_FAILURE() << chain.status().message();
      return {};
    }
    return *chain;
  }

 private:
  TempDir state_;
  CoreServices services_;  // outlives the plugin, which holds a reference to it
  std::unique_ptr<LoadedPlugin> plugin_;
};

class AcmeDouble : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { started_ = DoubleServer::get().start(); }
  static void TearDownTestSuite() { DoubleServer::get().stop(); }

  void SetUp() override {
    ASSERT_TRUE(started_) << DoubleServer::get().error();
    ASSERT_TRUE(DoubleServer::get().reset(Json::object()));
  }

  static bool started_;
};
bool AcmeDouble::started_ = false;

std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

TEST_F(AcmeDouble, ReadsTheRenewalWindow) {
  ASSERT_TRUE(DoubleServer::get().reset({{"renewal_window",
                                          {{"start", "2026-12-03T20:00:00Z"},
                                           {"end", "2026-12-04T09:30:00.250+01:00"},
                                           {"retry_after", 21600},
                                           {"explanation_url", "https://ca.test/why"}}}}));
  AcmeInstance instance;
  ASSERT_TRUE(instance.start().ok());
  std::string chain = instance.issue({"ari.example.test"});
  ASSERT_FALSE(chain.empty());

  std::int64_t before = unixNow();
  Result<RenewalWindow> window = instance.ca().renewalInfo(chain);
  ASSERT_TRUE(window.ok()) << window.status().message();
  EXPECT_EQ(window->start, 1796328000);  // 2026-12-03T20:00:00Z
  EXPECT_EQ(window->end, 1796373000);    // 2026-12-04T08:30:00Z
  EXPECT_GE(window->retry_after, before + 21600);
  EXPECT_LE(window->retry_after, unixNow() + 21600);
  EXPECT_EQ(window->explanation_url, "https://ca.test/why");

  Json asked = DoubleServer::get().state()["renewal_requests"];
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0], acme_test::expectedCertificateId(chain));
}

TEST_F(AcmeDouble, NamesTheReplacedCertificate) {
  AcmeInstance instance;
  ASSERT_TRUE(instance.start().ok());
  std::string first = instance.issue({"replace.example.test"});
  ASSERT_FALSE(first.empty());
  const std::string expected = acme_test::expectedCertificateId(acme_test::leafOf(first));
  ASSERT_FALSE(expected.empty());

  std::string second = instance.issue({"replace.example.test"}, first);
  ASSERT_FALSE(second.empty());

  Json orders = DoubleServer::get().state()["orders"];
  ASSERT_EQ(orders.size(), 2u);
  EXPECT_TRUE(orders[0]["replaces"].is_null()) << "a first issuance replaces nothing";
  EXPECT_EQ(orders[1]["replaces"], expected);
}

TEST_F(AcmeDouble, SendsAnOfferedProfile) {
  AcmeInstance instance;
  ASSERT_TRUE(instance.start({{"profile", "shortlived"}}).ok());
  Result<Order> order = instance.ca().newOrder({"profile.example.test"}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();
  Json orders = DoubleServer::get().state()["orders"];
  ASSERT_EQ(orders.size(), 1u);
  EXPECT_EQ(orders[0]["profile"], "shortlived");
}

TEST_F(AcmeDouble, RefusesAProfileTheCaDoesNotOffer) {
  AcmeInstance instance;
  ASSERT_TRUE(instance.start({{"profile", "everlasting"}}).ok()) << "configure() stays offline";
  Result<Order> order = instance.ca().newOrder({"profile.example.test"}, "");
  ASSERT_FALSE(order.ok());
  const std::string& message = order.status().message();
  EXPECT_EQ(order.status().code(), StatusCode::kInvalidArgument) << message;
  EXPECT_NE(message.find("'everlasting'"), std::string::npos) << message;
  EXPECT_NE(message.find("classic"), std::string::npos) << message;
  EXPECT_NE(message.find("shortlived"), std::string::npos) << message;
  EXPECT_EQ(DoubleServer::get().count("new-order"), 0) << "refused before asking the CA";
}

TEST_F(AcmeDouble, PollsAProcessingOrderAsTheCaAsks) {
  ASSERT_TRUE(DoubleServer::get().reset({{"processing_polls", 1}}));
  AcmeInstance instance;
  ASSERT_TRUE(instance.start().ok());
  Result<Order> order = instance.ca().newOrder({"slow.example.test"}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();

  auto start = steady_clock::now();
  Result<std::string> chain =
      instance.ca().finalize(*order, acme_test::csrFor({"slow.example.test"}));
  auto took = steady_clock::now() - start;
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  EXPECT_EQ(acme_test::parseChain(*chain).size(), 2u);

  // Finalize answered processing with Retry-After: 1, and so did the first poll.
  EXPECT_GE(took, std::chrono::milliseconds(1900));
  Json times = DoubleServer::get().state()["poll_times"];
  ASSERT_EQ(times.size(), 3u) << times.dump();
  for (std::size_t i = 1; i < times.size(); ++i) {
    EXPECT_GE(times[i].get<double>() - times[i - 1].get<double>(), 0.95) << times.dump();
  }
}

TEST_F(AcmeDouble, RateLimitBeyondTheDeadlineFailsAtOnce) {
  ASSERT_TRUE(DoubleServer::get().reset(
      {{"new_order_fault", "rateLimited"}, {"rate_limit_retry_after", 3600}}));
  AcmeInstance instance(std::chrono::seconds(60));
  ASSERT_TRUE(instance.start().ok());
  ASSERT_TRUE(instance.ca().prepareAccount().ok());

  auto start = steady_clock::now();
  Result<Order> order = instance.ca().newOrder({"limited.example.test"}, "");
  auto took = steady_clock::now() - start;
  ASSERT_FALSE(order.ok());
  const std::string& message = order.status().message();
  RecordProperty("reason", message);
  EXPECT_EQ(order.status().code(), StatusCode::kUnavailable) << message;
  EXPECT_NE(message.find("rateLimited: too many new orders recently"), std::string::npos)
      << message;
  EXPECT_NE(message.find("; retry after 20"), std::string::npos) << message;
  EXPECT_NE(message.find("limited.example.test"), std::string::npos) << message;
  EXPECT_LT(took, std::chrono::seconds(3));
  EXPECT_LE(DoubleServer::get().count("new-order"), 2);
}

TEST_F(AcmeDouble, WaitsOutARateLimitThatEndsWithinTheRun) {
  ASSERT_TRUE(DoubleServer::get().reset(
      {{"new_order_fault", "rateLimited"}, {"rate_limit_retry_after", 1}, {"fault_count", 1}}));
  AcmeInstance instance(std::chrono::seconds(60));
  ASSERT_TRUE(instance.start().ok());
  ASSERT_TRUE(instance.ca().prepareAccount().ok());
  auto start = steady_clock::now();
  Result<Order> order = instance.ca().newOrder({"patient.example.test"}, "");
  auto took = steady_clock::now() - start;
  ASSERT_TRUE(order.ok()) << order.status().message();
  EXPECT_GE(took, std::chrono::milliseconds(950));
  EXPECT_EQ(DoubleServer::get().count("new-order"), 2);
}

TEST_F(AcmeDouble, RidesOutOneUnavailableAnswer) {
  ASSERT_TRUE(DoubleServer::get().reset({{"new_order_fault", "unavailable_once"}}));
  AcmeInstance instance;
  ASSERT_TRUE(instance.start().ok());
  Result<Order> order = instance.ca().newOrder({"flaky.example.test"}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();
  EXPECT_EQ(DoubleServer::get().count("new-order"), 2);
}

TEST_F(AcmeDouble, ReportsCaaPerIdentifierWithoutRetrying) {
  ASSERT_TRUE(DoubleServer::get().reset({{"new_order_fault", "caa"}}));
  AcmeInstance instance;
  ASSERT_TRUE(instance.start().ok());
  Result<Order> order = instance.ca().newOrder({"a.example.test", "b.example.test"}, "");
  ASSERT_FALSE(order.ok());
  const std::string& message = order.status().message();
  RecordProperty("reason", message);
  EXPECT_EQ(order.status().code(), StatusCode::kPermissionDenied) << message;
  EXPECT_NE(message.find("caa: CAA records forbid issuance"), std::string::npos) << message;
  EXPECT_NE(message.find("a.example.test: caa: CAA record for a.example.test prevents issuance"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("b.example.test: caa: CAA record for b.example.test prevents issuance"),
            std::string::npos)
      << message;
  EXPECT_EQ(DoubleServer::get().count("new-order"), 1);
}

TEST_F(AcmeDouble, NamesTheTermsAUserMustAgreeTo) {
  ASSERT_TRUE(DoubleServer::get().reset({{"new_order_fault", "userActionRequired"}}));
  AcmeInstance instance;
  ASSERT_TRUE(instance.start().ok());
  Result<Order> order = instance.ca().newOrder({"terms.example.test"}, "");
  ASSERT_FALSE(order.ok());
  const std::string& message = order.status().message();
  EXPECT_EQ(order.status().code(), StatusCode::kPermissionDenied) << message;
  EXPECT_NE(message.find("userActionRequired: the terms of service have changed; see https://"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("/terms/v2"), std::string::npos) << message;
  EXPECT_EQ(DoubleServer::get().count("new-order"), 1);
}

TEST_F(AcmeDouble, RetriesEveryRefusedNonce) {
  ASSERT_TRUE(DoubleServer::get().reset({{"bad_nonce_first", true}}));
  AcmeInstance instance;
  ASSERT_TRUE(instance.start().ok());
  std::string chain = instance.issue({"nonce.example.test"});
  EXPECT_FALSE(chain.empty());
  // Each signed request was refused once: twice as many new-order requests as orders.
  EXPECT_EQ(DoubleServer::get().count("new-order"), 2);
}

TEST_F(AcmeDouble, RevokesACertificate) {
  AcmeInstance instance;
  ASSERT_TRUE(instance.start().ok());
  std::string chain = instance.issue({"revoke.example.test"});
  ASSERT_FALSE(chain.empty());
  Status revoked = instance.ca().revoke(chain, RevocationReason::kSuperseded);
  EXPECT_TRUE(revoked.ok()) << revoked.message();
  EXPECT_EQ(DoubleServer::get().count("revoke-cert"), 1);
}

}  // namespace
}  // namespace certfleet
