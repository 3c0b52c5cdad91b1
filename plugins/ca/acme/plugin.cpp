// The `ca` stage plugin `acme`: the SDK's CaPlugin on top of AcmeClient. Every entry point
// catches what the libraries below might throw, so nothing crosses the plugin boundary.
#include "certfleet/plugin.hpp"

#include <exception>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "acme_client.hpp"
#include "jws.hpp"

namespace {

constexpr const char* kContext = "ca.acme";

certfleet::Status unexpected(const char* what) {
  return certfleet::internalError(std::string(kContext) + ": unexpected error: " + what);
}

// "ops@example.test" or "mailto:ops@example.test"; one address, nothing the CA would reject
// as a contact URI.
std::optional<std::string> emailAddress(std::string text) {
  if (text.rfind("mailto:", 0) == 0) {
    text = text.substr(7);
  }
  std::size_t at = text.find('@');
  if (at == 0 || at == std::string::npos || at + 1 == text.size() ||
      text.find('@', at + 1) != std::string::npos ||
      text.find_first_of(" \t\r\n,;<>?") != std::string::npos) {
    return std::nullopt;
  }
  return text;
}

class AcmePlugin final : public certfleet::CaPlugin {
 public:
  certfleet::Status configure(const certfleet::Settings& settings,
                              certfleet::Services& services) override {
    try {
      return configureOrFail(settings, services);
    } catch (const std::exception& error) {
      return unexpected(error.what());
    } catch (...) {
      return unexpected("unknown exception");
    }
  }

  certfleet::Status prepareAccount() override {
    return guarded([](auto& client) { return client.prepareAccount(); });
  }

  certfleet::Result<certfleet::Order> newOrder(
      const std::vector<std::string>& names, const std::string& replaces_certificate_pem) override {
    return guarded([&](auto& client) { return client.newOrder(names, replaces_certificate_pem); });
  }

  certfleet::Status answerChallenge(const certfleet::Authorization& authorization) override {
    return guarded([&](auto& client) { return client.answerChallenge(authorization); });
  }

  certfleet::Status awaitAuthorization(const certfleet::Authorization& authorization) override {
    return guarded([&](auto& client) { return client.awaitAuthorization(authorization); });
  }

  certfleet::Result<std::string> finalize(const certfleet::Order& order,
                                          const std::string& csr_pem) override {
    return guarded([&](auto& client) { return client.finalize(order, csr_pem); });
  }

  certfleet::Result<certfleet::RenewalWindow> renewalInfo(
      const std::string& certificate_pem) override {
    return guarded([&](auto& client) { return client.renewalInfo(certificate_pem); });
  }

  certfleet::Status revoke(const std::string& certificate_pem,
                           certfleet::RevocationReason reason) override {
    return guarded([&](auto& client) { return client.revoke(certificate_pem, reason); });
  }

  certfleet::Status rolloverAccountKey() override {
    return guarded([](auto& client) { return client.rolloverAccountKey(); });
  }

  certfleet::Status deactivateAccount() override {
    return guarded([](auto& client) { return client.deactivateAccount(); });
  }

 private:
  // Runs `call` on the client, turning any exception into an internal error and prefixing
  // failures with the plugin's name.
  template <typename Call>
  auto guarded(Call&& call) -> decltype(call(std::declval<certfleet::acme::AcmeClient&>())) {
    if (!client_) {
      return certfleet::failedPrecondition(std::string(kContext) + ": used before configure()");
    }
    try {
      auto result = call(*client_);
      if (result.ok()) {
        return result;
      }
      if constexpr (std::is_same_v<decltype(result), certfleet::Status>) {
        return result.withContext(kContext);
      } else {
        return result.status().withContext(kContext);
      }
    } catch (const std::exception& error) {
      return unexpected(error.what());
    } catch (...) {
      return unexpected("unknown exception");
    }
  }

  certfleet::Status configureOrFail(const certfleet::Settings& settings,
                                    certfleet::Services& services) {
    certfleet::acme::ClientConfig config;

    // A misspelt key would otherwise silently fall back to its default.
    static const std::set<std::string> kKnown = {
        "directory", "email",        "terms_agreed",    "account_key_type", "poll_timeout",
        "eab_kid",   "eab_hmac_key", "preferred_chain", "profile"};
    for (const auto& [key, entry] : settings.entries()) {
      if (kKnown.count(key) == 0) {
        return settings.error(key, "unknown setting '" + key +
                                       "' (takes directory, email, terms_agreed, "
                                       "account_key_type, poll_timeout, eab_kid, eab_hmac_key, "
                                       "preferred_chain, profile)");
      }
    }

    certfleet::Result<std::string> directory = settings.require("directory");
    if (!directory.ok()) {
      return directory.status();
    }
    // RFC 8555 section 6.1: ACME runs over HTTPS only.
    if (directory->rfind("https://", 0) != 0) {
      return settings.error("directory",
                            "'directory' must be an https:// URL, got '" + *directory + "'");
    }
    config.directory_url = *directory;

    std::string email_text = settings.getOr("email", "");
    if (!email_text.empty()) {
      std::optional<std::string> email = emailAddress(email_text);
      if (!email) {
        return settings.error(
            "email",
            "'email' must be one address such as ops@example.test, got '" + email_text + "'");
      }
      config.email = *email;
    }

    certfleet::Result<bool> terms = settings.getBool("terms_agreed", true);
    if (!terms.ok()) {
      return terms.status();
    }
    config.terms_agreed = *terms;

    std::string key_type = settings.getOr("account_key_type", "ec-256");
    std::optional<certfleet::acme::KeyKind> kind = certfleet::acme::parseKeyKind(key_type);
    if (!kind) {
      return settings.error("account_key_type",
                            "'account_key_type' must be ec-256 or ec-384, got '" + key_type + "'");
    }
    config.key_kind = *kind;

    certfleet::Result<std::chrono::milliseconds> poll_timeout =
        settings.getDuration("poll_timeout", std::chrono::seconds(120));
    if (!poll_timeout.ok()) {
      return poll_timeout.status();
    }
    if (poll_timeout->count() <= 0) {
      return settings.error("poll_timeout", "'poll_timeout' must be longer than zero");
    }
    config.poll_timeout = *poll_timeout;

    // External account binding comes as a pair: a key ID and its MAC key.
    if (settings.has("eab_kid") != settings.has("eab_hmac_key")) {
      const char* missing = settings.has("eab_kid") ? "eab_hmac_key" : "eab_kid";
      return settings.error(missing, std::string("'eab_kid' and 'eab_hmac_key' go together: '") +
                                         missing + "' is missing");
    }
    if (settings.has("eab_kid")) {
      certfleet::Result<std::string> kid = settings.require("eab_kid");
      if (!kid.ok()) {
        return kid.status();
      }
      certfleet::Result<certfleet::Secret> key = settings.requireSecret("eab_hmac_key");
      if (!key.ok()) {
        return key.status();
      }
      std::optional<std::string> bytes = certfleet::acme::base64urlDecode(key->reveal());
      if (!bytes || bytes->empty()) {
        return settings.error("eab_hmac_key",
                              "'eab_hmac_key' must be the base64url MAC key the CA issued");
      }
      config.eab_kid = *kid;
      config.eab_hmac_key = certfleet::Secret(std::move(*bytes));
    }

    config.preferred_chain = settings.getOr("preferred_chain", "");
    config.profile = settings.getOr("profile", "");

    client_ = std::make_unique<certfleet::acme::AcmeClient>(std::move(config), services);
    return {};
  }

  std::unique_ptr<certfleet::acme::AcmeClient> client_;
};

}  // namespace

CERTFLEET_PLUGIN("acme", certfleet::Stage::kCa, "0.2.0", AcmePlugin)
