// The account key and the signed requests of RFC 8555: JWK (RFC 7517), JWS in the flattened
// JSON serialization (RFC 7515), the key thumbprint (RFC 7638) and unpadded base64url.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/evp.h>

#include "certfleet/plugin.hpp"

namespace certfleet::acme {

// Unpadded base64url (RFC 4648 section 5), as every binary field in ACME is written.
std::string base64url(std::string_view bytes);

// The bytes of base64url text, padded or not; nullopt when `text` is not base64url.
std::optional<std::string> base64urlDecode(std::string_view text);

// The raw 32-byte SHA-256 digest.
std::string sha256(std::string_view data);

enum class KeyKind {
  kEc256,
  kEc384,
};

// "ec-256" or "ec-384", as the `account_key_type` setting spells it.
std::optional<KeyKind> parseKeyKind(std::string_view text);

// An ECDSA account key. Immutable once made, so several threads may sign with it at once.
class AccountKey {
 public:
  static Result<AccountKey> generate(KeyKind kind);
  static Result<AccountKey> fromPem(const Secret& pem);

  // PKCS#8 PEM.
  Result<Secret> toPem() const;

  KeyKind kind() const { return kind_; }

  // The JWS "alg": ES256 or ES384.
  const char* algorithm() const;

  // The public key as a JWK whose members are in the canonical order of RFC 7638, so the
  // same text serves in the JWS header and as the thumbprint input.
  const std::string& jwk() const { return jwk_; }

  // base64url(SHA-256(jwk)): the account's half of every key authorization.
  const std::string& thumbprint() const { return thumbprint_; }

  // The JWS signature of `input`: r || s, each left-padded to the curve size (RFC 7518
  // section 3.4), not OpenSSL's DER.
  Result<std::string> sign(std::string_view input) const;

 private:
  struct KeyDeleter {
    void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
  };

  AccountKey(std::shared_ptr<EVP_PKEY> key, KeyKind kind);
  static Result<AccountKey> fromKey(EVP_PKEY* key);

  std::shared_ptr<EVP_PKEY> key_;
  KeyKind kind_;
  std::string jwk_;
  std::string thumbprint_;
};

// A flattened JWS for `url`, signed by `key`. With an empty `kid` the header carries the
// public key itself (newAccount); otherwise the account URL. `payload` absent means
// POST-as-GET: an empty payload, not "{}".
Result<std::string> signJws(const AccountKey& key,
                            const std::string& url,
                            const std::string& nonce,
                            const std::string& kid,
                            const std::optional<std::string>& payload);

// The inner JWS of a key change (RFC 8555 section 7.3.5): signed by `new_key`, with its JWK
// in the header and no nonce, over {account, oldKey}.
Result<std::string> signKeyChange(const AccountKey& new_key,
                                  const std::string& url,
                                  const std::string& account_url,
                                  const AccountKey& old_key);

// The externalAccountBinding of a new account (RFC 8555 section 7.3.4): a JWS over the
// account key's JWK, MACed with HS256 under the key the CA handed out with `kid`.
Result<std::string> signExternalAccountBinding(const std::string& kid,
                                               const Secret& hmac_key,
                                               const std::string& url,
                                               const AccountKey& account_key);

// The dns-01 TXT value: base64url(SHA-256(token "." thumbprint)) (RFC 8555 section 8.4).
std::string dns01Value(const std::string& token, const std::string& thumbprint);

}  // namespace certfleet::acme
