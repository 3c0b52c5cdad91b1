#include "renewal.hpp"

#include <ctime>

namespace certfleet {
namespace {

std::string formatUtc(std::int64_t seconds) {
  std::time_t time = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&time, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

}  // namespace

std::int64_t renewalMoment(std::int64_t not_before, std::int64_t not_after) {
  std::int64_t lifetime = not_after - not_before;
  constexpr std::int64_t kTenDays = std::int64_t{10} * 24 * 3600;
  std::int64_t keep = lifetime < kTenDays ? lifetime / 2 : lifetime / 3;
  return not_after - keep;
}

std::int64_t renewalAt(const HostRecord& record) {
  if (record.not_after == 0) {
    return 0;
  }
  return record.ari_renew_at != 0 ? record.ari_renew_at
                                  : renewalMoment(record.not_before, record.not_after);
}

std::string renewalBasis(const HostRecord& record) {
  if (record.not_after == 0) {
    return "";
  }
  return record.ari_renew_at != 0 ? "ari" : "lifetime";
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

  if (force) {
    if (record && !record->fingerprint.empty()) {
      decision.renew_at = renewalMoment(record->not_before, record->not_after);
    }
    return issue("forced");
  }
  // A failed issuance is not retried on every run: the CA counts failed orders and
  // duplicate certificates against the account.
  bool backing_off = record && record->next_attempt > now;
  std::string backoff_reason = backing_off
                                   ? "backing off after " + std::to_string(record->failures) +
                                         " failed issuance(s) until " +
                                         formatUtc(record->next_attempt) + " (--force retries now)"
                                   : "";
  auto issueUnlessBackingOff = [&](std::string reason) {
    if (!backing_off) {
      return issue(std::move(reason));
    }
    decision.reason = reason + ", but " + backoff_reason;
    return decision;
  };

  if (!record || record->fingerprint.empty()) {
    return issueUnlessBackingOff("no certificate yet");
  }
  bool by_ari = record->ari_renew_at != 0;
  decision.renew_at =
      by_ari ? record->ari_renew_at : renewalMoment(record->not_before, record->not_after);
  if (record->revoked) {
    return issueUnlessBackingOff("the certificate was revoked");
  }
  if (!has_current_pair) {
    return issueUnlessBackingOff("key or chain missing from the key store");
  }
  if (record->names != joinNames(host.target.names)) {
    return issueUnlessBackingOff("names changed");
  }
  if (record->key_type != keyTypeName(host.key_type)) {
    return issueUnlessBackingOff("key type changed");
  }
  if (now >= record->not_after) {
    return issueUnlessBackingOff("expired");
  }
  if (now >= decision.renew_at) {
    return issueUnlessBackingOff(by_ari ? "inside the CA's renewal window (ARI)"
                                        : "a third of the lifetime left");
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
