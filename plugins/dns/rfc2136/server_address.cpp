#include "server_address.hpp"

#include <algorithm>

#include <arpa/inet.h>
#include <netinet/in.h>

namespace certfleet::rfc2136 {
namespace {

bool parsePort(const std::string& text, std::uint16_t* port) {
  if (text.empty() || text.size() > 5) {
    return false;
  }
  unsigned long value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      return false;
    }
    value = value * 10 + static_cast<unsigned long>(c - '0');
  }
  if (value == 0 || value > 65535) {
    return false;
  }
  *port = static_cast<std::uint16_t>(value);
  return true;
}

Status badServer(const std::string& text) {
  return invalidArgument(
      "server must be an IPv4 or IPv6 address with an optional port "
      "(127.0.0.1:5300, [::1]:53), got '" +
      text + "'");
}

}  // namespace

Result<ServerAddress> parseServerAddress(const std::string& text) {
  std::string host = text;
  std::string port_text;
  bool bracketed = false;
  if (!text.empty() && text.front() == '[') {
    std::size_t close = text.find(']');
    if (close == std::string::npos) {
      return badServer(text);
    }
    host = text.substr(1, close - 1);
    std::string rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        return badServer(text);
      }
      port_text = rest.substr(1);
      if (port_text.empty()) {
        return badServer(text);
      }
    }
    bracketed = true;
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    // One colon separates an IPv4 address from its port; more than one is a bare IPv6.
    std::size_t colon = text.find(':');
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (port_text.empty()) {
      return badServer(text);
    }
  }

  std::uint16_t port = 53;
  if (!port_text.empty() && !parsePort(port_text, &port)) {
    return badServer(text);
  }

  ServerAddress address;
  in_addr v4{};
  in6_addr v6{};
  if (!bracketed && inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    auto* socket_address = reinterpret_cast<sockaddr_in*>(&address.socket_address);
    socket_address->sin_family = AF_INET;
    socket_address->sin_port = htons(port);
    socket_address->sin_addr = v4;
    address.socket_address_length = sizeof(sockaddr_in);
    address.text = host + ":" + std::to_string(port);
    return address;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    auto* socket_address = reinterpret_cast<sockaddr_in6*>(&address.socket_address);
    socket_address->sin6_family = AF_INET6;
    socket_address->sin6_port = htons(port);
    socket_address->sin6_addr = v6;
    address.socket_address_length = sizeof(sockaddr_in6);
    address.text = "[" + host + "]:" + std::to_string(port);
    return address;
  }
  return badServer(text);
}

}  // namespace certfleet::rfc2136
