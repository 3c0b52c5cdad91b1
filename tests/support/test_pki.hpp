// Throwaway keys and self-signed certificates for tests, made with OpenSSL in memory.
#pragma once

#include <string>

namespace certfleet::testing {

struct SelfSigned {
  std::string key_pem;
  std::string cert_pem;
};

// A fresh EC P-256 key and a self-signed certificate for `name`, valid for `days`.
SelfSigned makeSelfSigned(const std::string& name, int days = 30);

}  // namespace certfleet::testing
