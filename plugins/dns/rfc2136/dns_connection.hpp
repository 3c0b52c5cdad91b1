// DNS over TCP to one server: a 16-bit length, then the message (RFC 1035 4.2.2, RFC 7766).
//
// TCP rather than UDP because an update for a large batch does not fit a UDP datagram, and
// truncation is no option for an update. One connection carries every exchange of a call.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "certfleet/status.hpp"

#include "server_address.hpp"

namespace certfleet::rfc2136 {

class DnsConnection {
 public:
  DnsConnection(ServerAddress server, std::chrono::milliseconds timeout);
  ~DnsConnection();
  DnsConnection(const DnsConnection&) = delete;
  DnsConnection& operator=(const DnsConnection&) = delete;

  // Sends one message and returns the raw reply. `timeout` bounds each exchange, connect
  // included. Failures are kUnavailable and name the server.
  Result<std::vector<std::uint8_t>> exchange(const std::vector<std::uint8_t>& message);

  const ServerAddress& server() const { return server_; }

 private:
  using Clock = std::chrono::steady_clock;

  // `peer_closed` tells a server that dropped an idle connection apart from a real failure.
  Result<std::vector<std::uint8_t>> exchangeOnce(const std::vector<std::uint8_t>& message,
                                                 bool* peer_closed);
  Status connect(Clock::time_point deadline);
  Status waitFor(short events, Clock::time_point deadline);
  Status writeAll(const std::uint8_t* data, std::size_t size, Clock::time_point deadline);
  Status readExactly(std::uint8_t* data,
                     std::size_t size,
                     Clock::time_point deadline,
                     bool* peer_closed);
  Status systemError(const char* what, int error) const;
  void close();

  ServerAddress server_;
  std::chrono::milliseconds timeout_;
  int fd_ = -1;
};

// "10s", "1500ms": how long we waited, for messages.
std::string formatDuration(std::chrono::milliseconds duration);

}  // namespace certfleet::rfc2136
