// Contract test of the ca/acme plugin against private Pebbles with settings the shared local
// environment must not have: external account binding required, alternate roots with
// longer chains, authorization reuse always, and half of all nonces refused. Also key
// rollover, revocation and deactivation, which change or end an account.
//
// Each suite starts its own Pebble on 127.0.0.1 (free ports, its own listener PKI in a temp
// folder) and stops it by pid afterwards, so none needs tests/env. Pebble runs with
// PEBBLE_VA_ALWAYS_VALID=1: these tests are about the account, the order and the chain, not
// about DNS-01 (ca_acme_test proves that against BIND), and skipping validation lets them
// run without a DNS server. Its -dnsserver still points at a loopback port, because Pebble
// without one would use the system's resolver.
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
#include "jws.hpp"
#include "plugin_loader.hpp"
#include "services.hpp"
#include <sys/stat.h>

namespace certfleet {
namespace {

namespace fs = std::filesystem;
using acme_test::TempDir;
using Json = nlohmann::json;
using std::chrono::steady_clock;

constexpr const char* kEabKid = "certfleet-test-kid";
// base64url of 32 bytes, as Pebble's externalAccountMACKeys wants it.
constexpr const char* kEabKey = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

class PrivatePebble {
 public:
  bool start(const std::vector<std::string>& pebble_env, bool require_eab) {
    if (!acme_test::makeListenerPki(dir_.path())) {
      error_ = "cannot make the listener's PKI with openssl";
      return false;
    }
    port_ = acme_test::freePort();
    management_port_ = acme_test::freePort();
    Json config = {{"listenAddress", "127.0.0.1:" + std::to_string(port_)},
                   {"managementListenAddress", "127.0.0.1:" + std::to_string(management_port_)},
                   {"certificate", (dir_.path() / "listener.pem").string()},
                   {"privateKey", (dir_.path() / "listener.key").string()},
                   {"httpPort", 5002},
                   {"tlsPort", 5001},
                   {"ocspResponderURL", ""},
                   {"externalAccountBindingRequired", require_eab},
                   {"certificateValidityPeriod", 7776000}};
    if (require_eab) {
      config["externalAccountMACKeys"] = {{kEabKid, kEabKey}};
    }
    std::ofstream(dir_.path() / "pebble.json") << Json{{"pebble", config}}.dump(2);

    std::vector<std::string> env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "PEBBLE_VA_NOSLEEP=1",
                                    "PEBBLE_VA_ALWAYS_VALID=1"};
    env.insert(env.end(), pebble_env.begin(), pebble_env.end());
    if (!process_.start(
            {"/usr/bin/pebble", "-config", (dir_.path() / "pebble.json").string(), "-dnsserver",
             "127.0.0.1:" + std::to_string(acme_test::freePort()), "-strict=false"},
            env, dir_.path() / "pebble.log")) {
      error_ = "cannot start /usr/bin/pebble";
      return false;
    }

    auto stop = steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      HttpRequest request;
      request.url = directoryUrl();
      request.timeout = std::chrono::seconds(1);
      Result<HttpResponse> response = services().http(request);
      if (response.ok() && response->status == 200) {
        return true;
      }
      if (!process_.running() || steady_clock::now() > stop) {
        error_ = "pebble did not start: " + acme_test::readText(dir_.path() / "pebble.log");
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  void stop() { process_.stop(); }

  const std::string& error() const { return error_; }
  std::string directoryUrl() const { return "https://127.0.0.1:" + std::to_string(port_) + "/dir"; }
  std::string caBundle() const { return (dir_.path() / "ca.pem").string(); }

  // A GET on the management interface (roots, certificate status).
  Result<HttpResponse> management(const std::string& path) {
    HttpRequest request;
    request.url = "https://127.0.0.1:" + std::to_string(management_port_) + path;
    return services().http(request);
  }

  CoreServices& services() {
    if (!services_) {
      services_ = std::make_unique<CoreServices>("test", "pebble", caBundle(), dir_.path(),
                                                 steady_clock::now() + std::chrono::hours(1));
    }
    return *services_;
  }

 private:
  TempDir dir_;
  acme_test::ChildProcess process_;
  int port_ = 0;
  int management_port_ = 0;
  std::string error_;
  std::unique_ptr<CoreServices> services_;
};

class CountingServices final : public Services {
 public:
  CountingServices(PrivatePebble& pebble, const fs::path& state)
      : core_(
            "ca", "acme", pebble.caBundle(), state, steady_clock::now() + std::chrono::minutes(2)) {
  }

  void log(LogLevel level, std::string_view message) override {
    if (message.find("refused the nonce") != std::string_view::npos) {
      ++nonce_retries;
    }
    core_.log(level, message);
  }
  Result<HttpResponse> http(const HttpRequest& request) override { return core_.http(request); }
  std::string stateDirectory() override { return core_.stateDirectory(); }
  std::chrono::steady_clock::time_point deadline() override { return core_.deadline(); }

  std::atomic<int> nonce_retries{0};

 private:
  CoreServices core_;
};

class AcmeInstance {
 public:
  AcmeInstance(PrivatePebble& pebble, const fs::path& state)
      : pebble_(pebble), services_(pebble, state) {}

  // `secrets` are marked as coming from ${env:...}, as requireSecret insists.
  Status start(const std::map<std::string, std::string>& extra = {},
               const std::map<std::string, std::string>& secrets = {}) {
    auto loaded = PluginLoader::loadFile(CERTFLEET_ACME_PLUGIN);
    if (!loaded.ok()) {
      return loaded.status();
    }
    plugin_ = std::move(*loaded);
    Settings settings("ca.acme", "test.yaml:1:1");
    settings.set("directory", {pebble_.directoryUrl(), "test.yaml:2:3", false});
    for (const auto& [key, value] : extra) {
      settings.set(key, {value, "test.yaml:3:3", false});
    }
    for (const auto& [key, value] : secrets) {
      settings.set(key, {value, "test.yaml:4:3", true});
    }
    return plugin_->instance().configure(settings, services_);
  }

  CaPlugin& ca() { return *plugin_->as<CaPlugin>(); }
  CountingServices& services() { return services_; }

  // Order, answer (Pebble validates nothing here), wait, finalize. Empty after a failure.
  std::string issue(const std::vector<std::string>& names, bool expect_reused = false) {
    Result<Order> order = ca().newOrder(names, "");
    if (!order.ok()) {
      ADD_FAILURE() << order.status().message();
      return {};
    }
    for (const Authorization& authorization : order->authorizations) {
      EXPECT_EQ(authorization.already_valid, expect_reused) << authorization.identifier;
      Status answered = ca().answerChallenge(authorization);
      EXPECT_TRUE(answered.ok()) << answered.message();
      Status valid = ca().awaitAuthorization(authorization);
      EXPECT_TRUE(valid.ok()) << valid.message();
    }
    Result<std::string> chain = ca().finalize(*order, acme_test::csrFor(names));
    if (!chain.ok()) {
      ADD_FAILURE() << chain.status().message();
      return {};
    }
    return *chain;
  }

 private:
  PrivatePebble& pebble_;
  CountingServices services_;  // outlives the plugin, which holds a reference to it
  std::unique_ptr<LoadedPlugin> plugin_;
};

std::string accountUrlIn(const fs::path& state, const std::string& directory) {
  Json stored = Json::parse(acme_test::readText(state / "account.json"), nullptr, false);
  if (stored.is_discarded() || !stored["accounts"].contains(directory)) {
    return {};
  }
  return stored["accounts"][directory];
}

std::string topIssuer(const std::string& chain) {
  std::vector<acme_test::CertPtr> certs = acme_test::parseChain(chain);
  return certs.empty() ? std::string()
                       : acme_test::commonName(X509_get_issuer_name(certs.back().get()));
}

// ---------------------------------------------------------------------------------------
// External account binding required.

class AcmeEab : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pebble_ = new PrivatePebble();
    started_ = pebble_->start({}, true);
  }
  static void TearDownTestSuite() {
    delete pebble_;
    pebble_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(started_) << pebble_->error(); }

  static PrivatePebble* pebble_;
  static bool started_;
};
PrivatePebble* AcmeEab::pebble_ = nullptr;
bool AcmeEab::started_ = false;

TEST_F(AcmeEab, WithoutABindingTheAccountIsRefusedClearly) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  ASSERT_TRUE(instance.start().ok());
  Status status = instance.ca().prepareAccount();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status.message();
  EXPECT_NE(status.message().find("requires external account binding"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("eab_kid and eab_hmac_key"), std::string::npos)
      << status.message();
}

TEST_F(AcmeEab, WithABindingTheAccountIsCreatedAndOrders) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  Status configured = instance.start({{"eab_kid", kEabKid}}, {{"eab_hmac_key", kEabKey}});
  ASSERT_TRUE(configured.ok()) << configured.message();
  Status status = instance.ca().prepareAccount();
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_FALSE(accountUrlIn(state.path(), pebble_->directoryUrl()).empty());
  EXPECT_FALSE(instance.issue({"eab.example.test"}).empty());
}

TEST_F(AcmeEab, AWrongMacKeyIsRefusedByTheCa) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  ASSERT_TRUE(
      instance.start({{"eab_kid", kEabKid}}, {{"eab_hmac_key", "AAAAAAAAAAAAAAAAAAAAAA"}}).ok());
  Status status = instance.ca().prepareAccount();
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.message().rfind("ca.acme: new account: ", 0), 0u) << status.message();
}

TEST_F(AcmeEab, TheMacKeyMustComeFromASecretSource) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  Status status = instance.start({{"eab_kid", kEabKid}, {"eab_hmac_key", kEabKey}});
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("${env:NAME}"), std::string::npos) << status.message();
}

// ---------------------------------------------------------------------------------------
// Alternate roots and chains of three, authorizations always reused; the account's life.

class AcmeChains : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pebble_ = new PrivatePebble();
    started_ = pebble_->start(
        {"PEBBLE_ALTERNATE_ROOTS=2", "PEBBLE_CHAIN_LENGTH=3", "PEBBLE_AUTHZREUSE=100"}, false);
  }
  static void TearDownTestSuite() {
    delete pebble_;
    pebble_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(started_) << pebble_->error(); }

  // The CN of Pebble's root number `index`, from its management interface.
  static std::string rootName(int index) {
    Result<HttpResponse> root = pebble_->management("/roots/" + std::to_string(index));
    if (!root.ok() || root->status != 200) {
      return {};
    }
    std::vector<acme_test::CertPtr> certs = acme_test::parseChain(root->body);
    return certs.empty() ? std::string()
                         : acme_test::commonName(X509_get_subject_name(certs.front().get()));
  }

  static PrivatePebble* pebble_;
  static bool started_;
};
PrivatePebble* AcmeChains::pebble_ = nullptr;
bool AcmeChains::started_ = false;

TEST_F(AcmeChains, PicksTheChainUpToThePreferredRoot) {
  const std::string first = rootName(0);
  const std::string second = rootName(1);
  ASSERT_FALSE(first.empty());
  ASSERT_FALSE(second.empty());
  ASSERT_NE(first, second);

  for (const std::string& wanted : {first, second}) {
    TempDir state;
    AcmeInstance instance(*pebble_, state.path());
    ASSERT_TRUE(instance.start({{"preferred_chain", wanted}}).ok());
    std::string chain = instance.issue({"chain.example.test"}, false);
    ASSERT_FALSE(chain.empty());
    EXPECT_EQ(topIssuer(chain), wanted);
    std::vector<acme_test::CertPtr> certs = acme_test::parseChain(chain);
    // Pebble 2.4.0 with PEBBLE_CHAIN_LENGTH=3 serves the leaf and three intermediates; the
    // root stays out, as RFC 8555 section 7.4.2 allows.
    ASSERT_EQ(certs.size(), 4u);
    for (std::size_t i = 1; i < certs.size(); ++i) {
      EXPECT_EQ(acme_test::commonName(X509_get_issuer_name(certs[i - 1].get())),
                acme_test::commonName(X509_get_subject_name(certs[i].get())))
          << "in order, each certificate issued by the next";
    }
    EXPECT_EQ(X509_check_host(certs.front().get(), "chain.example.test", 0, 0, nullptr), 1);
    EXPECT_EQ(chain.find('\r'), std::string::npos);
  }
}

TEST_F(AcmeChains, FallsBackToTheDefaultChain) {
  TempDir state;
  AcmeInstance plain(*pebble_, state.path());
  ASSERT_TRUE(plain.start().ok());
  std::string default_chain = plain.issue({"default.example.test"});
  ASSERT_FALSE(default_chain.empty());

  TempDir other;
  AcmeInstance instance(*pebble_, other.path());
  ASSERT_TRUE(instance.start({{"preferred_chain", "No Such Root"}}).ok());
  std::string chain = instance.issue({"fallback.example.test"});
  ASSERT_FALSE(chain.empty());
  EXPECT_EQ(topIssuer(chain), topIssuer(default_chain));
}

TEST_F(AcmeChains, ReusedAuthorizationsAreAlreadyValid) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  ASSERT_TRUE(instance.start().ok());
  ASSERT_FALSE(instance.issue({"reuse.example.test"}, false).empty());
  // PEBBLE_AUTHZREUSE=100: the second order gets the authorization the first one proved.
  Result<Order> order = instance.ca().newOrder({"reuse.example.test"}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();
  ASSERT_EQ(order->authorizations.size(), 1u);
  EXPECT_TRUE(order->authorizations.front().already_valid);
  Result<std::string> chain =
      instance.ca().finalize(*order, acme_test::csrFor({"reuse.example.test"}));
  EXPECT_TRUE(chain.ok()) << chain.status().message();
}

TEST_F(AcmeChains, RollsTheAccountKeyOver) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  ASSERT_TRUE(instance.start().ok());
  ASSERT_TRUE(instance.ca().prepareAccount().ok());
  const fs::path key_path = state.path() / "account.key.pem";
  const std::string old_pem = acme_test::readText(key_path);
  const std::string account = accountUrlIn(state.path(), pebble_->directoryUrl());
  ASSERT_FALSE(account.empty());

  Status rolled = instance.ca().rolloverAccountKey();
  ASSERT_TRUE(rolled.ok()) << rolled.message();
  const std::string new_pem = acme_test::readText(key_path);
  EXPECT_NE(new_pem, old_pem);
  struct stat info {};
  ASSERT_EQ(::stat(key_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  EXPECT_FALSE(fs::exists(state.path() / "account.key.pem.previous"));
  EXPECT_FALSE(fs::exists(state.path() / "account.key.pem.next"));
  EXPECT_EQ(accountUrlIn(state.path(), pebble_->directoryUrl()), account);

  // The same plugin and a fresh one (reading the new key) both still order on the account.
  EXPECT_FALSE(instance.issue({"rolled.example.test"}).empty());
  AcmeInstance again(*pebble_, state.path());
  ASSERT_TRUE(again.start().ok());
  Result<Order> order = again.ca().newOrder({"rolled-again.example.test"}, "");
  EXPECT_TRUE(order.ok()) << order.status().message();
  EXPECT_EQ(accountUrlIn(state.path(), pebble_->directoryUrl()), account);

  // The old key no longer speaks for the account.
  Result<acme::AccountKey> old_key = acme::AccountKey::fromPem(Secret(old_pem));
  ASSERT_TRUE(old_key.ok());
  HttpRequest get;
  get.url = pebble_->directoryUrl();
  Result<HttpResponse> directory = pebble_->services().http(get);
  ASSERT_TRUE(directory.ok());
  HttpRequest head;
  head.method = "HEAD";
  head.url = Json::parse(directory->body)["newNonce"];
  // Pebble refuses some nonces on purpose: only another refusal counts as the answer.
  std::string body;
  long status = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    Result<HttpResponse> nonce = pebble_->services().http(head);
    ASSERT_TRUE(nonce.ok());
    Result<std::string> jws = acme::signJws(
        *old_key, account, nonce->header("replay-nonce").value_or(""), account, std::nullopt);
    ASSERT_TRUE(jws.ok());
    HttpRequest post;
    post.method = "POST";
    post.url = account;
    post.headers.emplace_back("Content-Type", "application/jose+json");
    post.body = *jws;
    Result<HttpResponse> refused = pebble_->services().http(post);
    ASSERT_TRUE(refused.ok());
    status = refused->status;
    body = refused->body;
    if (body.find("badNonce") == std::string::npos) {
      break;
    }
  }
  RecordProperty("refusal", body);
  EXPECT_GE(status, 400) << body;
  EXPECT_NE(body.find("urn:ietf:params:acme:error:"), std::string::npos) << body;
  EXPECT_EQ(body.find("badNonce"), std::string::npos) << body;
}

TEST_F(AcmeChains, RevokesACertificateOnceAndAgain) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  ASSERT_TRUE(instance.start().ok());
  std::string chain = instance.issue({"revoke.example.test"});
  ASSERT_FALSE(chain.empty());
  std::string leaf = acme_test::leafOf(chain);

  Status revoked = instance.ca().revoke(leaf, RevocationReason::kKeyCompromise);
  ASSERT_TRUE(revoked.ok()) << revoked.message();
  Status again = instance.ca().revoke(leaf, RevocationReason::kKeyCompromise);
  EXPECT_TRUE(again.ok()) << again.message();
}

TEST_F(AcmeChains, ADeactivatedAccountIsNotUsedAgain) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  ASSERT_TRUE(instance.start().ok());
  ASSERT_TRUE(instance.ca().prepareAccount().ok());
  const std::string account = accountUrlIn(state.path(), pebble_->directoryUrl());

  Status deactivated = instance.ca().deactivateAccount();
  ASSERT_TRUE(deactivated.ok()) << deactivated.message();
  const std::string expected = "ca.acme: account " + account + " is deactivated; remove " +
                               (state.path() / "account.json").string() + " to register a new one";
  Result<Order> order = instance.ca().newOrder({"gone.example.test"}, "");
  ASSERT_FALSE(order.ok());
  EXPECT_EQ(order.status().message(), expected);
  EXPECT_EQ(order.status().code(), StatusCode::kFailedPrecondition);

  // A later run learns it from the state folder, without asking the CA.
  AcmeInstance later(*pebble_, state.path());
  ASSERT_TRUE(later.start().ok());
  Status prepared = later.ca().prepareAccount();
  EXPECT_EQ(prepared.message(), expected);

  // Doing what the message says gives a new account with a new key.
  fs::remove(state.path() / "account.json");
  AcmeInstance fresh(*pebble_, state.path());
  ASSERT_TRUE(fresh.start().ok());
  Status registered = fresh.ca().prepareAccount();
  ASSERT_TRUE(registered.ok()) << registered.message();
  std::string new_account = accountUrlIn(state.path(), pebble_->directoryUrl());
  EXPECT_FALSE(new_account.empty());
  EXPECT_NE(new_account, account);
}

TEST_F(AcmeChains, PebbleOffersNoRenewalInformation) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  ASSERT_TRUE(instance.start().ok());
  std::string chain = instance.issue({"ari.example.test"});
  ASSERT_FALSE(chain.empty());
  Result<RenewalWindow> window = instance.ca().renewalInfo(chain);
  ASSERT_FALSE(window.ok());
  EXPECT_EQ(window.status().code(), StatusCode::kNotFound) << window.status().message();

  // Without renewalInfo the old certificate is simply not named.
  Result<Order> order = instance.ca().newOrder({"ari.example.test"}, chain);
  EXPECT_TRUE(order.ok()) << order.status().message();
}

// ---------------------------------------------------------------------------------------
// Half of all nonces refused.

class AcmeNonces : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pebble_ = new PrivatePebble();
    started_ = pebble_->start({"PEBBLE_WFE_NONCEREJECT=50"}, false);
  }
  static void TearDownTestSuite() {
    delete pebble_;
    pebble_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(started_) << pebble_->error(); }

  static PrivatePebble* pebble_;
  static bool started_;
};
PrivatePebble* AcmeNonces::pebble_ = nullptr;
bool AcmeNonces::started_ = false;

TEST_F(AcmeNonces, IssuesWhenHalfOfTheNoncesAreRefused) {
  TempDir state;
  AcmeInstance instance(*pebble_, state.path());
  ASSERT_TRUE(instance.start().ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(instance.issue({"nonce" + std::to_string(i) + ".example.test"}).empty());
  }
  EXPECT_GT(instance.services().nonce_retries.load(), 0);
}

}  // namespace
}  // namespace certfleet
