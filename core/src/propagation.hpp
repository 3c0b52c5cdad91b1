// Confirms DNS-01 records are visible on authoritative nameservers before a challenge is
// answered: asking the servers directly (no recursion, no cache) and polling with a
// growing interval until a deadline, never sleeping a fixed time.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "certfleet/plugin.hpp"

namespace certfleet {

struct Nameserver {
  std::string address;  // IPv4 or IPv6 literal
  std::uint16_t port = 53;
};

// Parses "127.0.0.1", "127.0.0.1:5300" or "[::1]:5300".
Result<Nameserver> parseNameserver(const std::string& text);

class PropagationChecker {
 public:
  explicit PropagationChecker(std::vector<Nameserver> nameservers);

  // Returns once every record's value is served by every nameserver. On timeout the
  // error names each record and the server that still lacks it.
  Status waitForRecords(const std::vector<TxtRecord>& records,
                        std::chrono::steady_clock::time_point deadline) const;

  // One round: true when every nameserver serves `record.value` at `record.fqdn`.
  Result<bool> isVisible(const TxtRecord& record) const;

 private:
  std::vector<Nameserver> nameservers_;
};

}  // namespace certfleet
