// The client side of RFC 8555 for one CA directory: account (with external account binding,
// key rollover and deactivation), orders, authorizations, finalization, download with a
// preferred chain, revocation, and RFC 9773 renewal information. All HTTP goes through
// Services::http.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "certfleet/plugin.hpp"

#include "account_store.hpp"
#include "jws.hpp"

namespace certfleet::acme {

struct ClientConfig {
  std::string directory_url;
  std::string email;  // without "mailto:"; empty for none
  bool terms_agreed = true;
  KeyKind key_kind = KeyKind::kEc256;
  std::chrono::milliseconds poll_timeout{std::chrono::seconds(120)};
  std::string eab_kid;          // empty: no external account binding
  Secret eab_hmac_key;          // the decoded MAC key
  std::string preferred_chain;  // issuer CN of the chain's top certificate; empty: default
  std::string profile;          // empty: the CA's default
};

// Safe to use from several threads at once: the nonce pool, the directory and the account
// each have their own lock. Only fetching the directory and changing the account (register,
// roll over, deactivate) hold one while waiting for the CA, since every other request needs
// their result anyway.
class AcmeClient {
 public:
  AcmeClient(ClientConfig config, Services& services);

  // Loads or creates the account key and account; later calls return at once.
  Status prepareAccount();

  Result<Order> newOrder(const std::vector<std::string>& names,
                         const std::string& replaces_certificate_pem);
  Status answerChallenge(const Authorization& authorization);
  Status awaitAuthorization(const Authorization& authorization);
  Result<std::string> finalize(const Order& order, const std::string& csr_pem);
  Result<RenewalWindow> renewalInfo(const std::string& certificate_pem);
  Status revoke(const std::string& certificate_pem, RevocationReason reason);
  Status rolloverAccountKey();
  Status deactivateAccount();

 private:
  struct Directory {
    std::string new_nonce;
    std::string new_account;
    std::string new_order;
    std::string revoke_cert;
    std::string key_change;
    std::string renewal_info;  // empty when the CA offers no RFC 9773 renewal information
    bool external_account_required = false;
    std::optional<std::vector<std::string>> profiles;  // nullopt when meta.profiles is absent
  };

  // A CA response; `json` is null unless the body was JSON.
  struct Reply {
    HttpResponse http;
    nlohmann::json json;
  };

  struct Account {
    std::shared_ptr<const AccountKey> key;
    std::string url;  // the "kid"
  };

  // Builds the request anew for every attempt (a signed one needs a fresh nonce).
  using RequestBuilder = std::function<Result<HttpRequest>()>;

  // Sends the request until the answer is final: again at once after badNonce; again after
  // a short, doubling pause after a transport failure, a 5xx or serverInternal (a few tries);
  // again after Retry-After for rateLimited, 429 or 503 when that wait ends before the
  // deadline, otherwise an `unavailable` error naming when a retry can succeed.
  Result<Reply> exchange(const RequestBuilder& build);

  Result<Directory> directory();
  Result<Account> account();
  Result<std::shared_ptr<const AccountKey>> loadOrCreateKey();
  // Called with account_mutex_ held.
  Status registerAccount(const Directory& directory);
  Status deactivatedError(const std::string& account_url);

  // After the CA refused `refused_url`: registers the key again if that URL came from the
  // state directory and this run has not done so yet. True when the request should be
  // repeated with the account as it is now.
  Result<bool> renewStoredAccount(const std::string& refused_url, const std::string& reason);

  Result<std::string> takeNonce(const Directory& directory);
  void keepNonce(const HttpResponse& response);

  // One signed POST through exchange(). An empty account URL signs with the JWK. HTTP
  // errors come back as replies.
  Result<Reply> post(const std::string& url,
                     const std::optional<std::string>& payload,
                     const Account& account,
                     const std::string& accept);

  // A POST as the account; a stored account the CA no longer knows is registered again
  // once. Problem documents (except one of type `tolerated`) and unexpected statuses
  // become errors about `what`.
  Result<Reply> accountPost(const std::string& url,
                            const std::optional<std::string>& payload,
                            const std::string& what,
                            const std::string& accept = "",
                            const std::string& tolerated = "");

  // POST-as-GET of `url` until `settled` holds for its object, with a growing interval,
  // Retry-After honoured, up to the poll timeout or the run's deadline. `first_wait` is the
  // Retry-After of the answer that started the wait (finalize's), honoured before the first
  // poll.
  Result<nlohmann::json> poll(const std::string& url,
                              const std::string& what,
                              const std::function<bool(const nlohmann::json&)>& settled,
                              std::optional<std::chrono::milliseconds> first_wait = std::nullopt);

  // The chain to return: the default one, or an alternate whose top issuer is the
  // preferred one.
  Result<std::string> chooseChain(const Reply& download, const std::string& what);

  AccountStore accountStore();
  std::chrono::milliseconds requestTimeout();
  // Logs `why` and sleeps for `wait` unless that would pass the deadline; false when it
  // would.
  bool pauseBeforeDeadline(std::chrono::milliseconds wait, LogLevel level, const std::string& why);
  void log(LogLevel level, const std::string& message);

  ClientConfig config_;
  Services& services_;

  std::mutex directory_mutex_;
  std::optional<Directory> directory_;

  std::mutex nonce_mutex_;
  std::vector<std::string> nonces_;

  std::mutex account_mutex_;
  std::shared_ptr<const AccountKey> key_;
  std::string account_url_;
  bool account_from_store_ = false;  // not yet confirmed by the CA in this run
  bool registered_again_ = false;
  std::string deactivated_url_;  // set once the account is known to be deactivated
};

}  // namespace certfleet::acme
