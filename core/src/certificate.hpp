// Reading certificates the CA returned, with OpenSSL.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "certfleet/plugin.hpp"

namespace certfleet {

struct CertificateInfo {
  std::string serial;           // hex, upper case
  std::int64_t not_before = 0;  // unix seconds
  std::int64_t not_after = 0;
  std::string fingerprint;         // SHA-256 of the leaf's DER, hex
  std::vector<std::string> names;  // DNS subject alternative names
  std::string leaf_pem;
  std::size_t chain_length = 0;
};

// Parses a PEM chain, leaf first.
Result<CertificateInfo> inspectChain(const std::string& fullchain_pem);

// Fails unless the private key is the one the leaf certifies.
Status checkKeyMatches(const Secret& key_pem, const std::string& leaf_pem);

}  // namespace certfleet
