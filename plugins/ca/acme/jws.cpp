#include "jws.hpp"

#include <array>
#include <cstddef>
#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

namespace certfleet::acme {
namespace {

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct BnDeleter {
  void operator()(BIGNUM* number) const { BN_free(number); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct SigDeleter {
  void operator()(ECDSA_SIG* sig) const { ECDSA_SIG_free(sig); }
};

using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

struct Curve {
  const char* group;  // OpenSSL's name
  const char* crv;    // the JWK's name
  const char* alg;
  std::size_t size;  // bytes per coordinate and per signature half
};

const Curve& curveOf(KeyKind kind) {
  static const Curve kP256{"prime256v1", "P-256", "ES256", 32};
  static const Curve kP384{"secp384r1", "P-384", "ES384", 48};
  return kind == KeyKind::kEc384 ? kP384 : kP256;
}

const EVP_MD* digestOf(KeyKind kind) {
  return kind == KeyKind::kEc384 ? EVP_sha384() : EVP_sha256();
}

// The most recent OpenSSL error, for messages; the queue is cleared so that a later failure
// does not report a stale reason.
std::string opensslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) {
    return "unknown openssl error";
  }
  std::array<char, 256> text{};
  ERR_error_string_n(code, text.data(), text.size());
  return text.data();
}

std::string bnToFixed(const BIGNUM* number, std::size_t size) {
  std::string bytes(size, '\0');
  BN_bn2binpad(number, reinterpret_cast<unsigned char*>(bytes.data()), static_cast<int>(size));
  return bytes;
}

}  // namespace

std::string base64url(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    unsigned int chunk = (static_cast<unsigned char>(bytes[i]) << 16) |
                         (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                         static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(chunk >> 18) & 63];
    out += kAlphabet[(chunk >> 12) & 63];
    out += kAlphabet[(chunk >> 6) & 63];
    out += kAlphabet[chunk & 63];
  }
  std::size_t rest = bytes.size() - i;
  if (rest == 1) {
    unsigned int chunk = static_cast<unsigned char>(bytes[i]) << 16;
    out += kAlphabet[(chunk >> 18) & 63];
    out += kAlphabet[(chunk >> 12) & 63];
  } else if (rest == 2) {
    unsigned int chunk = (static_cast<unsigned char>(bytes[i]) << 16) |
                         (static_cast<unsigned char>(bytes[i + 1]) << 8);
    out += kAlphabet[(chunk >> 18) & 63];
    out += kAlphabet[(chunk >> 12) & 63];
    out += kAlphabet[(chunk >> 6) & 63];
  }
  return out;
}

std::optional<std::string> base64urlDecode(std::string_view text) {
  while (!text.empty() && text.back() == '=') {
    text.remove_suffix(1);
  }
  if (text.size() % 4 == 1) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(text.size() * 3 / 4);
  unsigned int buffer = 0;
  int bits = 0;
  for (char c : text) {
    int value = -1;
    if (c >= 'A' && c <= 'Z') {
      value = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      value = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      value = c - '0' + 52;
    } else if (c == '-' || c == '+') {
      // CAs hand out EAB keys in either alphabet; both decode the same.
      value = 62;
    } else if (c == '_' || c == '/') {
      value = 63;
    } else {
      return std::nullopt;
    }
    buffer = (buffer << 6) | static_cast<unsigned int>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  return out;
}

std::string sha256(std::string_view data) {
  std::string digest(SHA256_DIGEST_LENGTH, '\0');
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(digest.data()), &length,
             EVP_sha256(), nullptr);
  return digest;
}

std::optional<KeyKind> parseKeyKind(std::string_view text) {
  if (text == "ec-256") {
    return KeyKind::kEc256;
  }
  if (text == "ec-384") {
    return KeyKind::kEc384;
  }
  return std::nullopt;
}

AccountKey::AccountKey(std::shared_ptr<EVP_PKEY> key, KeyKind kind)
    : key_(std::move(key)), kind_(kind) {}

Result<AccountKey> AccountKey::generate(KeyKind kind) {
  // EVP_EC_gen is a macro around this call that casts away const.
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curveOf(kind).group);
  if (key == nullptr) {
    return internalError("generate account key: " + opensslError());
  }
  return fromKey(key);
}

Result<AccountKey> AccountKey::fromPem(const Secret& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.reveal().data(), static_cast<int>(pem.reveal().size())));
  if (!bio) {
    return internalError("read account key: out of memory");
  }
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) {
    return invalidArgument("read account key: not a PEM private key: " + opensslError());
  }
  return fromKey(key);
}

// Takes ownership of `key`, checks it is a supported curve and derives the JWK once.
Result<AccountKey> AccountKey::fromKey(EVP_PKEY* raw) {
  std::shared_ptr<EVP_PKEY> key(raw, KeyDeleter());
  if (EVP_PKEY_is_a(raw, "EC") != 1) {
    return invalidArgument("account key: not an EC key");
  }
  std::array<char, 64> group{};
  std::size_t group_length = 0;
  if (EVP_PKEY_get_utf8_string_param(raw, OSSL_PKEY_PARAM_GROUP_NAME, group.data(), group.size(),
                                     &group_length) != 1) {
    return invalidArgument("account key: no named curve");
  }
  std::optional<KeyKind> kind;
  for (KeyKind candidate : {KeyKind::kEc256, KeyKind::kEc384}) {
    if (std::strcmp(group.data(), curveOf(candidate).group) == 0) {
      kind = candidate;
    }
  }
  if (!kind) {
    return invalidArgument(std::string("account key: unsupported curve ") + group.data());
  }

  BIGNUM* raw_x = nullptr;
  BIGNUM* raw_y = nullptr;
  bool have_x = EVP_PKEY_get_bn_param(raw, OSSL_PKEY_PARAM_EC_PUB_X, &raw_x) == 1;
  BnPtr x(raw_x);
  bool have_y = EVP_PKEY_get_bn_param(raw, OSSL_PKEY_PARAM_EC_PUB_Y, &raw_y) == 1;
  BnPtr y(raw_y);
  if (!have_x || !have_y) {
    return internalError("account key: public point: " + opensslError());
  }

  const Curve& curve = curveOf(*kind);
  AccountKey account_key(std::move(key), *kind);
  // RFC 7638 section 3.2: required members only, sorted, no white space.
  account_key.jwk_ = std::string(R"({"crv":")") + curve.crv + R"(","kty":"EC","x":")" +
                     base64url(bnToFixed(x.get(), curve.size)) + R"(","y":")" +
                     base64url(bnToFixed(y.get(), curve.size)) + R"("})";
  account_key.thumbprint_ = base64url(sha256(account_key.jwk_));
  return account_key;
}

Result<Secret> AccountKey::toPem() const {
  // The secure-heap BIO wipes its buffer when freed.
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return internalError("write account key: " + opensslError());
  }
  char* data = nullptr;
  long length = BIO_get_mem_data(bio.get(), &data);
  return Secret(std::string(data, static_cast<std::size_t>(length)));
}

const char* AccountKey::algorithm() const {
  return curveOf(kind_).alg;
}

Result<std::string> AccountKey::sign(std::string_view input) const {
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, digestOf(kind_), nullptr, key_.get()) != 1) {
    return internalError("sign request: " + opensslError());
  }
  std::size_t der_length = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(input.data());
  if (EVP_DigestSign(ctx.get(), nullptr, &der_length, data, input.size()) != 1) {
    return internalError("sign request: " + opensslError());
  }
  std::string der(der_length, '\0');
  auto* der_bytes = reinterpret_cast<unsigned char*>(der.data());
  if (EVP_DigestSign(ctx.get(), der_bytes, &der_length, data, input.size()) != 1) {
    return internalError("sign request: " + opensslError());
  }

  const unsigned char* cursor = der_bytes;
  std::unique_ptr<ECDSA_SIG, SigDeleter> signature(
      d2i_ECDSA_SIG(nullptr, &cursor, static_cast<long>(der_length)));
  if (!signature) {
    return internalError("sign request: unreadable signature: " + opensslError());
  }
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(signature.get(), &r, &s);
  std::size_t size = curveOf(kind_).size;
  return bnToFixed(r, size) + bnToFixed(s, size);
}

Result<std::string> signJws(const AccountKey& key,
                            const std::string& url,
                            const std::string& nonce,
                            const std::string& kid,
                            const std::optional<std::string>& payload) {
  nlohmann::json header = {{"alg", key.algorithm()}, {"nonce", nonce}, {"url", url}};
  if (kid.empty()) {
    header["jwk"] = nlohmann::json::parse(key.jwk());
  } else {
    header["kid"] = kid;
  }

  // A server-chosen nonce or URL that is not UTF-8 must not make dump() throw.
  constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
  std::string protected_b64 = base64url(header.dump(-1, ' ', false, kReplace));
  std::string payload_b64 = payload ? base64url(*payload) : std::string();
  Result<std::string> signature = key.sign(protected_b64 + "." + payload_b64);
  if (!signature.ok()) {
    return signature.status();
  }
  nlohmann::json jws = {
      {"protected", protected_b64}, {"payload", payload_b64}, {"signature", base64url(*signature)}};
  return jws.dump();
}

Result<std::string> signKeyChange(const AccountKey& new_key,
                                  const std::string& url,
                                  const std::string& account_url,
                                  const AccountKey& old_key) {
  nlohmann::json header = {
      {"alg", new_key.algorithm()}, {"jwk", nlohmann::json::parse(new_key.jwk())}, {"url", url}};
  nlohmann::json payload = {{"account", account_url},
                            {"oldKey", nlohmann::json::parse(old_key.jwk())}};
  constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
  std::string protected_b64 = base64url(header.dump(-1, ' ', false, kReplace));
  std::string payload_b64 = base64url(payload.dump(-1, ' ', false, kReplace));
  Result<std::string> signature = new_key.sign(protected_b64 + "." + payload_b64);
  if (!signature.ok()) {
    return signature.status();
  }
  nlohmann::json jws = {
      {"protected", protected_b64}, {"payload", payload_b64}, {"signature", base64url(*signature)}};
  return jws.dump();
}

Result<std::string> signExternalAccountBinding(const std::string& kid,
                                               const Secret& hmac_key,
                                               const std::string& url,
                                               const AccountKey& account_key) {
  nlohmann::json header = {{"alg", "HS256"}, {"kid", kid}, {"url", url}};
  constexpr auto kReplace = nlohmann::json::error_handler_t::replace;
  std::string protected_b64 = base64url(header.dump(-1, ' ', false, kReplace));
  std::string payload_b64 = base64url(account_key.jwk());
  std::string input = protected_b64 + "." + payload_b64;

  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int mac_length = 0;
  const std::string& key = hmac_key.reveal();
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac.data(),
           &mac_length) == nullptr) {
    return internalError("external account binding: " + opensslError());
  }
  std::string signature(reinterpret_cast<const char*>(mac.data()), mac_length);
  OPENSSL_cleanse(mac.data(), mac.size());
  nlohmann::json jws = {
      {"protected", protected_b64}, {"payload", payload_b64}, {"signature", base64url(signature)}};
  return jws.dump();
}

std::string dns01Value(const std::string& token, const std::string& thumbprint) {
  return base64url(sha256(token + "." + thumbprint));
}

}  // namespace certfleet::acme
