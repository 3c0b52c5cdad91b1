// DNS lookups the core makes around DNS-01: the zone a challenge record belongs to, that
// zone's authoritative servers, the CNAME chain at a challenge name, and CAA records. Every
// question goes to resolvers the caller names; only systemResolvers() reads
// /etc/resolv.conf, so a test can keep every packet on loopback.
//
//   DnsLookup lookup({*parseNameserver("127.0.0.1:5300")}, 5300);
//   Result<std::string> zone = lookup.findZone("_acme-challenge.web1.example.test");
//   Result<AuthoritativeServers> servers = lookup.authoritativeServers(*zone);
//   // servers->servers: every address of every NS of the zone, each on port 5300
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "certfleet/plugin.hpp"

namespace certfleet {

struct Nameserver {
  std::string address;  // IPv4 or IPv6 literal
  std::uint16_t port = 53;

  friend bool operator==(const Nameserver&, const Nameserver&) = default;
  friend bool operator<(const Nameserver& left, const Nameserver& right) {
    return std::tie(left.address, left.port) < std::tie(right.address, right.port);
  }
};

// Parses "127.0.0.1", "127.0.0.1:5300" or "[::1]:5300".
Result<Nameserver> parseNameserver(const std::string& text);

// "127.0.0.1:5300" or "[::1]:53": the form parseNameserver reads back.
std::string describe(const Nameserver& server);

// The nameservers of /etc/resolv.conf, on port 53. An error when it lists none.
Result<std::vector<Nameserver>> systemResolvers();

// The servers a zone's NS set names, by address.
struct AuthoritativeServers {
  std::vector<Nameserver> servers;      // sorted, without duplicates
  std::vector<std::string> unresolved;  // NS names that have no A or AAAA record
};

// One CAA record (RFC 8659): flags, property tag and value as written in the zone.
struct CaaRecord {
  std::uint8_t flags = 0;
  std::string tag;
  std::string value;
};

class DnsLookup {
 public:
  // `resolvers` are asked with recursion desired, as any stub resolver asks; a server that
  // is itself authoritative for the names answers just as well. The addresses found by
  // authoritativeServers() get port `nameserver_port`.
  explicit DnsLookup(std::vector<Nameserver> resolvers,
                     std::uint16_t nameserver_port = 53,
                     std::chrono::milliseconds timeout = std::chrono::seconds(3));

  DnsLookup(const DnsLookup&) = delete;
  DnsLookup& operator=(const DnsLookup&) = delete;

  // The closest enclosing name that owns an SOA record: asks for the SOA of `fqdn`, then of
  // each parent in turn. A name that only holds a CNAME is not a zone cut, whatever the
  // CNAME points to. Results are remembered for the life of this object.
  Result<std::string> findZone(const std::string& fqdn) const;

  // The zone's NS set, each name resolved to its A and AAAA addresses. An error when no NS
  // name has an address.
  Result<AuthoritativeServers> authoritativeServers(const std::string& zone) const;

  // `fqdn` and each name a CNAME leads to from it, in order: just {fqdn} when it has none.
  // At most 8 CNAMEs are followed; more, or a loop, is an error naming the chain.
  Result<std::vector<std::string>> cnameChain(const std::string& fqdn) const;

  // The last name of cnameChain(fqdn): where a record for `fqdn` really lives.
  Result<std::string> followCname(const std::string& fqdn) const;

  // The CAA RRset at `name`, CNAMEs followed as any resolution does; empty when the name
  // has none or does not exist.
  Result<std::vector<CaaRecord>> caaRecords(const std::string& name) const;

  const std::vector<Nameserver>& resolvers() const { return resolvers_; }

 private:
  std::vector<Nameserver> resolvers_;
  std::uint16_t nameserver_port_;
  std::chrono::milliseconds timeout_;
  // Name -> owns an SOA. Many challenge names share a few zones: each name is asked once.
  mutable std::mutex mutex_;
  mutable std::map<std::string, bool> is_apex_;
};

// Lower case and no trailing dot: the form names are compared and reported in.
std::string normalizeName(const std::string& name);

}  // namespace certfleet
