// The CAA pre-check (RFC 8659): before an order is placed, a name whose CAA records do not
// let the pipeline's CA issue is refused with the record that forbids it. The CA checks CAA
// itself; checking first turns its late, terse refusal into an early one that names the
// record, and spares an order that cannot succeed.
//
//   DnsLookup lookup({*parseNameserver("127.0.0.1:5300")});
//   Status allowed = checkCaa(lookup, "web1.example.test", "letsencrypt.org");
//   // failed precondition: web1.example.test: CAA 0 issue "other-ca.test" at example.test
//   //                      does not allow letsencrypt.org
#pragma once

#include <string>
#include <vector>

#include "certfleet/plugin.hpp"

#include "dns_lookup.hpp"

namespace certfleet {

// The RRset RFC 8659 section 3 calls relevant for a name: the CAA records of the name or of
// its closest parent that has any.
struct RelevantCaa {
  std::string owner;  // where the records were found; empty when no name up the tree has any
  std::vector<CaaRecord> records;
};

struct CaaDecision {
  bool allowed = true;
  // Why it is refused: the records the refusal rests on, and what they do.
  std::vector<CaaRecord> deciding;
  std::string reason;  // "does not allow letsencrypt.org", "is critical and not understood"
};

// May the CA calling itself `identity` (an issuer domain name such as "letsencrypt.org")
// issue for a name whose relevant RRset is `records`? `wildcard` for "*.name": then
// `issuewild` properties decide when there are any, else `issue` ones (RFC 8659 4.3). A
// critical property with a tag other than issue, issuewild or iodef refuses everything.
CaaDecision evaluateCaa(const std::vector<CaaRecord>& records,
                        const std::string& identity,
                        bool wildcard);

// Climbs from `name` (the base name for "*.name") towards the root until a name has CAA
// records.
Result<RelevantCaa> findRelevantCaa(const DnsLookup& lookup, const std::string& name);

// findRelevantCaa, then evaluateCaa. A refusal is kFailedPrecondition naming the name, the
// records and where they are.
Status checkCaa(const DnsLookup& lookup, const std::string& name, const std::string& identity);

// `0 issue "letsencrypt.org"`, as in a zone file.
std::string formatCaa(const CaaRecord& record);

}  // namespace certfleet
