// The DNS messages the plugin sends and the checks on what comes back, built with ldns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "certfleet/plugin.hpp"

#include "ldns_ptr.hpp"

namespace certfleet::rfc2136 {

struct TsigKey {
  std::string name;       // "certfleet-key", as written in the pipeline
  std::string algorithm;  // "hmac-sha256", as written in the pipeline
  Secret secret;          // base64, as BIND's key statement holds it
};

// A message ready to send, with what is needed to check its reply.
struct OutgoingMessage {
  std::vector<std::uint8_t> wire;
  PktPtr packet;  // after signing: carries the request MAC the reply's TSIG covers
};

// A reply as received: parsed, and the raw bytes TSIG verification needs.
struct IncomingMessage {
  std::vector<std::uint8_t> wire;
  PktPtr packet;
};

// "_acme-challenge.web1.example.test" (a trailing dot is allowed) as an absolute name.
Result<RdfPtr> parseName(const std::string& text);

// The name without its trailing dot, for messages.
std::string nameToText(const ldns_rdf* name);

// True when `name` is `zone` or lies below it.
bool isInside(const ldns_rdf* name, const ldns_rdf* zone);

// The TXT record to add (class IN, `ttl`) or, for `remove`, the RFC 2136 2.5.4 "delete an RR
// from an RRset" form: class NONE, TTL 0, same data.
Result<RrPtr> makeTxtRr(const TxtRecord& record, std::uint32_t ttl, bool remove);

// An upper bound of the bytes `record` adds to an update, names uncompressed.
std::size_t txtRrWireBound(const TxtRecord& record);

// An SOA query for `name` without recursion desired.
Result<OutgoingMessage> makeSoaQuery(const ldns_rdf* name);

// An UPDATE of `zone` carrying `updates`, signed with `key`.
Result<OutgoingMessage> makeSignedUpdate(const ldns_rdf* zone,
                                         const std::vector<RrPtr>& updates,
                                         const TsigKey& key);

// Parses a reply and checks it answers `request` (same id, a response, same opcode).
Result<IncomingMessage> parseReply(std::vector<std::uint8_t> wire, const OutgoingMessage& request);

// The TSIG error code of a reply (RFC 8945 5.3.2), 0 when it carries none.
std::uint16_t tsigError(const IncomingMessage& reply);

// True when the reply carries a TSIG record made with `key` over the request's MAC.
bool tsigVerifies(IncomingMessage& reply, const OutgoingMessage& request, const TsigKey& key);

// "BADSIG", "NOTAUTH": names as in the RFCs, for messages.
std::string tsigErrorName(std::uint16_t error);
std::string rcodeName(ldns_pkt_rcode rcode);

}  // namespace certfleet::rfc2136
