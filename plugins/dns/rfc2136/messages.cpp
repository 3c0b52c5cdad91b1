#include "messages.hpp"

#include <algorithm>
#include <utility>

namespace certfleet::rfc2136 {
namespace {

// RFC 8945 recommends 300 s; BIND allows the same.
constexpr std::uint16_t kTsigFudgeSeconds = 300;
constexpr std::size_t kMaxTxtString = 255;

Result<std::vector<std::uint8_t>> toWire(ldns_pkt* packet) {
  std::uint8_t* data = nullptr;
  std::size_t size = 0;
  ldns_status status = ldns_pkt2wire(&data, packet, &size);
  WirePtr owned(data);
  if (status != LDNS_STATUS_OK) {
    return internalError(std::string("encode dns message: ") + ldns_get_errorstr_by_id(status));
  }
  return std::vector<std::uint8_t>(data, data + size);
}

}  // namespace

Result<RdfPtr> parseName(const std::string& text) {
  std::string absolute = text;
  if (absolute.empty() || absolute.back() != '.') {
    absolute += '.';
  }
  RdfPtr name(absolute.size() > 1 ? ldns_dname_new_frm_str(absolute.c_str()) : nullptr);
  if (!name) {
    return invalidArgument("'" + text + "' is not a valid dns name");
  }
  return name;
}

std::string nameToText(const ldns_rdf* name) {
  CharPtr text(ldns_rdf2str(name));
  if (!text) {
    return "?";
  }
  std::string result(text.get());
  if (result.size() > 1 && result.back() == '.') {
    result.pop_back();
  }
  return result;
}

bool isInside(const ldns_rdf* name, const ldns_rdf* zone) {
  return ldns_dname_compare(name, zone) == 0 || ldns_dname_is_subdomain(name, zone);
}

Result<RrPtr> makeTxtRr(const TxtRecord& record, std::uint32_t ttl, bool remove) {
  Result<RdfPtr> owner = parseName(record.fqdn);
  if (!owner.ok()) {
    return owner.status();
  }
  // Far below the 65535-byte rdata limit, and no digest comes near it.
  if (record.value.size() > 4096) {
    return invalidArgument("txt value for '" + record.fqdn + "' is longer than 4096 bytes");
  }

  RrPtr rr(ldns_rr_new());
  if (!rr) {
    return internalError("out of memory building a txt record");
  }
  ldns_rr_set_owner(rr.get(), owner->release());
  ldns_rr_set_type(rr.get(), LDNS_RR_TYPE_TXT);
  ldns_rr_set_class(rr.get(), remove ? LDNS_RR_CLASS_NONE : LDNS_RR_CLASS_IN);
  ldns_rr_set_ttl(rr.get(), remove ? 0 : ttl);

  // The bytes go in as they are, split into 255-byte strings; parsing presentation format
  // instead would interpret quotes and backslashes in the value.
  std::size_t offset = 0;
  do {
    std::size_t length = std::min(kMaxTxtString, record.value.size() - offset);
    std::uint8_t chunk[kMaxTxtString + 1];
    chunk[0] = static_cast<std::uint8_t>(length);
    std::copy_n(record.value.data() + offset, length, chunk + 1);
    ldns_rdf* rdf = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_STR, length + 1, chunk);
    if (rdf == nullptr || !ldns_rr_push_rdf(rr.get(), rdf)) {
      ldns_rdf_deep_free(rdf);
      return internalError("out of memory building a txt record");
    }
    offset += length;
  } while (offset < record.value.size());
  return rr;
}

std::size_t txtRrWireBound(const TxtRecord& record) {
  // Owner name (labels plus length bytes and root), type, class, TTL, rdlength, then one
  // length byte per 255-byte string.
  std::size_t name = record.fqdn.size() + 2;
  std::size_t strings = record.value.size() / kMaxTxtString + 1;
  return name + 10 + record.value.size() + strings;
}

Result<OutgoingMessage> makeSoaQuery(const ldns_rdf* name) {
  PktPtr packet(ldns_pkt_query_new(ldns_rdf_clone(name), LDNS_RR_TYPE_SOA, LDNS_RR_CLASS_IN, 0));
  if (!packet) {
    return internalError("out of memory building an soa query");
  }
  ldns_pkt_set_random_id(packet.get());
  Result<std::vector<std::uint8_t>> wire = toWire(packet.get());
  if (!wire.ok()) {
    return wire.status();
  }
  return OutgoingMessage{std::move(*wire), std::move(packet)};
}

Result<OutgoingMessage> makeSignedUpdate(const ldns_rdf* zone,
                                         const std::vector<RrPtr>& updates,
                                         const TsigKey& key) {
  RrListPtr list(ldns_rr_list_new());
  for (const RrPtr& rr : updates) {
    ldns_rr_list_push_rr(list.get(), ldns_rr_clone(rr.get()));
  }
  PktPtr packet(
      ldns_update_pkt_new(ldns_rdf_clone(zone), LDNS_RR_CLASS_IN, nullptr, list.get(), nullptr));
  if (!packet) {
    return internalError("out of memory building an update");
  }
  // ldns starts from a query with RD set; an update has no use for it.
  ldns_pkt_set_rd(packet.get(), false);
  ldns_pkt_set_random_id(packet.get());

  std::string algorithm = key.algorithm + ".";
  ldns_status signed_status =
      ldns_pkt_tsig_sign(packet.get(), key.name.c_str(), key.secret.reveal().c_str(),
                         kTsigFudgeSeconds, algorithm.c_str(), nullptr);
  if (signed_status != LDNS_STATUS_OK) {
    return internalError("sign update with tsig key '" + key.name + "' (" + key.algorithm +
                         "): " + ldns_get_errorstr_by_id(signed_status));
  }
  Result<std::vector<std::uint8_t>> wire = toWire(packet.get());
  if (!wire.ok()) {
    return wire.status();
  }
  return OutgoingMessage{std::move(*wire), std::move(packet)};
}

Result<IncomingMessage> parseReply(std::vector<std::uint8_t> wire, const OutgoingMessage& request) {
  ldns_pkt* parsed = nullptr;
  ldns_status status = ldns_wire2pkt(&parsed, wire.data(), wire.size());
  PktPtr packet(parsed);
  if (status != LDNS_STATUS_OK) {
    return internalError(std::string("malformed reply: ") + ldns_get_errorstr_by_id(status));
  }
  if (ldns_pkt_id(packet.get()) != ldns_pkt_id(request.packet.get()) ||
      !ldns_pkt_qr(packet.get())) {
    return internalError("reply does not answer the request (id or qr flag differ)");
  }
  if (ldns_pkt_get_opcode(packet.get()) != ldns_pkt_get_opcode(request.packet.get())) {
    return internalError("reply carries another opcode than the request");
  }
  return IncomingMessage{std::move(wire), std::move(packet)};
}

std::uint16_t tsigError(const IncomingMessage& reply) {
  const ldns_rr* tsig = ldns_pkt_tsig(reply.packet.get());
  if (tsig == nullptr || ldns_rr_rd_count(tsig) < 6) {
    return 0;
  }
  return ldns_rdf2native_int16(ldns_rr_rdf(tsig, 5));
}

bool tsigVerifies(IncomingMessage& reply, const OutgoingMessage& request, const TsigKey& key) {
  const ldns_rr* request_tsig = ldns_pkt_tsig(request.packet.get());
  if (request_tsig == nullptr || ldns_pkt_tsig(reply.packet.get()) == nullptr) {
    return false;
  }
  return ldns_pkt_tsig_verify(reply.packet.get(), reply.wire.data(), reply.wire.size(),
                              key.name.c_str(), key.secret.reveal().c_str(),
                              ldns_rr_rdf(request_tsig, 3));
}

std::string tsigErrorName(std::uint16_t error) {
  switch (error) {
    case 16:
      return "BADSIG";
    case 17:
      return "BADKEY";
    case 18:
      return "BADTIME";
    case 19:
      return "BADMODE";
    case 20:
      return "BADNAME";
    case 21:
      return "BADALG";
    case 22:
      return "BADTRUNC";
    case 23:
      return "BADCOOKIE";
    default:
      return "tsig error " + std::to_string(error);
  }
}

std::string rcodeName(ldns_pkt_rcode rcode) {
  const ldns_lookup_table* entry = ldns_lookup_by_id(ldns_rcodes, static_cast<int>(rcode));
  if (entry == nullptr || entry->name == nullptr) {
    return "rcode " + std::to_string(static_cast<int>(rcode));
  }
  return entry->name;
}

}  // namespace certfleet::rfc2136
