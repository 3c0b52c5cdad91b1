// Deciding, per host, whether a run must issue, deploy, or leave it alone. Pure logic:
// no clock, no I/O, so every rule is unit tested.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "pipeline.hpp"
#include "state_store.hpp"

namespace certfleet {

struct RenewalDecision {
  bool issue = false;   // order a new certificate
  bool deploy = false;  // push the current pair (implied by issue)
  std::string reason;
  std::int64_t renew_at = 0;  // when the current certificate becomes due; 0 if none
};

// A third of the lifetime left, or half for certificates shorter than 10 days, so that a
// 90-day certificate renews 30 days before expiry and a 6-day one with 3 days left.
std::int64_t renewalMoment(std::int64_t not_before, std::int64_t not_after);

// `has_current_pair` says whether the key store still holds the current key and chain.
RenewalDecision decideRenewal(const HostConfig& host,
                              const std::optional<HostRecord>& record,
                              bool has_current_pair,
                              std::int64_t now,
                              bool force);

// When a recorded certificate becomes due, and by which rule: "ari" (the CA's window) or
// "lifetime" (a third left); 0 and "" without a certificate.
std::int64_t renewalAt(const HostRecord& record);
std::string renewalBasis(const HostRecord& record);

std::string joinNames(const std::vector<std::string>& names);

}  // namespace certfleet
