// HTTPS for plugins, lent through Services::http. libcurl stays on this side of the SDK.
#pragma once

#include <string>

#include "certfleet/plugin.hpp"

namespace certfleet {

class HttpClient {
 public:
  // `ca_bundle` is a PEM file of trusted roots; empty means the system's store.
  explicit HttpClient(std::string ca_bundle);

  // Peer and host name are always verified. A transport failure (refused, TLS, timeout)
  // is kUnavailable naming the URL; any HTTP status is returned as a response.
  Result<HttpResponse> send(const HttpRequest& request) const;

 private:
  std::string ca_bundle_;
};

}  // namespace certfleet
