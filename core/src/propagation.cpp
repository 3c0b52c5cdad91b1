#include "propagation.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include <ldns/ldns.h>

#include "interrupt.hpp"
#include "ldns_resolver.hpp"

namespace certfleet {
namespace {

using Clock = std::chrono::steady_clock;

// One query should not outlive a lost UDP packet by much; the poll loop retries anyway.
constexpr std::chrono::milliseconds kQueryTimeout{2000};
constexpr std::chrono::milliseconds kFirstInterval{20};
constexpr std::chrono::milliseconds kMaxInterval{1000};
// How many missing records a timeout message spells out before it only counts the rest.
constexpr std::size_t kMaxListedRecords = 10;
// How often a wait between rounds looks at its stop condition.
constexpr std::chrono::milliseconds kStopPoll{25};

// The TXT strings of one record joined, as a DNS-01 validator reads them (RFC 8555 8.4).
std::string txtValue(const ldns_rr* rr) {
  std::string value;
  for (std::size_t i = 0; i < ldns_rr_rd_count(rr); ++i) {
    const ldns_rdf* rdf = ldns_rr_rdf(rr, i);
    const std::uint8_t* data = ldns_rdf_data(rdf);
    std::size_t size = ldns_rdf_size(rdf);
    if (size == 0) {
      continue;
    }
    std::size_t length = std::min<std::size_t>(data[0], size - 1);
    value.append(reinterpret_cast<const char*>(data + 1), length);
  }
  return value;
}

// One question to one server: does it serve `record.value` at `record.fqdn`? An error when
// it could not be asked; `false` with `why` filled when it answered without the value.
Result<bool> askServer(ldns_resolver* resolver,
                       const Nameserver& server,
                       const TxtRecord& record,
                       std::string* why) {
  std::string absolute = record.fqdn;
  if (absolute.empty() || absolute.back() != '.') {
    absolute += '.';
  }
  RdfPtr name(ldns_dname_new_frm_str(absolute.c_str()));
  if (!name) {
    return invalidArgument("record '" + record.fqdn + "' is not a valid dns name");
  }

  ldns_pkt* raw_query = nullptr;
  ldns_status status = ldns_resolver_prepare_query_pkt(&raw_query, resolver, name.get(),
                                                       LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, 0);
  PktPtr query(raw_query);
  if (status != LDNS_STATUS_OK) {
    return internalError("build txt query for " + record.fqdn + ": " +
                         ldns_get_errorstr_by_id(status));
  }
  ldns_pkt* raw_answer = nullptr;
  status = ldns_resolver_send_pkt(&raw_answer, resolver, query.get());
  PktPtr answer(raw_answer);
  if (status != LDNS_STATUS_OK || !answer) {
    return unavailable("query " + describe(server) + " for " + record.fqdn + ": " +
                       (status != LDNS_STATUS_OK ? ldns_get_errorstr_by_id(status) : "no answer"));
  }
  if (ldns_pkt_id(answer.get()) != ldns_pkt_id(query.get())) {
    return unavailable("query " + describe(server) + " for " + record.fqdn +
                       ": the answer does not match the query id");
  }

  ldns_pkt_rcode rcode = ldns_pkt_get_rcode(answer.get());
  if (rcode != LDNS_RCODE_NOERROR && rcode != LDNS_RCODE_NXDOMAIN) {
    const ldns_lookup_table* entry = ldns_lookup_by_id(ldns_rcodes, static_cast<int>(rcode));
    *why = std::string("answered ") + (entry != nullptr ? entry->name : "an error");
    return false;
  }
  const ldns_rr_list* answers = ldns_pkt_answer(answer.get());
  for (std::size_t i = 0; i < ldns_rr_list_rr_count(answers); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answers, i);
    if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_TXT &&
        ldns_dname_compare(ldns_rr_owner(rr), name.get()) == 0 && txtValue(rr) == record.value) {
      return true;
    }
  }
  why->clear();
  return false;
}

}  // namespace

PropagationChecker::PropagationChecker(std::vector<Nameserver> nameservers)
    : nameservers_(std::move(nameservers)) {}

Result<bool> PropagationChecker::isVisible(const TxtRecord& record) const {
  if (nameservers_.empty()) {
    return invalidArgument("no nameservers to check " + record.fqdn + " against");
  }
  for (const Nameserver& server : nameservers_) {
    Result<ResolverPtr> resolver = makeResolver(server, kQueryTimeout, /*recursive=*/false);
    if (!resolver.ok()) {
      return resolver.status();
    }
    std::string why;
    Result<bool> seen = askServer(resolver->get(), server, record, &why);
    if (!seen.ok() || !*seen) {
      return seen;
    }
  }
  return true;
}

PropagationReport waitForPropagation(const std::vector<CheckGroup>& groups,
                                     Clock::time_point deadline,
                                     const std::function<bool()>& stop) {
  Clock::time_point start = Clock::now();
  PropagationReport report;

  // Every distinct server gets one resolver, however many groups name it.
  std::vector<Nameserver> servers;
  for (const CheckGroup& group : groups) {
    for (const Nameserver& server : group.servers) {
      if (std::find(servers.begin(), servers.end(), server) == servers.end()) {
        servers.push_back(server);
      }
    }
  }
  report.servers = servers.size();
  std::vector<ResolverPtr> resolvers;
  for (const Nameserver& server : servers) {
    Result<ResolverPtr> resolver = makeResolver(server, kQueryTimeout, /*recursive=*/false);
    if (!resolver.ok()) {
      report.status = resolver.status().withContext("dns propagation");
      return report;
    }
    resolvers.push_back(std::move(*resolver));
  }

  // For each record, the servers that have not shown it yet, and why when it is not just
  // absence (an error answer or no answer at all).
  std::vector<const TxtRecord*> records;
  std::map<std::size_t, std::map<std::size_t, std::string>> missing;
  for (const CheckGroup& group : groups) {
    if (group.servers.empty() && !group.records.empty()) {
      report.status = invalidArgument("dns propagation: no nameservers to check " +
                                      group.records.front().fqdn + " against");
      return report;
    }
    for (const TxtRecord& record : group.records) {
      std::size_t index = records.size();
      records.push_back(&record);
      for (const Nameserver& server : group.servers) {
        std::size_t position = static_cast<std::size_t>(
            std::find(servers.begin(), servers.end(), server) - servers.begin());
        missing[index][position] = "";
      }
    }
  }
  report.records = records.size();

  std::chrono::milliseconds interval = kFirstInterval;
  bool stopped = false;
  for (bool first_round = true;; first_round = false) {
    // A server that did not answer once in a round is not asked again in that round: with
    // hundreds of records, one timeout each would stretch the round far past the deadline.
    std::map<std::size_t, std::string> silent;
    for (auto record = missing.begin(); record != missing.end() && !stopped;) {
      std::vector<std::size_t> confirmed;
      for (auto server = record->second.begin(); server != record->second.end(); ++server) {
        if (stop && stop()) {
          stopped = true;
          break;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0 && !first_round) {
          break;
        }
        auto quiet = silent.find(server->first);
        if (quiet != silent.end()) {
          server->second = quiet->second;
          continue;
        }
        ldns_resolver* resolver = resolvers[server->first].get();
        auto limit = std::clamp(left, std::chrono::milliseconds(100), kQueryTimeout);
        timeval limit_tv{static_cast<time_t>(limit.count() / 1000),
                         static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
        ldns_resolver_set_timeout(resolver, limit_tv);

        std::string why;
        Result<bool> seen =
            askServer(resolver, servers[server->first], *records[record->first], &why);
        if (!seen.ok() && seen.status().code() == StatusCode::kInvalidArgument) {
          report.status = seen.status().withContext("dns propagation");
          return report;
        }
        if (seen.ok() && *seen) {
          confirmed.push_back(server->first);
          continue;
        }
        if (!seen.ok()) {
          why = seen.status().message();
          silent[server->first] = why;
        }
        server->second = why;
      }
      for (std::size_t server : confirmed) {
        record->second.erase(server);
      }
      record = record->second.empty() ? missing.erase(record) : std::next(record);
    }
    if (missing.empty()) {
      report.waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
      return report;
    }

    Clock::time_point now = Clock::now();
    if (stopped || now >= deadline) {
      break;
    }
    // Short naps, so that `stop` is heard within a few tens of milliseconds.
    Clock::time_point wake = std::min<Clock::time_point>(now + interval, deadline);
    while (Clock::now() < wake && !(stop && stop())) {
      std::this_thread::sleep_for(std::min<Clock::duration>(kStopPoll, wake - Clock::now()));
    }
    interval = std::min(kMaxInterval, interval * 3 / 2);
  }

  report.waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  std::string message =
      "dns propagation: " + std::string(stopped ? "interrupted after " : "after ") +
      std::to_string(report.waited.count()) + "ms, " + std::to_string(missing.size()) + " of " +
      std::to_string(records.size()) + " txt record(s) still not served: ";
  std::size_t listed = 0;
  for (const auto& [record, where] : missing) {
    std::string text;
    for (const auto& [server, why] : where) {
      text += (text.empty() ? "" : ", ") + describe(servers[server]);
      if (!why.empty()) {
        text += " (" + why + ")";
      }
    }
    report.missing.push_back(MissingRecord{*records[record], text});
    if (listed < kMaxListedRecords) {
      message += (listed == 0 ? "" : "; ") + records[record]->fqdn + " missing on " + text;
    } else if (listed == kMaxListedRecords) {
      message += "; and " + std::to_string(missing.size() - listed) + " more";
    }
    ++listed;
  }
  report.status = deadlineExceeded(message);
  return report;
}

DiscoveredChecks discoverChecks(const DnsLookup& lookup, const std::vector<TxtRecord>& records) {
  DiscoveredChecks plan;
  std::map<std::string, Result<AuthoritativeServers>> by_zone;
  std::map<std::vector<Nameserver>, std::size_t> group_of;
  for (const TxtRecord& record : records) {
    Result<std::string> zone = lookup.findZone(record.fqdn);
    if (!zone.ok()) {
      plan.failed.emplace_back(record, zone.status());
      continue;
    }
    auto known = by_zone.find(*zone);
    if (known == by_zone.end()) {
      known = by_zone.emplace(*zone, lookup.authoritativeServers(*zone)).first;
      if (known->second.ok()) {
        for (const std::string& name : known->second->unresolved) {
          plan.warnings.push_back("zone " + *zone + ": nameserver " + name +
                                  " has no address and is not checked");
        }
      }
    }
    if (!known->second.ok()) {
      plan.failed.emplace_back(record, known->second.status());
      continue;
    }
    const std::vector<Nameserver>& servers = known->second->servers;
    auto group = group_of.find(servers);
    if (group == group_of.end()) {
      group = group_of.emplace(servers, plan.groups.size()).first;
      plan.groups.push_back(CheckGroup{servers, {}});
    }
    plan.groups[group->second].records.push_back(record);
  }
  return plan;
}

Result<std::unique_ptr<DnsLookup>> makeDnsLookup(const PropagationConfig& config) {
  std::vector<Nameserver> resolvers;
  for (const std::string& text : config.resolvers) {
    Result<Nameserver> server = parseNameserver(text);
    if (!server.ok()) {
      return server.status();
    }
    resolvers.push_back(*server);
  }
  if (resolvers.empty()) {
    Result<std::vector<Nameserver>> system = systemResolvers();
    if (!system.ok()) {
      return system.status();
    }
    resolvers = std::move(*system);
  }
  return std::make_unique<DnsLookup>(std::move(resolvers), config.nameserver_port);
}

bool followsCnames(const PropagationConfig& config) {
  return config.nameservers.empty() || !config.resolvers.empty();
}

ConfirmOutcome confirmRecords(const PropagationConfig& config,
                              const DnsLookup* lookup,
                              const std::vector<TxtRecord>& records,
                              Clock::time_point deadline,
                              const std::function<bool()>& stop) {
  ConfirmOutcome outcome;
  std::vector<CheckGroup> groups;
  if (!config.nameservers.empty()) {
    std::vector<Nameserver> servers;
    for (const std::string& text : config.nameservers) {
      Result<Nameserver> server = parseNameserver(text);
      if (!server.ok()) {
        for (const TxtRecord& record : records) {
          outcome.failed.emplace_back(record, server.status().withContext("dns propagation"));
        }
        return outcome;
      }
      servers.push_back(*server);
    }
    groups.push_back(CheckGroup{std::move(servers), records});
  } else if (lookup == nullptr) {
    for (const TxtRecord& record : records) {
      outcome.failed.emplace_back(
          record, invalidArgument("dns propagation: no nameservers and no resolvers to find them"));
    }
    return outcome;
  } else {
    DiscoveredChecks plan = discoverChecks(*lookup, records);
    for (auto& [record, status] : plan.failed) {
      outcome.failed.emplace_back(record, status.withContext("dns propagation"));
    }
    outcome.warnings = std::move(plan.warnings);
    groups = std::move(plan.groups);
  }

  for (const CheckGroup& group : groups) {
    if (group.records.empty()) {
      continue;
    }
    std::string servers;
    for (const Nameserver& server : group.servers) {
      servers += (servers.empty() ? "" : ", ") + describe(server);
    }
    outcome.plan.push_back("dns propagation: " + std::to_string(group.records.size()) +
                           " record(s) like " + group.records.front().fqdn + " on " + servers);
  }

  PropagationReport report = waitForPropagation(groups, deadline, stop);
  if (!report.status.ok() && report.missing.empty()) {
    // Nothing was asked at all (a malformed record or server): every record fails alike.
    for (const CheckGroup& group : groups) {
      for (const TxtRecord& record : group.records) {
        outcome.failed.emplace_back(record, report.status);
      }
    }
    return outcome;
  }
  for (const MissingRecord& missing : report.missing) {
    outcome.failed.emplace_back(
        missing.record,
        deadlineExceeded("dns propagation: after " + std::to_string(report.waited.count()) +
                         " ms, " + missing.record.fqdn + " is still not served by " +
                         missing.where));
  }

  std::size_t confirmed = report.records - report.missing.size();
  outcome.summary = "dns propagation: confirmed " +
                    (confirmed == records.size() ? "" : std::to_string(confirmed) + " of ") +
                    std::to_string(records.size()) + " record(s) on " +
                    std::to_string(report.servers) + " server(s) in " +
                    std::to_string(report.waited.count()) + " ms";
  // Some providers' servers answer before every node behind one address has the record:
  // a fixed settle after the confirmation covers what polling cannot see.
  if (config.settle.count() > 0 && confirmed > 0) {
    Clock::time_point until = Clock::now() + config.settle;
    while (Clock::now() < until && !(stop && stop())) {
      std::this_thread::sleep_for(std::min<Clock::duration>(kStopPoll, until - Clock::now()));
    }
    outcome.summary += ", then settled " + std::to_string(config.settle.count()) + " ms";
  }
  return outcome;
}

Status PropagationChecker::waitForRecords(const std::vector<TxtRecord>& records,
                                          Clock::time_point deadline) const {
  if (nameservers_.empty()) {
    return invalidArgument("no nameservers to check the txt records against");
  }
  // A Ctrl-C ends the wait, so the records can be removed at once.
  return waitForPropagation({CheckGroup{nameservers_, records}}, deadline,
                            [] { return interrupted(); })
      .status;
}

}  // namespace certfleet
