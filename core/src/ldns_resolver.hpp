// ldns handles with owners, and the one-server resolver that zone discovery and the
// propagation check both use.
#pragma once

#include <chrono>
#include <memory>

#include <ldns/ldns.h>

#include "dns_lookup.hpp"

namespace certfleet {

struct LdnsResolverFree {
  void operator()(ldns_resolver* resolver) const { ldns_resolver_deep_free(resolver); }
};
struct LdnsPktFree {
  void operator()(ldns_pkt* pkt) const { ldns_pkt_free(pkt); }
};
struct LdnsRdfFree {
  void operator()(ldns_rdf* rdf) const { ldns_rdf_deep_free(rdf); }
};
using ResolverPtr = std::unique_ptr<ldns_resolver, LdnsResolverFree>;
using PktPtr = std::unique_ptr<ldns_pkt, LdnsPktFree>;
using RdfPtr = std::unique_ptr<ldns_rdf, LdnsRdfFree>;

// A resolver that asks exactly `server`, without search list or /etc/resolv.conf, and
// retries a truncated answer over TCP. `recursive` is what a stub resolver asks of a
// recursive server; without it the question is what the server itself holds.
Result<ResolverPtr> makeResolver(const Nameserver& server,
                                 std::chrono::milliseconds timeout,
                                 bool recursive);

}  // namespace certfleet
