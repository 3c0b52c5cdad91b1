#include "dns_lookup.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <memory>
#include <set>
#include <utility>

#include <ldns/ldns.h>

#include "ldns_resolver.hpp"
#include <arpa/inet.h>
#include <netinet/in.h>

namespace certfleet {
namespace {

// RFC 1034 and common practice: a chain longer than this is a misconfiguration.
constexpr std::size_t kMaxCnames = 8;

Status badNameserver(const std::string& text) {
  return invalidArgument("nameserver '" + text +
                         "' must be an IPv4 or IPv6 address with an optional port "
                         "(127.0.0.1:5300, [::1]:53)");
}

std::string typeName(ldns_rr_type type) {
  char* text = ldns_rr_type2str(type);
  std::string name = text != nullptr ? text : "TYPE" + std::to_string(type);
  std::free(text);
  return name;
}

std::string rcodeName(ldns_pkt_rcode rcode) {
  const ldns_lookup_table* entry = ldns_lookup_by_id(ldns_rcodes, static_cast<int>(rcode));
  return entry != nullptr ? entry->name : "rcode " + std::to_string(rcode);
}

// A domain name as text, in normal form, from a dname rdf.
std::string nameText(const ldns_rdf* rdf) {
  char* text = ldns_rdf2str(rdf);
  std::string name = text != nullptr ? text : "";
  std::free(text);
  return normalizeName(name);
}

std::string parentOf(const std::string& name) {
  std::size_t dot = name.find('.');
  return dot == std::string::npos ? "" : name.substr(dot + 1);
}

Result<RdfPtr> absoluteName(const std::string& name) {
  RdfPtr rdf(ldns_dname_new_frm_str((normalizeName(name) + ".").c_str()));
  if (!rdf) {
    return invalidArgument("'" + name + "' is not a valid dns name");
  }
  return rdf;
}

struct Answer {
  ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
  PktPtr packet;
  std::string server;  // who answered, for messages
};

// Asks the resolvers in turn until one gives an answer a stub resolver would accept
// (NOERROR or NXDOMAIN). SERVFAIL, REFUSED and silence move on to the next one.
Result<Answer> ask(const std::vector<Nameserver>& resolvers,
                   std::chrono::milliseconds timeout,
                   const std::string& name,
                   ldns_rr_type type) {
  std::string question = typeName(type) + " " + name;
  if (resolvers.empty()) {
    return invalidArgument("no resolvers to ask for " + question);
  }
  Result<RdfPtr> qname = absoluteName(name);
  if (!qname.ok()) {
    return qname.status();
  }

  Status last;
  for (const Nameserver& server : resolvers) {
    Result<ResolverPtr> resolver = makeResolver(server, timeout, /*recursive=*/true);
    if (!resolver.ok()) {
      return resolver.status();
    }
    ldns_pkt* raw_query = nullptr;
    ldns_status status = ldns_resolver_prepare_query_pkt(&raw_query, resolver->get(), qname->get(),
                                                         type, LDNS_RR_CLASS_IN, LDNS_RD);
    PktPtr query(raw_query);
    if (status != LDNS_STATUS_OK) {
      return internalError("build query " + question + ": " + ldns_get_errorstr_by_id(status));
    }
    ldns_pkt* raw_answer = nullptr;
    status = ldns_resolver_send_pkt(&raw_answer, resolver->get(), query.get());
    PktPtr packet(raw_answer);
    if (status != LDNS_STATUS_OK || !packet) {
      last =
          unavailable("ask " + describe(server) + " for " + question + ": " +
                      (status != LDNS_STATUS_OK ? ldns_get_errorstr_by_id(status) : "no answer"));
      continue;
    }
    if (ldns_pkt_id(packet.get()) != ldns_pkt_id(query.get())) {
      last = unavailable("ask " + describe(server) + " for " + question +
                         ": the answer does not match the query id");
      continue;
    }
    ldns_pkt_rcode rcode = ldns_pkt_get_rcode(packet.get());
    if (rcode == LDNS_RCODE_REFUSED) {
      // Its own kind: an authoritative server used as resolver refuses names outside its
      // zones, which the CAA climb towards the root must be able to tell from an outage.
      last = permissionDenied("ask " + describe(server) + " for " + question + ": answered " +
                              rcodeName(rcode));
      continue;
    }
    if (rcode != LDNS_RCODE_NOERROR && rcode != LDNS_RCODE_NXDOMAIN) {
      last = unavailable("ask " + describe(server) + " for " + question + ": answered " +
                         rcodeName(rcode));
      continue;
    }
    return Answer{rcode, std::move(packet), describe(server)};
  }
  return last;
}

// The records of `type` owned by `owner` in the answer section.
std::vector<const ldns_rr*> answerRecords(const Answer& answer,
                                          const std::string& owner,
                                          ldns_rr_type type) {
  std::vector<const ldns_rr*> found;
  const ldns_rr_list* list = ldns_pkt_answer(answer.packet.get());
  for (std::size_t i = 0; i < ldns_rr_list_rr_count(list); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(list, i);
    if (ldns_rr_get_type(rr) == type && nameText(ldns_rr_owner(rr)) == owner) {
      found.push_back(rr);
    }
  }
  return found;
}

// The target of the CNAME at `owner` in the answer, or "" when there is none.
std::string cnameTarget(const Answer& answer, const std::string& owner) {
  std::vector<const ldns_rr*> cnames = answerRecords(answer, owner, LDNS_RR_TYPE_CNAME);
  if (cnames.empty() || ldns_rr_rd_count(cnames.front()) < 1) {
    return "";
  }
  return nameText(ldns_rr_rdf(cnames.front(), 0));
}

std::string joinChain(const std::vector<std::string>& chain) {
  std::string text;
  for (const std::string& name : chain) {
    text += (text.empty() ? "" : " -> ") + name;
  }
  return text;
}

std::string describeAll(const std::vector<Nameserver>& servers) {
  std::string text;
  for (const Nameserver& server : servers) {
    text += (text.empty() ? "" : ", ") + describe(server);
  }
  return text;
}

// RFC 8659 section 4.1: flags, then a length-prefixed tag, then the value to the end.
Result<CaaRecord> parseCaa(const ldns_rr* rr) {
  if (ldns_rr_rd_count(rr) != 3) {
    return internalError("a CAA record without flags, tag and value");
  }
  CaaRecord record;
  record.flags = ldns_rdf2native_int8(ldns_rr_rdf(rr, 0));
  const ldns_rdf* tag = ldns_rr_rdf(rr, 1);
  const std::uint8_t* tag_data = ldns_rdf_data(tag);
  std::size_t tag_size = ldns_rdf_size(tag);
  if (tag_size == 0 || tag_data[0] + 1u > tag_size) {
    return internalError("a CAA record with a malformed tag");
  }
  record.tag.assign(reinterpret_cast<const char*>(tag_data + 1), tag_data[0]);
  const ldns_rdf* value = ldns_rr_rdf(rr, 2);
  record.value.assign(reinterpret_cast<const char*>(ldns_rdf_data(value)), ldns_rdf_size(value));
  return record;
}

}  // namespace

std::string normalizeName(const std::string& name) {
  std::string normal = name;
  while (!normal.empty() && normal.back() == '.') {
    normal.pop_back();
  }
  std::transform(normal.begin(), normal.end(), normal.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return normal;
}

std::string describe(const Nameserver& server) {
  if (server.address.find(':') != std::string::npos) {
    return "[" + server.address + "]:" + std::to_string(server.port);
  }
  return server.address + ":" + std::to_string(server.port);
}

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

Result<std::vector<Nameserver>> systemResolvers() {
  ldns_resolver* raw = nullptr;
  ldns_status status = ldns_resolver_new_frm_file(&raw, nullptr);
  ResolverPtr resolver(raw);
  if (status != LDNS_STATUS_OK || !resolver) {
    return unavailable(std::string("read the system resolvers from /etc/resolv.conf: ") +
                       ldns_get_errorstr_by_id(status));
  }
  std::vector<Nameserver> servers;
  ldns_rdf** addresses = ldns_resolver_nameservers(resolver.get());
  for (std::size_t i = 0; i < ldns_resolver_nameserver_count(resolver.get()); ++i) {
    char* text = ldns_rdf2str(addresses[i]);
    if (text != nullptr) {
      servers.push_back(Nameserver{text, 53});
    }
    std::free(text);
  }
  if (servers.empty()) {
    return notFound("/etc/resolv.conf lists no nameserver; set propagation.resolvers");
  }
  return servers;
}

DnsLookup::DnsLookup(std::vector<Nameserver> resolvers,
                     std::uint16_t nameserver_port,
                     std::chrono::milliseconds timeout)
    : resolvers_(std::move(resolvers)), nameserver_port_(nameserver_port), timeout_(timeout) {}

Result<std::string> DnsLookup::findZone(const std::string& fqdn) const {
  std::string start = normalizeName(fqdn);
  for (std::string name = start; !name.empty(); name = parentOf(name)) {
    {
      std::lock_guard lock(mutex_);
      auto known = is_apex_.find(name);
      if (known != is_apex_.end()) {
        if (known->second) {
          return name;
        }
        continue;
      }
    }
    Result<Answer> answer = ask(resolvers_, timeout_, name, LDNS_RR_TYPE_SOA);
    if (!answer.ok()) {
      return answer.status().withContext("find the zone of " + start);
    }
    // Only an SOA owned by the name itself marks a zone cut: a resolver that follows a
    // CNAME here may add the SOA of the zone the CNAME points into.
    bool apex = answer->rcode == LDNS_RCODE_NOERROR &&
                !answerRecords(*answer, name, LDNS_RR_TYPE_SOA).empty();
    {
      std::lock_guard lock(mutex_);
      is_apex_[name] = apex;
    }
    if (apex) {
      return name;
    }
  }
  return notFound("find the zone of " + start + ": no SOA at it or any parent (asked " +
                  describeAll(resolvers_) + ")");
}

Result<AuthoritativeServers> DnsLookup::authoritativeServers(const std::string& zone) const {
  std::string apex = normalizeName(zone);
  Result<Answer> answer = ask(resolvers_, timeout_, apex, LDNS_RR_TYPE_NS);
  if (!answer.ok()) {
    return answer.status().withContext("find the nameservers of " + apex);
  }
  std::vector<std::string> names;
  for (const ldns_rr* rr : answerRecords(*answer, apex, LDNS_RR_TYPE_NS)) {
    if (ldns_rr_rd_count(rr) >= 1) {
      names.push_back(nameText(ldns_rr_rdf(rr, 0)));
    }
  }
  if (names.empty()) {
    return notFound("find the nameservers of " + apex + ": " + answer->server +
                    " returned no NS records");
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());

  AuthoritativeServers result;
  std::set<Nameserver> servers;
  for (const std::string& name : names) {
    bool found = false;
    for (ldns_rr_type type : {LDNS_RR_TYPE_A, LDNS_RR_TYPE_AAAA}) {
      Result<Answer> addresses = ask(resolvers_, timeout_, name, type);
      if (!addresses.ok()) {
        return addresses.status().withContext("find the nameservers of " + apex);
      }
      // Any owner: a resolver may have followed a CNAME to the address.
      const ldns_rr_list* list = ldns_pkt_answer(addresses->packet.get());
      for (std::size_t i = 0; i < ldns_rr_list_rr_count(list); ++i) {
        const ldns_rr* rr = ldns_rr_list_rr(list, i);
        if (ldns_rr_get_type(rr) != type || ldns_rr_rd_count(rr) < 1) {
          continue;
        }
        char* text = ldns_rdf2str(ldns_rr_rdf(rr, 0));
        if (text != nullptr) {
          servers.insert(Nameserver{text, nameserver_port_});
          found = true;
        }
        std::free(text);
      }
    }
    if (!found) {
      result.unresolved.push_back(name);
    }
  }
  if (servers.empty()) {
    std::string listed;
    for (const std::string& name : names) {
      listed += (listed.empty() ? "" : ", ") + name;
    }
    return notFound("find the nameservers of " + apex + ": none of its NS names (" + listed +
                    ") has an A or AAAA record");
  }
  result.servers.assign(servers.begin(), servers.end());
  return result;
}

Result<std::vector<std::string>> DnsLookup::cnameChain(const std::string& fqdn) const {
  std::vector<std::string> chain{normalizeName(fqdn)};
  for (;;) {
    Result<Answer> answer = ask(resolvers_, timeout_, chain.back(), LDNS_RR_TYPE_CNAME);
    if (!answer.ok()) {
      return answer.status().withContext("follow the CNAMEs of " + chain.front());
    }
    std::string target = cnameTarget(*answer, chain.back());
    if (target.empty()) {
      return chain;
    }
    if (std::find(chain.begin(), chain.end(), target) != chain.end()) {
      chain.push_back(target);
      return failedPrecondition("follow the CNAMEs of " + chain.front() +
                                ": a loop: " + joinChain(chain));
    }
    chain.push_back(target);
    if (chain.size() > kMaxCnames + 1) {
      return failedPrecondition("follow the CNAMEs of " + chain.front() + ": more than " +
                                std::to_string(kMaxCnames) + ": " + joinChain(chain));
    }
  }
}

Result<std::string> DnsLookup::followCname(const std::string& fqdn) const {
  Result<std::vector<std::string>> chain = cnameChain(fqdn);
  if (!chain.ok()) {
    return chain.status();
  }
  return chain->back();
}

Result<std::vector<CaaRecord>> DnsLookup::caaRecords(const std::string& name) const {
  std::vector<std::string> chain{normalizeName(name)};
  for (;;) {
    Result<Answer> answer = ask(resolvers_, timeout_, chain.back(), LDNS_RR_TYPE_CAA);
    if (!answer.ok()) {
      return answer.status().withContext("look up the CAA records of " + chain.front());
    }
    // A recursive resolver answers with the whole CNAME chain; an authoritative server
    // only with the part inside its own zones. Walk what came, then ask for the rest.
    std::string asked = chain.back();
    for (;;) {
      std::vector<const ldns_rr*> found = answerRecords(*answer, chain.back(), LDNS_RR_TYPE_CAA);
      if (!found.empty()) {
        std::vector<CaaRecord> records;
        for (const ldns_rr* rr : found) {
          Result<CaaRecord> record = parseCaa(rr);
          if (!record.ok()) {
            return record.status().withContext("CAA at " + chain.back());
          }
          records.push_back(std::move(*record));
        }
        return records;
      }
      std::string target = cnameTarget(*answer, chain.back());
      if (target.empty()) {
        break;
      }
      if (std::find(chain.begin(), chain.end(), target) != chain.end()) {
        chain.push_back(target);
        return failedPrecondition("look up the CAA records of " + chain.front() +
                                  ": a CNAME loop: " + joinChain(chain));
      }
      chain.push_back(target);
      if (chain.size() > kMaxCnames + 1) {
        return failedPrecondition("look up the CAA records of " + chain.front() + ": more than " +
                                  std::to_string(kMaxCnames) + " CNAMEs: " + joinChain(chain));
      }
    }
    if (chain.back() == asked) {
      return std::vector<CaaRecord>{};
    }
  }
}

Result<ResolverPtr> makeResolver(const Nameserver& server,
                                 std::chrono::milliseconds timeout,
                                 bool recursive) {
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
  ldns_resolver_set_recursive(resolver.get(), recursive);
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

}  // namespace certfleet
