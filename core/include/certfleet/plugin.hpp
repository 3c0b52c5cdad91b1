// certfleet/plugin.hpp - the plugin SDK: everything a stage plugin may see of certfleet.
//
// A plugin is a shared object that exports one descriptor (see CERTFLEET_PLUGIN below).
// The core loads it at run time, checks the ABI version before anything else, creates one
// instance, hands it its stage settings through `configure()`, and then calls the stage
// interface. This header and status.hpp are the whole SDK: they use the C++ standard
// library only, so a plugin built against an installed SDK keeps working when the core
// upgrades its own YAML, JSON or HTTP libraries.
//
// Rules a plugin follows:
//   - never throw across the boundary: return a Status or Result instead;
//   - log through Services::log, never to stdout or with a logger of its own;
//   - hold secrets in `Secret`, which prints as "[redacted]";
//   - do no network I/O in `configure()`: `certfleet check` calls it offline.
//
// A minimal DNS plugin:
//
//   class EchoDns final : public certfleet::DnsPlugin {
//    public:
//     certfleet::Status configure(const certfleet::Settings& settings,
//                                 certfleet::Services& services) override {
//       services_ = &services;
//       return {};
//     }
//     certfleet::Status present(const std::vector<certfleet::TxtRecord>& records) override {
//       for (const auto& record : records) {
//         services_->log(certfleet::LogLevel::kInfo, "would add " + record.fqdn);
//       }
//       return {};
//     }
//     certfleet::Status cleanup(const std::vector<certfleet::TxtRecord>&) override { return {}; }
//
//    private:
//     certfleet::Services* services_ = nullptr;
//   };
//   CERTFLEET_PLUGIN("echo", certfleet::Stage::kDns, "1.0.0", EchoDns)
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/dll/alias.hpp>

#include "certfleet/status.hpp"

// The interfaces' type information must be shared between the core and plugins built with
// hidden visibility, or dynamic_cast across the boundary would fail.
#define CERTFLEET_SDK_API __attribute__((visibility("default")))

namespace certfleet {

// Raised whenever a type below changes layout or a virtual function is added, removed or
// reordered. The core refuses a plugin built against another value.
inline constexpr std::uint32_t kAbiVersion = 2;

// ---------------------------------------------------------------------------------------
// Secret: a string that never prints. Use reveal() only at the point of use.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  Secret(const Secret&) = default;
  Secret(Secret&&) noexcept = default;
  Secret& operator=(const Secret&) = default;
  Secret& operator=(Secret&&) noexcept = default;
  ~Secret() { wipe(); }

  const std::string& reveal() const { return value_; }
  bool empty() const { return value_.empty(); }

  friend std::ostream& operator<<(std::ostream& out, const Secret&) { return out << "[redacted]"; }

 private:
  void wipe() {
    // volatile keeps the compiler from dropping the stores as dead writes.
    volatile char* bytes = value_.data();
    for (std::size_t i = 0; i < value_.size(); ++i) {
      bytes[i] = 0;
    }
  }

  std::string value_;
};

// ---------------------------------------------------------------------------------------
// Settings: a stage's plugin settings as flat key/value pairs, each remembering where in
// the pipeline it was written. Nested YAML maps become dotted keys ("tsig.name") and
// sequences indexed keys ("names.0", "names.1").
class Settings {
 public:
  struct Entry {
    std::string value;
    std::string location;             // "pipelines/demo.yaml:12:7"
    bool from_secret_source = false;  // came whole from ${env:NAME} or ${file:PATH}
  };

  Settings() = default;
  explicit Settings(std::string prefix, std::string block_location)
      : prefix_(std::move(prefix)), block_location_(std::move(block_location)) {}

  void set(const std::string& key, Entry entry) { entries_[key] = std::move(entry); }

  bool has(const std::string& key) const { return entries_.count(key) != 0; }

  const std::map<std::string, Entry>& entries() const { return entries_; }

  // Where a key was written, or the stage block when the key is missing.
  std::string where(const std::string& key) const {
    auto found = entries_.find(key);
    return found != entries_.end() ? found->second.location : block_location_;
  }

  // A failure about `key`, located and prefixed: "FILE:L:C: dns.rfc2136: MESSAGE".
  Status error(const std::string& key, const std::string& message) const {
    return invalidArgument(where(key) + ": " + prefix_ + ": " + message);
  }

  // Refuses any key outside `known` (a nested key counts by its first part), so that a
  // typo fails `check` instead of being silently ignored.
  Status onlyKnown(std::initializer_list<std::string_view> known) const {
    for (const auto& [key, entry] : entries_) {
      std::string_view base = std::string_view(key).substr(0, key.find('.'));
      bool listed = false;
      for (std::string_view name : known) {
        listed = listed || name == base;
      }
      if (!listed) {
        std::string names;
        for (std::string_view name : known) {
          names += (names.empty() ? "" : ", ") + std::string(name);
        }
        return error(key, "unknown setting '" + std::string(base) + "' (known: " + names + ")");
      }
    }
    return {};
  }

  std::string getOr(const std::string& key, const std::string& fallback) const {
    auto found = entries_.find(key);
    if (found == entries_.end()) {
      return fallback;
    }
    return found->second.value;
  }

  Result<std::string> require(const std::string& key) const {
    auto found = entries_.find(key);
    if (found == entries_.end() || found->second.value.empty()) {
      return error(key, "missing setting '" + key + "'");
    }
    return found->second.value;
  }

  // A secret must come from ${env:NAME} or ${file:PATH}: an inline value in a pipeline
  // file ends up in version control.
  Result<Secret> requireSecret(const std::string& key) const {
    auto found = entries_.find(key);
    if (found == entries_.end() || found->second.value.empty()) {
      return error(key, "missing secret '" + key + "'");
    }
    if (!found->second.from_secret_source) {
      return error(key, "secret '" + key + "' must come from ${env:NAME} or ${file:PATH}");
    }
    return Secret(found->second.value);
  }

  Result<std::int64_t> getInt(const std::string& key, std::int64_t fallback) const {
    auto found = entries_.find(key);
    if (found == entries_.end()) {
      return fallback;
    }
    const std::string& text = found->second.value;
    char* end = nullptr;
    long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || end == nullptr || *end != '\0') {
      return error(key, "'" + key + "' must be an integer, got '" + text + "'");
    }
    return static_cast<std::int64_t>(value);
  }

  Result<bool> getBool(const std::string& key, bool fallback) const {
    auto found = entries_.find(key);
    if (found == entries_.end()) {
      return fallback;
    }
    const std::string& text = found->second.value;
    if (text == "true" || text == "yes" || text == "on") {
      return true;
    }
    if (text == "false" || text == "no" || text == "off") {
      return false;
    }
    return error(key, "'" + key + "' must be true or false, got '" + text + "'");
  }

  // Durations are written "250ms", "30s", "5m" or "1h"; a bare number means seconds.
  Result<std::chrono::milliseconds> getDuration(const std::string& key,
                                                std::chrono::milliseconds fallback) const {
    auto found = entries_.find(key);
    if (found == entries_.end()) {
      return fallback;
    }
    std::optional<std::chrono::milliseconds> parsed = parseDuration(found->second.value);
    if (!parsed) {
      return error(
          key, "'" + key + "' must be a duration such as 30s, got '" + found->second.value + "'");
    }
    return *parsed;
  }

  // The values of a YAML sequence, in order.
  std::vector<std::string> getList(const std::string& key) const {
    std::vector<std::string> values;
    for (std::size_t i = 0;; ++i) {
      auto found = entries_.find(key + "." + std::to_string(i));
      if (found == entries_.end()) {
        return values;
      }
      values.push_back(found->second.value);
    }
  }

  // These settings with `overrides` laid on top (a host's own values win).
  Settings mergedWith(const Settings& overrides) const {
    Settings merged = *this;
    for (const auto& [key, entry] : overrides.entries_) {
      merged.entries_[key] = entry;
    }
    return merged;
  }

  const std::string& prefix() const { return prefix_; }

  static std::optional<std::chrono::milliseconds> parseDuration(std::string_view text) {
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
      ++digits;
    }
    if (digits == 0 || digits > 12) {
      return std::nullopt;
    }
    std::int64_t number = std::stoll(std::string(text.substr(0, digits)));
    std::string_view unit = text.substr(digits);
    if (unit == "ms") {
      return std::chrono::milliseconds(number);
    }
    if (unit.empty() || unit == "s") {
      return std::chrono::seconds(number);
    }
    if (unit == "m") {
      return std::chrono::minutes(number);
    }
    if (unit == "h") {
      return std::chrono::hours(number);
    }
    if (unit == "d") {
      return std::chrono::hours(24 * number);
    }
    return std::nullopt;
  }

 private:
  std::string prefix_;  // "dns.rfc2136"
  std::string block_location_;
  std::map<std::string, Entry> entries_;
};

// ---------------------------------------------------------------------------------------
// Services the core lends a plugin. One instance per loaded plugin; safe to call from the
// threads the core calls the plugin on.

enum class LogLevel : std::uint32_t {
  kTrace = 0,
  kDebug = 1,
  kInfo = 2,
  kWarn = 3,
  kError = 4,
};

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD, POST, PUT, PATCH, DELETE
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds timeout{30000};
};

struct HttpResponse {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::string body;

  // The first value of a header, by lower-case name.
  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (key == name) {
        return value;
      }
    }
    return std::nullopt;
  }

  // Every value of a header, in order (ACME sends several `Link` headers).
  std::vector<std::string> headerValues(std::string_view name) const {
    std::vector<std::string> values;
    for (const auto& [key, value] : headers) {
      if (key == name) {
        values.push_back(value);
      }
    }
    return values;
  }
};

class CERTFLEET_SDK_API Services {
 public:
  virtual ~Services() = default;

  // Records carry the host, stage and plugin they belong to; the core adds them and
  // blanks out any known secret value that slipped into the text.
  virtual void log(LogLevel level, std::string_view message) = 0;

  // HTTPS with peer verification against the stage's configured CA bundle (or the
  // system's). A transport failure is kUnavailable; any HTTP status is a response.
  virtual Result<HttpResponse> http(const HttpRequest& request) = 0;

  // A folder of this plugin's own on the orchestrator (mode 0700) that survives runs:
  // the place for an ACME account key or a cache.
  virtual std::string stateDirectory() = 0;

  // When the current run must be over; long polls stop here.
  virtual std::chrono::steady_clock::time_point deadline() = 0;
};

// ---------------------------------------------------------------------------------------
// Values exchanged with the stages.

enum class KeyType : std::uint32_t {
  kEcP256 = 1,
  kEcP384 = 2,
  kRsa2048 = 3,
  kRsa3072 = 4,
  kRsa4096 = 5,
};

// A server as the deploy and hook stages see it.
struct HostTarget {
  std::string name;     // the pipeline's name for the host: "web1"
  std::string address;  // SSH address
  std::uint16_t port = 22;
  std::string user;
  std::vector<std::string> names;  // the DNS names its certificate covers
};

// One DNS-01 TXT record: `fqdn` without the trailing dot.
struct TxtRecord {
  std::string fqdn;   // "_acme-challenge.web1.example.test"
  std::string value;  // base64url digest of the key authorization
};

// One RFC 8555 authorization of an order with its dns-01 challenge.
struct Authorization {
  std::string identifier;  // "web1.example.test" or "*.example.test"
  std::string url;
  bool already_valid = false;  // nothing to prove: do not answer its challenge again
  std::string challenge_url;
  TxtRecord record;
};

struct Order {
  std::string url;
  std::string finalize_url;
  std::vector<std::string> names;
  std::vector<Authorization> authorizations;
};

// What the deploy stage places on a host, and the hooks then check.
struct CertificateBundle {
  Secret key_pem;
  std::string fullchain_pem;  // leaf first, then intermediates
  std::string leaf_pem;
};

// ---------------------------------------------------------------------------------------
// Stage interfaces. Each plugin implements exactly one.

enum class Stage : std::uint32_t {
  kKey = 1,
  kDns = 2,
  kCa = 3,
  kDeploy = 4,
  kHook = 5,
};

inline const char* stageName(Stage stage) {
  switch (stage) {
    case Stage::kKey:
      return "key";
    case Stage::kDns:
      return "dns";
    case Stage::kCa:
      return "ca";
    case Stage::kDeploy:
      return "deploy";
    case Stage::kHook:
      return "hook";
  }
  return "unknown";
}

class CERTFLEET_SDK_API Plugin {
 public:
  virtual ~Plugin() = default;

  // Called once, before any other call, with the stage's settings (without per-host
  // overrides). Validates what is there; must not require a setting that hosts may
  // supply (check those in checkHost); must not touch the network.
  virtual Status configure(const Settings& settings, Services& services) = 0;

  // Called by `check` for every host with its effective settings (stage settings plus
  // the host's overrides); must not touch the network.
  virtual Status checkHost(const HostTarget& /*host*/, const Settings& /*settings*/) { return {}; }
};

class CERTFLEET_SDK_API KeyPlugin : public Plugin {
 public:
  // A new private key as PKCS#8 PEM.
  virtual Result<Secret> generateKey(KeyType type) = 0;

  // A PEM certificate signing request for `names` (the first is also the subject CN).
  virtual Result<std::string> makeCsr(const Secret& key_pem,
                                      const std::vector<std::string>& names) = 0;
};

class CERTFLEET_SDK_API DnsPlugin : public Plugin {
 public:
  // Adds every record, keeping any other value already on the same name. Gets the whole
  // batch of a run at once so that a provider can group its requests per zone.
  virtual Status present(const std::vector<TxtRecord>& records) = 0;

  // Removes exactly these values, leaving other values on the same name. Called for
  // every presented record whatever happened to the issuance.
  virtual Status cleanup(const std::vector<TxtRecord>& records) = 0;
};

// ACME Renewal Information (RFC 9773): the window in which the CA wants a certificate renewed.
struct RenewalWindow {
  std::int64_t start = 0;  // unix seconds
  std::int64_t end = 0;
  std::int64_t retry_after = 0;  // do not ask again before this moment; 0 when not said
  std::string explanation_url;
};

// RFC 5280 reason codes, as ACME revocation sends them.
enum class RevocationReason : std::uint32_t {
  kUnspecified = 0,
  kKeyCompromise = 1,
  kAffiliationChanged = 3,
  kSuperseded = 4,
  kCessationOfOperation = 5,
};

class CERTFLEET_SDK_API CaPlugin : public Plugin {
 public:
  // Loads or creates the account; the first call that may use the network.
  virtual Status prepareAccount() = 0;

  // Places an order for `names`. `replaces_certificate_pem` is the certificate this order
  // renews (sent as RFC 9773 `replaces` when the CA offers renewalInfo); empty for a first
  // issuance.
  virtual Result<Order> newOrder(const std::vector<std::string>& names,
                                 const std::string& replaces_certificate_pem) = 0;

  // Tells the CA the record for this authorization is in place.
  virtual Status answerChallenge(const Authorization& authorization) = 0;

  // Polls the authorization until it is valid (ok) or invalid (an error with the CA's
  // reason), honouring Retry-After, until the deadline.
  virtual Status awaitAuthorization(const Authorization& authorization) = 0;

  // Sends the CSR, waits for the order to become valid, and returns the full chain PEM
  // (leaf first).
  virtual Result<std::string> finalize(const Order& order, const std::string& csr_pem) = 0;

  // The renewal window the CA suggests for a certificate it issued, or kNotFound when the
  // CA offers no renewalInfo.
  virtual Result<RenewalWindow> renewalInfo(const std::string& certificate_pem) = 0;

  // Revokes a certificate the account holds; a certificate that is already revoked
  // counts as success.
  virtual Status revoke(const std::string& certificate_pem, RevocationReason reason) = 0;

  // Replaces the account key by a new one, keeping the account (RFC 8555 section 7.3.5).
  virtual Status rolloverAccountKey() = 0;

  // Ends the account for good (RFC 8555 section 7.3.6); later calls fail until a new
  // account is set up.
  virtual Status deactivateAccount() = 0;
};

class CERTFLEET_SDK_API DeployPlugin : public Plugin {
 public:
  // Places key and chain on the host so that a reader sees either the old or the new
  // file, never a mix; the key never exists with looser permissions than configured.
  virtual Status deploy(const HostTarget& host,
                        const Settings& settings,
                        const CertificateBundle& bundle) = 0;

  // Whether the host already holds exactly this key and chain where the settings say, so
  // that a run can leave it alone (or redeploy a server that was rebuilt). Any error, such
  // as the default kNotFound, means "cannot tell" and the core deploys.
  virtual Result<bool> isInPlace(const HostTarget& /*host*/,
                                 const Settings& /*settings*/,
                                 const CertificateBundle& /*bundle*/) {
    return notFound("this deploy plugin cannot compare files in place");
  }
};

class CERTFLEET_SDK_API HookPlugin : public Plugin {
 public:
  // Runs after a deploy (reload) or after the reload (verify). `bundle` is what the host
  // should now serve.
  virtual Status run(const HostTarget& host,
                     const Settings& settings,
                     const CertificateBundle& bundle) = 0;
};

// ---------------------------------------------------------------------------------------
// The exported entry point. The core reads `abi_version` before any other field.

extern "C" {
struct PluginDescriptor {
  std::uint32_t abi_version;
  const char* name;
  Stage stage;
  const char* version;
  Plugin* (*create)() noexcept;  // nullptr when construction failed
  void (*destroy)(Plugin*) noexcept;
};
}

using PluginEntryPoint = const PluginDescriptor*();

inline constexpr const char* kPluginEntrySymbol = "certfleet_plugin";

}  // namespace certfleet

// Exports the descriptor of one plugin class. Use once per shared object, at namespace
// scope outside any namespace.
#define CERTFLEET_PLUGIN(NAME, STAGE, VERSION, CLASS)                       \
  namespace certfleet_plugin_entry {                                        \
  static ::certfleet::Plugin* create() noexcept {                           \
    try {                                                                   \
      return new CLASS();                                                   \
    } catch (...) {                                                         \
      return nullptr;                                                       \
    }                                                                       \
  }                                                                         \
  static void destroy(::certfleet::Plugin* plugin) noexcept {               \
    delete plugin;                                                          \
  }                                                                         \
  const ::certfleet::PluginDescriptor* describe() {                         \
    static const ::certfleet::PluginDescriptor descriptor{                  \
        ::certfleet::kAbiVersion, NAME, STAGE, VERSION, &create, &destroy}; \
    return &descriptor;                                                     \
  }                                                                         \
  }                                                                         \
  BOOST_DLL_ALIAS(certfleet_plugin_entry::describe, certfleet_plugin)
