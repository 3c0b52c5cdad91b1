// Confirms DNS-01 records are visible on authoritative nameservers before a challenge is
// answered: asking the servers directly (no recursion, no cache) and polling with a
// growing interval until a deadline, never sleeping a fixed time.
//
// The servers are either the pipeline's `propagation.nameservers`, or found per record:
// the record's zone, then every address of that zone's NS set (discoverChecks).
//
//   DiscoveredChecks plan = discoverChecks(lookup, records);
//   PropagationReport report = waitForPropagation(plan.groups, deadline);
//   // report.missing: each record some server still lacks, and which servers
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "certfleet/plugin.hpp"

#include "dns_lookup.hpp"
#include "pipeline.hpp"

namespace certfleet {

// Records that must each be served by every one of `servers`: the records of one zone, or
// of several zones that share their nameservers.
struct CheckGroup {
  std::vector<Nameserver> servers;
  std::vector<TxtRecord> records;
};

struct MissingRecord {
  TxtRecord record;
  std::string where;  // "127.0.0.3:53, 127.0.0.4:53 (answered SERVFAIL)"
};

struct PropagationReport {
  Status status;  // ok once every record was seen on every server of its group
  std::vector<MissingRecord> missing;
  std::size_t records = 0;
  std::size_t servers = 0;  // distinct servers asked
  std::chrono::milliseconds waited{0};
};

// Polls all groups together until every server serves every record of its group, the
// deadline passes, or `stop` (checked between queries) returns true. The first round
// always completes, so records already in place pass even when the deadline has gone by.
PropagationReport waitForPropagation(const std::vector<CheckGroup>& groups,
                                     std::chrono::steady_clock::time_point deadline,
                                     const std::function<bool()>& stop = nullptr);

struct DiscoveredChecks {
  std::vector<CheckGroup> groups;
  std::vector<std::pair<TxtRecord, Status>> failed;  // zone or nameservers not found
  std::vector<std::string> warnings;                 // NS names without an address
};

// Finds each record's zone and that zone's authoritative servers, and groups the records
// by the set of servers that must serve them.
DiscoveredChecks discoverChecks(const DnsLookup& lookup, const std::vector<TxtRecord>& records);

// The lookups a run makes, through `config.resolvers`, or through /etc/resolv.conf's
// servers when it names none.
Result<std::unique_ptr<DnsLookup>> makeDnsLookup(const PropagationConfig& config);

// Whether a CNAME at _acme-challenge.<name> is followed for a host without a challenge
// alias: whenever the run looks names up anyway (resolvers named, or servers discovered).
// A pipeline that lists nameservers and no resolvers makes no lookup of its own.
bool followsCnames(const PropagationConfig& config);

struct ConfirmOutcome {
  std::vector<std::pair<TxtRecord, Status>> failed;  // records not confirmed, and why
  std::vector<std::string> warnings;
  std::vector<std::string> plan;  // which records are asked of which servers, one per group
  std::string summary;            // "confirmed 200 record(s) on 2 server(s) in 35 ms"
};

// Confirms a run's records as `config` says: on `config.nameservers`, or on every
// authoritative server of each record's zone found with `lookup`; one wait for the whole
// batch, then `config.settle`. `stop` ends the wait early (an interrupted run).
ConfirmOutcome confirmRecords(const PropagationConfig& config,
                              const DnsLookup* lookup,
                              const std::vector<TxtRecord>& records,
                              std::chrono::steady_clock::time_point deadline,
                              const std::function<bool()>& stop);

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
