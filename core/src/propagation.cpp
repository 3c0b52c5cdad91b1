#include "propagation.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include <ldns/ldns.h>

#include <arpa/inet.h>
#include <netinet/in.h>

namespace certfleet {
namespace {

using Clock = std::chrono::steady_clock;

// One query should not outlive a lost UDP packet by much; the poll loop retries anyway.
constexpr std::chrono::milliseconds kQueryTimeout{2000};
constexpr std::chrono::milliseconds kFirstInterval{20};
constexpr std::chrono::milliseconds kMaxInterval{1000};
// How many missing records a timeout message spells out before it only counts the rest.
constexpr std::size_t kMaxListedRecords = 10;

struct ResolverFree {
  void operator()(ldns_resolver* resolver) const { ldns_resolver_deep_free(resolver); }
};
struct PktFree {
  void operator()(ldns_pkt* pkt) const { ldns_pkt_free(pkt); }
};
struct RdfFree {
  void operator()(ldns_rdf* rdf) const { ldns_rdf_deep_free(rdf); }
};
using ResolverPtr = std::unique_ptr<ldns_resolver, ResolverFree>;
using PktPtr = std::unique_ptr<ldns_pkt, PktFree>;
using RdfPtr = std::unique_ptr<ldns_rdf, RdfFree>;

std::string describe(const Nameserver& server) {
  if (server.address.find(':') != std::string::npos) {
    return "[" + server.address + "]:" + std::to_string(server.port);
  }
  return server.address + ":" + std::to_string(server.port);
}

Status badNameserver(const std::string& text) {
  return invalidArgument("nameserver '" + text +
                         "' must be an IPv4 or IPv6 address with an optional port "
                         "(127.0.0.1:5300, [::1]:53)");
}

// A resolver that asks exactly one server, without recursion, search list or
// /etc/resolv.conf: what the server itself holds is the question, not what a cache says.
Result<ResolverPtr> makeResolver(const Nameserver& server, std::chrono::milliseconds timeout) {
  ResolverPtr resolver(ldns_resolver_new());
  bool v6 = server.address.find(':') != std::string::npos;
  RdfPtr address(
      ldns_rdf_new_frm_str(v6 ? LDNS_RDF_TYPE_AAAA : LDNS_RDF_TYPE_A, server.address.c_str()));
  if (!resolver || !address) {
    return invalidArgument("nameserver " + describe(server) + ": not an address literal");
  }
  if (ldns_resolver_push_nameserver(resolver.get(), address.get()) != LDNS_STATUS_OK) {
    return internalError("nameserver " + describe(server) + ": cannot set up a resolver");
  }
  ldns_resolver_set_port(resolver.get(), server.port);
  ldns_resolver_set_recursive(resolver.get(), false);
  ldns_resolver_set_dnsrch(resolver.get(), false);
  ldns_resolver_set_defnames(resolver.get(), false);
  ldns_resolver_set_random(resolver.get(), false);
  ldns_resolver_set_retry(resolver.get(), 1);
  // Large answers (many values on one name) come truncated over UDP: retry them over TCP.
  ldns_resolver_set_fallback(resolver.get(), true);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
  timeval limit{};
  limit.tv_sec = static_cast<time_t>(micros / 1000000);
  limit.tv_usec = static_cast<suseconds_t>(micros % 1000000);
  ldns_resolver_set_timeout(resolver.get(), limit);
  return resolver;
}

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

Result<Nameserver> parseNameserver(const std::string& text) {
  Nameserver server;
  std::string host = text;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    std::size_t close = text.find(']');
    if (close == std::string::npos) {
      return badNameserver(text);
    }
    host = text.substr(1, close - 1);
    std::string rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':' || rest.size() == 1) {
        return badNameserver(text);
      }
      port = rest.substr(1);
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    // One colon separates IPv4 and port; a bare IPv6 address has several.
    std::size_t colon = text.find(':');
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty()) {
      return badNameserver(text);
    }
  }

  if (!port.empty()) {
    if (port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return badNameserver(text);
    }
    int number = std::stoi(port);
    if (number < 1 || number > 65535) {
      return badNameserver(text);
    }
    server.port = static_cast<std::uint16_t>(number);
  }

  in_addr v4{};
  in6_addr v6{};
  bool is_v6 = host.find(':') != std::string::npos;
  if (is_v6 ? inet_pton(AF_INET6, host.c_str(), &v6) != 1
            : inet_pton(AF_INET, host.c_str(), &v4) != 1) {
    return badNameserver(text);
  }
  if (!is_v6 && text.front() == '[') {
    return badNameserver(text);
  }
  server.address = host;
  return server;
}

PropagationChecker::PropagationChecker(std::vector<Nameserver> nameservers)
    : nameservers_(std::move(nameservers)) {}

Result<bool> PropagationChecker::isVisible(const TxtRecord& record) const {
  if (nameservers_.empty()) {
    return invalidArgument("no nameservers to check " + record.fqdn + " against");
  }
  for (const Nameserver& server : nameservers_) {
    Result<ResolverPtr> resolver = makeResolver(server, kQueryTimeout);
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

Status PropagationChecker::waitForRecords(const std::vector<TxtRecord>& records,
                                          Clock::time_point deadline) const {
  if (nameservers_.empty()) {
    return invalidArgument("no nameservers to check the txt records against");
  }
  Clock::time_point start = Clock::now();
  std::vector<ResolverPtr> resolvers;
  for (const Nameserver& server : nameservers_) {
    Result<ResolverPtr> resolver = makeResolver(server, kQueryTimeout);
    if (!resolver.ok()) {
      return resolver.status();
    }
    resolvers.push_back(std::move(*resolver));
  }

  // For each record, the servers that have not shown it yet, and why when it is not just
  // absence (an error answer or no answer at all).
  std::map<std::size_t, std::map<std::size_t, std::string>> missing;
  for (std::size_t r = 0; r < records.size(); ++r) {
    for (std::size_t s = 0; s < nameservers_.size(); ++s) {
      missing[r][s] = "";
    }
  }

  std::chrono::milliseconds interval = kFirstInterval;
  for (bool first_round = true;; first_round = false) {
    // A server that did not answer once in a round is not asked again in that round: with
    // hundreds of records, one timeout each would stretch the round far past the deadline.
    std::map<std::size_t, std::string> silent;
    for (auto record = missing.begin(); record != missing.end();) {
      std::vector<std::size_t> confirmed;
      for (auto server = record->second.begin(); server != record->second.end(); ++server) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        // The first round always completes, so records already in place pass even when
        // the deadline has gone by; later rounds stop at the deadline.
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
            askServer(resolver, nameservers_[server->first], records[record->first], &why);
        if (!seen.ok() && seen.status().code() == StatusCode::kInvalidArgument) {
          return seen.status().withContext("dns propagation");
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
      return {};
    }

    Clock::time_point now = Clock::now();
    if (now >= deadline) {
      break;
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(interval, deadline - now));
    interval = std::min(kMaxInterval, interval * 3 / 2);
  }

  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  std::string message = "dns propagation: after " + std::to_string(waited.count()) + "ms, " +
                        std::to_string(missing.size()) + " of " + std::to_string(records.size()) +
                        " txt record(s) still not served: ";
  std::size_t listed = 0;
  for (const auto& [record, servers] : missing) {
    if (listed == kMaxListedRecords) {
      message += "; and " + std::to_string(missing.size() - listed) + " more";
      break;
    }
    message += (listed++ == 0 ? "" : "; ") + records[record].fqdn + " missing on ";
    bool first = true;
    for (const auto& [server, why] : servers) {
      message += (first ? "" : ", ") + describe(nameservers_[server]);
      if (!why.empty()) {
        message += " (" + why + ")";
      }
      first = false;
    }
  }
  return deadlineExceeded(message);
}

}  // namespace certfleet
