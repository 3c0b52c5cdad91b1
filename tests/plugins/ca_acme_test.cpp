// Contract test of the ca/acme plugin against a real Pebble, loaded as the runner loads it.
//
// Needs the local environment: CERTFLEET_TEST_ENV names a directory written by
// tests/env/start-env (its env.sh gives Pebble's directory and CA bundle, and the BIND
// server Pebble validates DNS-01 against). Pebble keeps its defaults, so 5% of nonces are
// refused and half of the authorizations may be reused. Records are put in place with
// nsupdate, not with a DNS plugin, so this test checks the CA plugin alone.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "certfleet/plugin.hpp"

#include "plugin_loader.hpp"
#include "services.hpp"
#include <sys/stat.h>

namespace certfleet {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------
// The environment.

// The `export NAME='value'` lines of env.sh, with POSIX single quoting undone.
std::map<std::string, std::string> readEnvFile(const fs::path& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const std::string prefix = "export ";
    std::size_t equals = line.find('=');
    if (line.rfind(prefix, 0) != 0 || equals == std::string::npos) {
      continue;
    }
    std::string name = line.substr(prefix.size(), equals - prefix.size());
    std::string quoted = line.substr(equals + 1);
    std::string value;
    bool inside = false;
    for (std::size_t i = 0; i < quoted.size(); ++i) {
      char c = quoted[i];
      if (c == '\'') {
        inside = !inside;
      } else if (!inside && c == '\\' && i + 1 < quoted.size()) {
        value += quoted[++i];
      } else {
        value += c;
      }
    }
    values[name] = value;
  }
  return values;
}

class TestEnv {
 public:
  static const TestEnv* get() {
    static const TestEnv* env = load();
    return env;
  }

  std::string value(const std::string& name) const {
    auto found = values_.find(name);
    return found != values_.end() ? found->second : std::string();
  }

 private:
  static const TestEnv* load() {
    const char* dir = std::getenv("CERTFLEET_TEST_ENV");
    if (dir == nullptr || *dir == '\0') {
      return nullptr;
    }
    auto* env = new TestEnv();
    env->values_ = readEnvFile(fs::path(dir) / "env.sh");
    return env;
  }

  std::map<std::string, std::string> values_;
};

#define REQUIRE_ENV()                                                           \
  do {                                                                          \
    if (TestEnv::get() == nullptr) {                                            \
      GTEST_SKIP() << "CERTFLEET_TEST_ENV is unset: start tests/env/start-env"; \
    }                                                                           \
    ASSERT_FALSE(TestEnv::get()->value("PEBBLE_DIRECTORY_URL").empty())         \
        << "no PEBBLE_DIRECTORY_URL in $CERTFLEET_TEST_ENV/env.sh";             \
  } while (false)

std::string randomLabel() {
  static std::mt19937_64 generator{std::random_device{}()};
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  std::ostringstream label;
  label << std::hex << generator();
  return label.str();
}

// A name in the environment's zone that no earlier run used, so Pebble cannot hand back
// an authorization that is already valid.
std::string freshName(const std::string& stem) {
  std::string zone = TestEnv::get()->value("DNS_ZONE");
  return stem + "-" + randomLabel() + "." + (zone.empty() ? "example.test" : zone);
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "certfleet-acme-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data()) != nullptr ? fs::path(pattern) : fs::path();
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string readText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// ---------------------------------------------------------------------------------------
// The plugin, with the core's services and a count of what it logged.

class CountingServices final : public Services {
 public:
  CountingServices(const fs::path& state, std::chrono::seconds budget)
      : core_("ca",
              "acme",
              TestEnv::get() ? TestEnv::get()->value("PEBBLE_CA_BUNDLE") : "",
              state,
              std::chrono::steady_clock::now() + budget) {}

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
  AcmeInstance(const fs::path& state, std::chrono::seconds budget = std::chrono::seconds(120))
      : services_(state, budget) {}

  // Loads the plugin and configures it with the environment's directory plus `extra`.
  Status start(const std::map<std::string, std::string>& extra = {}) {
    auto loaded = PluginLoader::loadFile(CERTFLEET_ACME_PLUGIN);
    if (!loaded.ok()) {
      return loaded.status();
    }
    plugin_ = std::move(*loaded);
    if (plugin_->as<CaPlugin>() == nullptr) {
      return internalError("the plugin is not a CaPlugin");
    }
    Settings settings("ca.acme", "test.yaml:1:1");
    int line = 2;
    auto set = [&](const std::string& key, const std::string& value) {
      settings.set(key, {value, "test.yaml:" + std::to_string(line++) + ":3", false});
    };
    if (TestEnv::get() != nullptr) {
      set("directory", TestEnv::get()->value("PEBBLE_DIRECTORY_URL"));
    }
    for (const auto& [key, value] : extra) {
      set(key, value);
    }
    return plugin_->instance().configure(settings, services_);
  }

  CaPlugin& ca() { return *plugin_->as<CaPlugin>(); }
  CountingServices& services() { return services_; }

 private:
  CountingServices services_;  // outlives the plugin, which holds a reference to it
  std::unique_ptr<LoadedPlugin> plugin_;
};

// ---------------------------------------------------------------------------------------
// DNS and X.509 helpers, independent of any certfleet plugin.

// Adds (or with `remove`, deletes) TXT records with nsupdate, signed with the environment's
// TSIG key.
::testing::AssertionResult updateTxt(const std::vector<TxtRecord>& records, bool remove) {
  const TestEnv& env = *TestEnv::get();
  std::string server = env.value("DNS_SERVER");
  std::size_t colon = server.rfind(':');
  std::string secret = readText(env.value("TSIG_SECRET_FILE"));
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) {
    secret.pop_back();
  }
  std::string algorithm =
      env.value("TSIG_ALGORITHM").empty() ? "hmac-sha256" : env.value("TSIG_ALGORITHM");

  TempDir dir;
  fs::path key_file = dir.path() / "tsig.key";
  std::ofstream(key_file) << "key \"" << env.value("TSIG_NAME") << "\" {\n  algorithm " << algorithm
                          << ";\n  secret \"" << secret << "\";\n};\n";
  fs::path script = dir.path() / "update.txt";
  {
    std::ofstream out(script);
    out << "server " << server.substr(0, colon) << " " << server.substr(colon + 1) << "\n";
    out << "zone " << env.value("DNS_ZONE") << "\n";
    for (const TxtRecord& record : records) {
      out << (remove ? "update delete " : "update add ") << record.fqdn << ". 60 IN TXT \""
          << record.value << "\"\n";
    }
    out << "send\n";
  }
  std::string command = "nsupdate -k '" + key_file.string() + "' '" + script.string() + "'";
  int status = std::system(command.c_str());
  if (status != 0) {
    return ::testing::AssertionFailure() << command << " exited with " << status;
  }
  return ::testing::AssertionSuccess();
}

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* value) const { Free(value); }
};
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using ReqPtr = std::unique_ptr<X509_REQ, Deleter<X509_REQ, X509_REQ_free>>;
using CertPtr = std::unique_ptr<X509, Deleter<X509, X509_free>>;

std::string csrFor(const std::vector<std::string>& names) {
  KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ReqPtr request(X509_REQ_new());
  X509_REQ_set_pubkey(request.get(), key.get());
  X509_NAME* subject = X509_REQ_get_subject_name(request.get());
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(names.front().c_str()), -1, -1,
                             0);
  std::string san;
  for (const std::string& name : names) {
    san += (san.empty() ? "DNS:" : ",DNS:") + name;
  }
  STACK_OF(X509_EXTENSION)* extensions = sk_X509_EXTENSION_new_null();
  sk_X509_EXTENSION_push(extensions,
                         X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str()));
  X509_REQ_add_extensions(request.get(), extensions);
  sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
  X509_REQ_sign(request.get(), key.get(), EVP_sha256());

  BioPtr out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509_REQ(out.get(), request.get());
  char* data = nullptr;
  long length = BIO_get_mem_data(out.get(), &data);
  return std::string(data, static_cast<std::size_t>(length));
}

std::vector<CertPtr> parseChain(const std::string& pem) {
  std::vector<CertPtr> chain;
  BioPtr in(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (X509* cert = PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr)) {
    chain.emplace_back(cert);
  }
  return chain;
}

bool isBase64Url(const std::string& text) {
  return text.find_first_not_of(
             "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
         std::string::npos;
}

// ---------------------------------------------------------------------------------------
// Settings are checked offline: these run without the environment.

TEST(AcmeSettings, RefusesMissingOrUnusableSettings) {
  TempDir state;
  struct Case {
    std::map<std::string, std::string> settings;
    std::string key;
  };
  const std::vector<Case> cases = {
      {{}, "directory"},
      {{{"directory", "http://127.0.0.1:1/dir"}}, "directory"},
      {{{"directory", "https://ca.test/dir"}, {"account_key_type", "rsa-2048"}},
       "account_key_type"},
      {{{"directory", "https://ca.test/dir"}, {"poll_timeout", "soon"}}, "poll_timeout"},
      {{{"directory", "https://ca.test/dir"}, {"terms_agreed", "maybe"}}, "terms_agreed"},
      {{{"directory", "https://ca.test/dir"}, {"email", "not an address"}}, "email"},
      {{{"directory", "https://ca.test/dir"}, {"emial", "ops@example.test"}}, "emial"},
      {{{"directory", "https://ca.test/dir"}, {"eab_kid", "kid-1"}}, "eab_hmac_key"},
      {{{"directory", "https://ca.test/dir"}, {"eab_kid", "kid-1"}, {"eab_hmac_key", "c2VjcmV0"}},
       "eab_hmac_key"},
  };
  for (const Case& c : cases) {
    auto loaded = PluginLoader::loadFile(CERTFLEET_ACME_PLUGIN);
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    CoreServices services("ca", "acme", "", state.path(), std::chrono::steady_clock::now());
    Settings settings("ca.acme", "p.yaml:3:5");
    for (const auto& [key, value] : c.settings) {
      settings.set(key, {value, "p.yaml:9:" + key, false});
    }
    Status status = (*loaded)->instance().configure(settings, services);
    ASSERT_FALSE(status.ok()) << c.key;
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.message();
    EXPECT_NE(status.message().find("ca.acme: "), std::string::npos) << status.message();
    EXPECT_NE(status.message().find(c.key), std::string::npos) << status.message();
  }
  // configure() must not have created anything: `certfleet check` runs it offline.
  EXPECT_TRUE(fs::is_empty(state.path()));
}

TEST(AcmeSettings, AcceptsAFullSetWithoutTouchingTheNetworkOrDisk) {
  TempDir state;
  auto loaded = PluginLoader::loadFile(CERTFLEET_ACME_PLUGIN);
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  CoreServices services("ca", "acme", "", state.path() / "state", std::chrono::steady_clock::now());
  Settings settings("ca.acme", "p.yaml:3:5");
  settings.set("directory", {"https://127.0.0.1:1/dir", "p.yaml:4:5", false});
  settings.set("email", {"ops@example.test", "p.yaml:5:5", false});
  settings.set("terms_agreed", {"true", "p.yaml:6:5", false});
  settings.set("account_key_type", {"ec-384", "p.yaml:7:5", false});
  settings.set("poll_timeout", {"30s", "p.yaml:8:5", false});
  Status status = (*loaded)->instance().configure(settings, services);
  EXPECT_TRUE(status.ok()) << status.message();
  EXPECT_FALSE(fs::exists(state.path() / "state"));
}

// ---------------------------------------------------------------------------------------
// Against Pebble.

TEST(AcmeContract, CreatesTheAccountOnceAndReusesIt) {
  REQUIRE_ENV();
  TempDir state;
  const fs::path key_path = state.path() / "account.key.pem";
  const fs::path account_path = state.path() / "account.json";

  {
    AcmeInstance first(state.path());
    ASSERT_TRUE(first.start({{"email", "ops@example.test"}}).ok());
    Status prepared = first.ca().prepareAccount();
    ASSERT_TRUE(prepared.ok()) << prepared.message();
  }
  struct stat info {};
  ASSERT_EQ(::stat(key_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(account_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  const std::string key_pem = readText(key_path);
  const std::string accounts = readText(account_path);
  EXPECT_NE(key_pem.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);
  for (const auto& entry : fs::directory_iterator(state.path())) {
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos)
        << "left behind: " << entry.path();
  }

  AcmeInstance second(state.path());
  ASSERT_TRUE(second.start().ok());
  Status prepared = second.ca().prepareAccount();
  ASSERT_TRUE(prepared.ok()) << prepared.message();
  Result<Order> order = second.ca().newOrder({freshName("reuse")}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();
  EXPECT_EQ(readText(key_path), key_pem);
  EXPECT_EQ(readText(account_path), accounts);
  ASSERT_EQ(::stat(key_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
}

TEST(AcmeContract, RegistersAgainWhenTheStoredAccountIsUnknown) {
  REQUIRE_ENV();
  TempDir state;
  {
    AcmeInstance first(state.path());
    ASSERT_TRUE(first.start().ok());
    ASSERT_TRUE(first.ca().prepareAccount().ok());
  }

  // As after a CA reset: the key is known to nobody's account URL any more.
  const fs::path account_path = state.path() / "account.json";
  nlohmann::json accounts = nlohmann::json::parse(readText(account_path));
  const std::string directory = TestEnv::get()->value("PEBBLE_DIRECTORY_URL");
  const std::string original = accounts["accounts"][directory];
  accounts["accounts"][directory] = original + "0404";
  std::ofstream(account_path) << accounts.dump();

  AcmeInstance second(state.path());
  ASSERT_TRUE(second.start().ok());
  ASSERT_TRUE(second.ca().prepareAccount().ok());
  Result<Order> order = second.ca().newOrder({freshName("again")}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();
  nlohmann::json stored = nlohmann::json::parse(readText(account_path));
  EXPECT_EQ(stored["accounts"][directory], original);
}

TEST(AcmeContract, OrderCarriesOneDns01RecordPerName) {
  REQUIRE_ENV();
  TempDir state;
  AcmeInstance instance(state.path());
  ASSERT_TRUE(instance.start().ok());

  const std::string a = freshName("a");
  const std::string b = freshName("b");
  const std::string base = freshName("w");
  const std::string wildcard = "*." + base;
  Result<Order> order = instance.ca().newOrder({a, b, wildcard}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();
  EXPECT_FALSE(order->url.empty());
  EXPECT_FALSE(order->finalize_url.empty());
  ASSERT_EQ(order->authorizations.size(), 3u);

  std::map<std::string, std::string> expected_fqdn = {
      {a, "_acme-challenge." + a},
      {b, "_acme-challenge." + b},
      {wildcard, "_acme-challenge." + base},
  };
  std::set<std::string> values;
  for (const Authorization& authorization : order->authorizations) {
    ASSERT_EQ(expected_fqdn.count(authorization.identifier), 1u) << authorization.identifier;
    EXPECT_EQ(authorization.record.fqdn, expected_fqdn[authorization.identifier]);
    EXPECT_FALSE(authorization.already_valid);
    EXPECT_FALSE(authorization.url.empty());
    EXPECT_FALSE(authorization.challenge_url.empty());
    // base64url of a SHA-256 digest: 43 characters without padding.
    EXPECT_EQ(authorization.record.value.size(), 43u) << authorization.record.value;
    EXPECT_TRUE(isBase64Url(authorization.record.value)) << authorization.record.value;
    values.insert(authorization.record.value);
  }
  EXPECT_EQ(values.size(), 3u) << "each challenge has its own token, so its own value";
}

TEST(AcmeContract, SurvivesRefusedNonces) {
  REQUIRE_ENV();
  TempDir state;
  AcmeInstance instance(state.path());
  ASSERT_TRUE(instance.start().ok());
  ASSERT_TRUE(instance.ca().prepareAccount().ok());

  // Each order is two signed requests (the order, its authorization): 20 orders make 40
  // requests, of which Pebble refuses about one in twenty nonces.
  int failed = 0;
  for (int i = 0; i < 20; ++i) {
    Result<Order> order = instance.ca().newOrder({freshName("nonce")}, "");
    if (!order.ok()) {
      ++failed;
      ADD_FAILURE() << order.status().message();
    }
  }
  EXPECT_EQ(failed, 0);
  RecordProperty("nonce_retries", instance.services().nonce_retries.load());
  std::cout << "badNonce retries: " << instance.services().nonce_retries.load() << "\n";
}

TEST(AcmeContract, OrdersFromSeveralThreadsAtOnce) {
  REQUIRE_ENV();
  TempDir state;
  AcmeInstance instance(state.path());
  ASSERT_TRUE(instance.start().ok());

  // No prepareAccount first: the threads race to create the account and must share one.
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&instance, &failed] {
      for (int i = 0; i < 5; ++i) {
        Result<Order> order = instance.ca().newOrder({freshName("thread")}, "");
        if (!order.ok()) {
          ++failed;
          std::cerr << order.status().message() << "\n";
        }
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(failed.load(), 0);
  nlohmann::json stored = nlohmann::json::parse(readText(state.path() / "account.json"));
  EXPECT_EQ(stored["accounts"].size(), 1u);
}

TEST(AcmeContract, IssuesACertificateAfterDns01) {
  REQUIRE_ENV();
  TempDir state;
  AcmeInstance instance(state.path());
  ASSERT_TRUE(instance.start({{"poll_timeout", "30s"}}).ok());

  const std::vector<std::string> names = {freshName("issue"), freshName("issue")};
  Result<Order> order = instance.ca().newOrder(names, "");
  ASSERT_TRUE(order.ok()) << order.status().message();
  std::vector<TxtRecord> records;
  for (const Authorization& authorization : order->authorizations) {
    records.push_back(authorization.record);
  }
  ASSERT_TRUE(updateTxt(records, false));

  for (const Authorization& authorization : order->authorizations) {
    Status answered = instance.ca().answerChallenge(authorization);
    ASSERT_TRUE(answered.ok()) << answered.message();
  }
  for (const Authorization& authorization : order->authorizations) {
    Status valid = instance.ca().awaitAuthorization(authorization);
    EXPECT_TRUE(valid.ok()) << valid.message();
  }
  Result<std::string> chain = instance.ca().finalize(*order, csrFor(names));
  EXPECT_TRUE(updateTxt(records, true));
  ASSERT_TRUE(chain.ok()) << chain.status().message();

  EXPECT_EQ(chain->find('\r'), std::string::npos);
  std::vector<CertPtr> certs = parseChain(*chain);
  ASSERT_GE(certs.size(), 2u) << *chain;
  for (const std::string& name : names) {
    EXPECT_EQ(X509_check_host(certs.front().get(), name.c_str(), name.size(), 0, nullptr), 1)
        << "the leaf comes first and covers " << name;
  }

  // The chain leads to the root Pebble made at start-up, when start-env saved it.
  fs::path roots = fs::path(TestEnv::get()->value("CF_ENV_DIR")) / "pebble-roots.pem";
  if (fs::exists(roots)) {
    std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>> store(X509_STORE_new());
    ASSERT_EQ(X509_STORE_load_file(store.get(), roots.c_str()), 1);
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    for (std::size_t i = 1; i < certs.size(); ++i) {
      sk_X509_push(untrusted, certs[i].get());
    }
    std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>> context(
        X509_STORE_CTX_new());
    X509_STORE_CTX_init(context.get(), store.get(), certs.front().get(), untrusted);
    int verified = X509_verify_cert(context.get());
    EXPECT_EQ(verified, 1) << X509_verify_cert_error_string(
        X509_STORE_CTX_get_error(context.get()));
    sk_X509_free(untrusted);
  }
}

TEST(AcmeContract, ReportsTheCasReasonForAnInvalidAuthorization) {
  REQUIRE_ENV();
  TempDir state;
  AcmeInstance instance(state.path());
  ASSERT_TRUE(instance.start({{"poll_timeout", "30s"}}).ok());

  const std::string name = freshName("norecord");
  Result<Order> order = instance.ca().newOrder({name}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();
  ASSERT_EQ(order->authorizations.size(), 1u);
  const Authorization& authorization = order->authorizations.front();

  // No TXT record was added: the CA's lookup must fail.
  ASSERT_TRUE(instance.ca().answerChallenge(authorization).ok());
  Status status = instance.ca().awaitAuthorization(authorization);
  RecordProperty("reason", status.message());
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.code(), StatusCode::kDeadlineExceeded) << status.message();
  EXPECT_EQ(status.message().rfind("ca.acme: authorization " + name + ": invalid: ", 0), 0u)
      << status.message();
}

TEST(AcmeContract, StopsPollingAtThePollTimeout) {
  REQUIRE_ENV();
  TempDir state;
  AcmeInstance instance(state.path());
  ASSERT_TRUE(instance.start({{"poll_timeout", "400ms"}}).ok());

  const std::string name = freshName("pending");
  Result<Order> order = instance.ca().newOrder({name}, "");
  ASSERT_TRUE(order.ok()) << order.status().message();

  // The challenge is never answered, so the authorization stays pending.
  auto start = std::chrono::steady_clock::now();
  Status status = instance.ca().awaitAuthorization(order->authorizations.front());
  auto took = std::chrono::steady_clock::now() - start;
  RecordProperty("reason", status.message());
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kDeadlineExceeded) << status.message();
  EXPECT_NE(status.message().find(name), std::string::npos) << status.message();
  EXPECT_GE(took, std::chrono::milliseconds(400));
  EXPECT_LT(took, std::chrono::seconds(5));
}

}  // namespace
}  // namespace certfleet
