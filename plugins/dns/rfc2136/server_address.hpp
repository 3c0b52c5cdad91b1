// The DNS server a plugin talks to, written in the pipeline as an address literal.
#pragma once

#include <cstdint>
#include <string>

#include "certfleet/status.hpp"

#include <sys/socket.h>

namespace certfleet::rfc2136 {

struct ServerAddress {
  sockaddr_storage socket_address{};
  socklen_t socket_address_length = 0;
  std::string text;  // "127.0.0.1:5300" or "[::1]:53", for messages
};

// Parses "127.0.0.1", "127.0.0.1:5300", "::1", "[::1]" or "[::1]:5300"; the port defaults
// to 53. Host names are refused: resolving them would need a resolver the plugin must not
// pick on its own.
Result<ServerAddress> parseServerAddress(const std::string& text);

}  // namespace certfleet::rfc2136
