// The client side of RFC 8555 for one CA directory: account, orders, authorizations,
// finalization and download. All HTTP goes through Services::http.
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
};

// Safe to use from several threads at once: the nonce pool, the directory and the account
// each have their own lock. Only fetching the directory and registering the account hold
// one while waiting for the CA, since every other request needs their result anyway.
class AcmeClient {
 public:
  AcmeClient(ClientConfig config, Services& services);

  // Loads or creates the account key and account; later calls return at once.
  Status prepareAccount();

  Result<Order> newOrder(const std::vector<std::string>& names);
  Status answerChallenge(const Authorization& authorization);
  Status awaitAuthorization(const Authorization& authorization);
  Result<std::string> finalize(const Order& order, const std::string& csr_pem);

 private:
  struct Directory {
    std::string new_nonce;
    std::string new_account;
    std::string new_order;
    bool external_account_required = false;
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

  Result<Directory> directory();
  Result<Account> account();
  Result<std::shared_ptr<const AccountKey>> loadOrCreateKey();
  // Called with account_mutex_ held.
  Status registerAccount(const Directory& directory);

  // After the CA refused `refused_url`: registers the key again if that URL came from the
  // state directory and this run has not done so yet. True when the request should be
  // repeated with the account as it is now.
  Result<bool> renewStoredAccount(const std::string& refused_url, const std::string& reason);

  Result<std::string> takeNonce(const Directory& directory);
  void keepNonce(const HttpResponse& response);

  // One signed POST, repeated with a fresh nonce while the CA answers badNonce. An empty
  // `kid` signs with the JWK. HTTP errors come back as replies.
  Result<Reply> post(const std::string& url,
                     const std::optional<std::string>& payload,
                     const Account& account,
                     const std::string& accept);

  // A POST as the account; a stored account the CA no longer knows is registered again
  // once. Problem documents and unexpected statuses become errors about `what`.
  Result<Reply> accountPost(const std::string& url,
                            const std::optional<std::string>& payload,
                            const std::string& what,
                            const std::string& accept = "");

  // POST-as-GET of `url` until `settled` holds for its object, with a growing interval,
  // Retry-After honoured, up to the poll timeout or the run's deadline.
  Result<nlohmann::json> poll(const std::string& url,
                              const std::string& what,
                              const std::function<bool(const nlohmann::json&)>& settled);

  AccountStore accountStore();
  std::chrono::milliseconds requestTimeout();
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
};

}  // namespace certfleet::acme
