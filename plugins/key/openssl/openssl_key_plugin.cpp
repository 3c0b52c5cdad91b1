// The `key` stage: private keys and CSRs with OpenSSL 3.
#include <memory>
#include <string>
#include <vector>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certfleet/plugin.hpp"

namespace {

using certfleet::KeyType;
using certfleet::Result;
using certfleet::Secret;
using certfleet::Status;

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509ReqDeleter {
  void operator()(X509_REQ* request) const { X509_REQ_free(request); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using RequestPtr = std::unique_ptr<X509_REQ, X509ReqDeleter>;

std::string openSslError(const std::string& what) {
  unsigned long code = ERR_get_error();
  char reason[256] = "unknown error";
  if (code != 0) {
    ERR_error_string_n(code, reason, sizeof(reason));
  }
  ERR_clear_error();
  return "key.openssl: " + what + ": " + reason;
}

std::string bioContents(BIO* bio) {
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(length));
}

KeyPtr makeKey(KeyType type) {
  switch (type) {
    case KeyType::kEcP256:
      return KeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    case KeyType::kEcP384:
      return KeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384"));
    case KeyType::kRsa2048:
      return KeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048)));
    case KeyType::kRsa3072:
      return KeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(3072)));
    case KeyType::kRsa4096:
      return KeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(4096)));
  }
  return nullptr;
}

class OpenSslKeyPlugin final : public certfleet::KeyPlugin {
 public:
  Status configure(const certfleet::Settings& settings, certfleet::Services&) override {
    for (const auto& [key, entry] : settings.entries()) {
      return settings.error(key, "takes no settings (the key type is set per host)");
    }
    return {};
  }

  Result<Secret> generateKey(KeyType type) override {
    KeyPtr key = makeKey(type);
    if (!key) {
      return certfleet::internalError(openSslError("generate key"));
    }
    BioPtr out(BIO_new(BIO_s_secmem()));
    if (!out || PEM_write_bio_PrivateKey(out.get(), key.get(), nullptr, nullptr, 0, nullptr,
                                         nullptr) != 1) {
      return certfleet::internalError(openSslError("encode key"));
    }
    Secret pem(bioContents(out.get()));
    return pem;
  }

  Result<std::string> makeCsr(const Secret& key_pem,
                              const std::vector<std::string>& names) override {
    if (names.empty()) {
      return certfleet::invalidArgument("key.openssl: a CSR needs at least one name");
    }
    BioPtr in(BIO_new_mem_buf(key_pem.reveal().data(), static_cast<int>(key_pem.reveal().size())));
    KeyPtr key(PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr));
    if (!key) {
      return certfleet::invalidArgument(openSslError("read private key"));
    }

    RequestPtr request(X509_REQ_new());
    X509_NAME* subject = X509_REQ_get_subject_name(request.get());
    // A CN is limited to 64 bytes; CAs take the names from the SAN extension anyway.
    if (names.front().size() <= 64 &&
        X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(names.front().c_str()),
                                   -1, -1, 0) != 1) {
      return certfleet::internalError(openSslError("set subject"));
    }

    std::string alt_names;
    for (const std::string& name : names) {
      alt_names += (alt_names.empty() ? "DNS:" : ",DNS:") + name;
    }
    STACK_OF(X509_EXTENSION)* extensions = sk_X509_EXTENSION_new_null();
    X509_EXTENSION* san =
        X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, alt_names.c_str());
    if (san == nullptr || extensions == nullptr) {
      sk_X509_EXTENSION_free(extensions);
      return certfleet::invalidArgument(openSslError("subject alternative names"));
    }
    sk_X509_EXTENSION_push(extensions, san);
    int added = X509_REQ_add_extensions(request.get(), extensions);
    sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
    if (added != 1 || X509_REQ_set_pubkey(request.get(), key.get()) != 1 ||
        X509_REQ_sign(request.get(), key.get(), EVP_sha256()) <= 0) {
      return certfleet::internalError(openSslError("sign CSR"));
    }

    BioPtr out(BIO_new(BIO_s_mem()));
    if (PEM_write_bio_X509_REQ(out.get(), request.get()) != 1) {
      return certfleet::internalError(openSslError("encode CSR"));
    }
    return bioContents(out.get());
  }
};

}  // namespace

CERTFLEET_PLUGIN("openssl", certfleet::Stage::kKey, "0.1.0", OpenSslKeyPlugin)
