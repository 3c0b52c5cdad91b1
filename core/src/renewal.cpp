#include "renewal.hpp"

namespace certfleet {

std::int64_t renewalMoment(std::int64_t not_before, std::int64_t not_after) {
  std::int64_t lifetime = not_after - not_before;
  constexpr std::int64_t kTenDays = std::int64_t{10} * 24 * 3600;
  std::int64_t keep = lifetime < kTenDays ? lifetime / 2 : lifetime / 3;
  return not_after - keep;
}

std::string joinNames(const std::vector<std::string>& names) {
  std::string joined;
  for (const std::string& name : names) {
    joined += (joined.empty() ? "" : ",") + name;
  }
  return joined;
}

RenewalDecision decideRenewal(const HostConfig& host,
                              const std::optional<HostRecord>& record,
                              bool has_current_pair,
                              std::int64_t now,
                              bool force) {
  RenewalDecision decision;
  auto issue = [&](std::string reason) {
    decision.issue = true;
    decision.deploy = true;
    decision.reason = std::move(reason);
    return decision;
  };

  if (!record || record->fingerprint.empty()) {
    return issue(force ? "forced" : "no certificate yet");
  }
  decision.renew_at = renewalMoment(record->not_before, record->not_after);
  if (force) {
    return issue("forced");
  }
  if (!has_current_pair) {
    return issue("key or chain missing from the key store");
  }
  if (record->names != joinNames(host.target.names)) {
    return issue("names changed");
  }
  if (record->key_type != keyTypeName(host.key_type)) {
    return issue("key type changed");
  }
  if (now >= decision.renew_at) {
    return issue(now >= record->not_after ? "expired" : "inside the renewal window");
  }
  if (record->deployed_fingerprint != record->fingerprint) {
    decision.deploy = true;
    decision.reason = "current certificate not deployed yet";
    return decision;
  }
  decision.reason = "up to date";
  return decision;
}

}  // namespace certfleet
