#include "certificate.hpp"

#include <ctime>
#include <memory>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace certfleet {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* certificate) const { X509_free(certificate); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::int64_t toUnixTime(const ASN1_TIME* time) {
  std::tm parsed{};
  if (ASN1_TIME_to_tm(time, &parsed) != 1) {
    return 0;
  }
  return static_cast<std::int64_t>(timegm(&parsed));
}

std::string toHex(const unsigned char* bytes, std::size_t length) {
  static const char kDigits[] = "0123456789abcdef";
  std::string text;
  text.reserve(length * 2);
  for (std::size_t i = 0; i < length; ++i) {
    text += kDigits[bytes[i] >> 4];
    text += kDigits[bytes[i] & 0x0f];
  }
  return text;
}

}  // namespace

Result<CertificateInfo> inspectChain(const std::string& fullchain_pem) {
  BioPtr in(BIO_new_mem_buf(fullchain_pem.data(), static_cast<int>(fullchain_pem.size())));
  X509Ptr leaf(PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr));
  if (!leaf) {
    ERR_clear_error();
    return invalidArgument("certificate chain holds no PEM certificate");
  }
  CertificateInfo info;
  info.chain_length = 1;
  while (X509Ptr(PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr))) {
    ++info.chain_length;
  }
  ERR_clear_error();

  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(leaf.get()), nullptr);
  if (serial != nullptr) {
    char* hex = BN_bn2hex(serial);
    info.serial = hex != nullptr ? hex : "";
    OPENSSL_free(hex);
    BN_free(serial);
  }
  info.not_before = toUnixTime(X509_get0_notBefore(leaf.get()));
  info.not_after = toUnixTime(X509_get0_notAfter(leaf.get()));

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  X509_digest(leaf.get(), EVP_sha256(), digest, &digest_length);
  info.fingerprint = toHex(digest, digest_length);

  auto* alt_names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf.get(), NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; alt_names != nullptr && i < sk_GENERAL_NAME_num(alt_names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(alt_names, i);
    if (name->type == GEN_DNS) {
      const ASN1_STRING* text = name->d.dNSName;
      info.names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(text)),
                              static_cast<std::size_t>(ASN1_STRING_length(text)));
    }
  }
  GENERAL_NAMES_free(alt_names);

  BioPtr out(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(out.get(), leaf.get());
  char* data = nullptr;
  long length = BIO_get_mem_data(out.get(), &data);
  info.leaf_pem.assign(data, static_cast<std::size_t>(length));
  return info;
}

Status checkKeyMatches(const Secret& key_pem, const std::string& leaf_pem) {
  BioPtr key_in(
      BIO_new_mem_buf(key_pem.reveal().data(), static_cast<int>(key_pem.reveal().size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(key_in.get(), nullptr, nullptr, nullptr));
  BioPtr leaf_in(BIO_new_mem_buf(leaf_pem.data(), static_cast<int>(leaf_pem.size())));
  X509Ptr leaf(PEM_read_bio_X509(leaf_in.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key || !leaf) {
    return invalidArgument("cannot parse the key or the certificate");
  }
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return failedPrecondition("the private key does not match the certificate");
  }
  return {};
}

}  // namespace certfleet
