// The dns stage plugin `rfc2136`: DNS-01 records through RFC 2136 dynamic updates signed
// with TSIG (RFC 8945), as BIND, Knot and PowerDNS accept them.
//
// Each call opens one TCP connection to the configured server, finds the zone of every
// record (from the `zone` setting, or by SOA queries walking up the name), and sends one
// update per zone; a batch too large for one 64 KiB message goes out in several.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "certfleet/plugin.hpp"

#include "dns_connection.hpp"
#include "ldns_ptr.hpp"
#include "messages.hpp"
#include "server_address.hpp"

namespace certfleet::rfc2136 {
namespace {

// The update RRs of one message stay under this many bytes (uncompressed bound), which
// leaves room for the header, the zone section and the TSIG record below TCP's 65535.
constexpr std::size_t kUpdateBytesPerMessage = 60000;

constexpr std::int64_t kMaxTtl = 2147483647;  // RFC 2181 8

const char* const kKnownSettings[] = {"server",      "zone", "tsig_name", "tsig_algorithm",
                                      "tsig_secret", "ttl",  "timeout"};

std::string toLower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string trimmed(const std::string& text) {
  const char* const kSpace = " \t\r\n";
  std::size_t first = text.find_first_not_of(kSpace);
  if (first == std::string::npos) {
    return {};
  }
  std::size_t last = text.find_last_not_of(kSpace);
  return text.substr(first, last - first + 1);
}

bool isBase64(const std::string& text) {
  if (text.empty() || text.size() % 4 != 0) {
    return false;
  }
  std::size_t padding = 0;
  while (padding < 2 && text[text.size() - 1 - padding] == '=') {
    ++padding;
  }
  if (!std::all_of(text.begin(), text.end() - static_cast<std::ptrdiff_t>(padding),
                   [](unsigned char c) { return std::isalnum(c) || c == '+' || c == '/'; })) {
    return false;
  }
  // ldns also refuses stray bits after the last byte; decoding here finds that before the
  // first update would.
  ldns_rdf* decoded = nullptr;
  if (ldns_str2rdf_b64(&decoded, text.c_str()) != LDNS_STATUS_OK || decoded == nullptr) {
    return false;
  }
  volatile std::uint8_t* bytes = ldns_rdf_data(decoded);
  for (std::size_t i = 0; i < ldns_rdf_size(decoded); ++i) {
    bytes[i] = 0;
  }
  ldns_rdf_deep_free(decoded);
  return true;
}

std::string plural(std::size_t count, const char* word) {
  return std::to_string(count) + " " + word + (count == 1 ? "" : "s");
}

}  // namespace

class Rfc2136Plugin final : public DnsPlugin {
 public:
  Status configure(const Settings& settings, Services& services) override;
  Status present(const std::vector<TxtRecord>& records) override;
  Status cleanup(const std::vector<TxtRecord>& records) override;

 private:
  struct ZoneBatch {
    std::string zone;  // without the trailing dot
    std::vector<const TxtRecord*> records;
  };

  Status apply(const std::vector<TxtRecord>& records, bool remove);
  Result<std::vector<ZoneBatch>> groupByZone(DnsConnection& connection,
                                             const std::vector<TxtRecord>& records);
  Result<std::string> findZone(DnsConnection& connection,
                               const ldns_rdf* name,
                               std::map<std::string, bool>& apex_cache);
  Result<bool> isZoneApex(DnsConnection& connection, const ldns_rdf* name);
  Status sendUpdates(DnsConnection& connection, const ZoneBatch& batch, bool remove);
  Status sendUpdate(DnsConnection& connection,
                    const std::string& zone,
                    const std::vector<RrPtr>& updates);
  Status checkUpdateReply(IncomingMessage& reply,
                          const OutgoingMessage& request,
                          const std::string& zone) const;

  Services* services_ = nullptr;
  ServerAddress server_;
  std::string zone_;  // empty: discover per record
  TsigKey key_;
  std::uint32_t ttl_ = 60;
  std::chrono::milliseconds timeout_{10000};

  // Zones found by discovery, by lower-case record name: cleanup reuses what present found.
  std::mutex zones_mutex_;
  std::map<std::string, std::string> zone_of_name_;
};

Status Rfc2136Plugin::configure(const Settings& settings, Services& services) {
  services_ = &services;
  zone_.clear();
  {
    std::lock_guard<std::mutex> lock(zones_mutex_);
    zone_of_name_.clear();
  }

  for (const auto& [key, entry] : settings.entries()) {
    if (std::find(std::begin(kKnownSettings), std::end(kKnownSettings), key) ==
        std::end(kKnownSettings)) {
      return settings.error(key, "unknown setting '" + key +
                                     "' (known: server, zone, tsig_name, tsig_algorithm, "
                                     "tsig_secret, ttl, timeout)");
    }
  }

  Result<std::string> server = settings.require("server");
  if (!server.ok()) {
    return server.status();
  }
  Result<ServerAddress> address = parseServerAddress(*server);
  if (!address.ok()) {
    return settings.error("server", address.status().message());
  }
  server_ = std::move(*address);

  if (settings.has("zone")) {
    Result<std::string> zone = settings.require("zone");
    if (!zone.ok()) {
      return zone.status();
    }
    Result<RdfPtr> parsed = parseName(*zone);
    if (!parsed.ok()) {
      return settings.error("zone", "zone " + parsed.status().message());
    }
    zone_ = nameToText(parsed->get());
  }

  Result<std::string> tsig_name = settings.require("tsig_name");
  if (!tsig_name.ok()) {
    return tsig_name.status();
  }
  if (!parseName(*tsig_name).ok()) {
    return settings.error("tsig_name", "tsig_name '" + *tsig_name + "' is not a valid dns name");
  }
  key_.name = *tsig_name;

  std::string algorithm = toLower(settings.getOr("tsig_algorithm", "hmac-sha256"));
  if (!algorithm.empty() && algorithm.back() == '.') {
    algorithm.pop_back();
  }
  if (algorithm != "hmac-sha256" && algorithm != "hmac-sha512") {
    return settings.error("tsig_algorithm", "unsupported tsig_algorithm '" +
                                                settings.getOr("tsig_algorithm", "") +
                                                "': use hmac-sha256 or hmac-sha512");
  }
  key_.algorithm = algorithm;

  Result<Secret> secret = settings.requireSecret("tsig_secret");
  if (!secret.ok()) {
    return secret.status();
  }
  // A key file usually ends with a newline; the value never contains spaces.
  Secret clean(trimmed(secret->reveal()));
  if (clean.empty()) {
    return settings.error("tsig_secret", "secret 'tsig_secret' is empty");
  }
  if (!isBase64(clean.reveal())) {
    return settings.error("tsig_secret",
                          "secret 'tsig_secret' is not base64 (the secret of the server's key "
                          "statement, as tsig-keygen prints it)");
  }
  key_.secret = std::move(clean);

  Result<std::int64_t> ttl = settings.getInt("ttl", 60);
  if (!ttl.ok()) {
    return ttl.status();
  }
  if (*ttl < 0 || *ttl > kMaxTtl) {
    return settings.error("ttl", "'ttl' must be between 0 and " + std::to_string(kMaxTtl) +
                                     " seconds, got " + std::to_string(*ttl));
  }
  ttl_ = static_cast<std::uint32_t>(*ttl);

  Result<std::chrono::milliseconds> timeout =
      settings.getDuration("timeout", std::chrono::milliseconds(10000));
  if (!timeout.ok()) {
    return timeout.status();
  }
  if (timeout->count() <= 0) {
    return settings.error("timeout", "'timeout' must be longer than zero");
  }
  timeout_ = *timeout;
  return {};
}

Status Rfc2136Plugin::present(const std::vector<TxtRecord>& records) {
  return apply(records, false);
}

Status Rfc2136Plugin::cleanup(const std::vector<TxtRecord>& records) {
  return apply(records, true);
}

Status Rfc2136Plugin::apply(const std::vector<TxtRecord>& records, bool remove) {
  if (records.empty()) {
    return {};
  }
  DnsConnection connection(server_, timeout_);
  Result<std::vector<ZoneBatch>> batches = groupByZone(connection, records);
  if (!batches.ok()) {
    return batches.status().withContext("dns.rfc2136");
  }

  // A failed present stops at once: the issuance fails anyway and cleanup follows. A
  // failed cleanup goes on with the other zones so that as little as possible stays behind.
  Status first_failure;
  std::size_t failures = 0;
  for (const ZoneBatch& batch : *batches) {
    Status sent = sendUpdates(connection, batch, remove);
    if (sent.ok()) {
      continue;
    }
    if (!remove) {
      return sent.withContext("dns.rfc2136");
    }
    if (failures++ == 0) {
      first_failure = sent;
    }
  }
  if (failures > 1) {
    first_failure =
        Status(first_failure.code(),
               first_failure.message() + " (and " + plural(failures - 1, "more zone") + " failed)");
  }
  return first_failure.withContext("dns.rfc2136");
}

Result<std::vector<Rfc2136Plugin::ZoneBatch>> Rfc2136Plugin::groupByZone(
    DnsConnection& connection, const std::vector<TxtRecord>& records) {
  std::vector<ZoneBatch> batches;
  std::map<std::string, bool> apex_cache;
  RdfPtr fixed_zone;
  if (!zone_.empty()) {
    fixed_zone = std::move(*parseName(zone_));
  }

  for (const TxtRecord& record : records) {
    Result<RdfPtr> name = parseName(record.fqdn);
    if (!name.ok()) {
      return invalidArgument("record " + name.status().message());
    }

    std::string zone;
    if (fixed_zone) {
      if (!isInside(name->get(), fixed_zone.get())) {
        return invalidArgument("record '" + record.fqdn + "' is not inside zone '" + zone_ +
                               "' (setting 'zone')");
      }
      zone = zone_;
    } else {
      std::string key = toLower(nameToText(name->get()));
      {
        std::lock_guard<std::mutex> lock(zones_mutex_);
        auto known = zone_of_name_.find(key);
        if (known != zone_of_name_.end()) {
          zone = known->second;
        }
      }
      if (zone.empty()) {
        Result<std::string> found = findZone(connection, name->get(), apex_cache);
        if (!found.ok()) {
          return found.status();
        }
        zone = *found;
        services_->log(LogLevel::kDebug, "record " + record.fqdn + " is in zone " + zone);
        std::lock_guard<std::mutex> lock(zones_mutex_);
        zone_of_name_[key] = zone;
      }
    }

    auto batch = std::find_if(batches.begin(), batches.end(),
                              [&](const ZoneBatch& existing) { return existing.zone == zone; });
    if (batch == batches.end()) {
      batches.push_back(ZoneBatch{zone, {}});
      batch = std::prev(batches.end());
    }
    batch->records.push_back(&record);
  }
  return batches;
}

Result<std::string> Rfc2136Plugin::findZone(DnsConnection& connection,
                                            const ldns_rdf* name,
                                            std::map<std::string, bool>& apex_cache) {
  // The zone is the closest enclosing name that owns an SOA on this server. Counting labels
  // would be wrong for example.co.uk or a delegated _acme-challenge subzone.
  RdfPtr candidate(ldns_rdf_clone(name));
  while (candidate && ldns_dname_label_count(candidate.get()) > 0) {
    std::string text = nameToText(candidate.get());
    std::string key = toLower(text);
    auto cached = apex_cache.find(key);
    bool apex = false;
    if (cached != apex_cache.end()) {
      apex = cached->second;
    } else {
      Result<bool> asked = isZoneApex(connection, candidate.get());
      if (!asked.ok()) {
        return asked.status().withContext("find the zone of " + nameToText(name));
      }
      apex = *asked;
      apex_cache[key] = apex;
    }
    if (apex) {
      return key;
    }
    candidate.reset(ldns_dname_left_chop(candidate.get()));
  }
  return notFound("find the zone of " + nameToText(name) + ": " + server_.text +
                  " serves no zone that contains it (no soa at the name or any parent); "
                  "check 'server' or set 'zone'");
}

Result<bool> Rfc2136Plugin::isZoneApex(DnsConnection& connection, const ldns_rdf* name) {
  Result<OutgoingMessage> query = makeSoaQuery(name);
  if (!query.ok()) {
    return query.status();
  }
  Result<std::vector<std::uint8_t>> wire = connection.exchange(query->wire);
  if (!wire.ok()) {
    return wire.status();
  }
  Result<IncomingMessage> reply = parseReply(std::move(*wire), *query);
  if (!reply.ok()) {
    return reply.status().withContext("soa query to " + server_.text);
  }
  if (ldns_pkt_get_rcode(reply->packet.get()) != LDNS_RCODE_NOERROR) {
    return false;
  }
  const ldns_rr_list* answer = ldns_pkt_answer(reply->packet.get());
  for (std::size_t i = 0; i < ldns_rr_list_rr_count(answer); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answer, i);
    if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_SOA &&
        ldns_dname_compare(ldns_rr_owner(rr), name) == 0) {
      return true;
    }
  }
  return false;
}

Status Rfc2136Plugin::sendUpdates(DnsConnection& connection, const ZoneBatch& batch, bool remove) {
  // Split so that no message would exceed what TCP's 16-bit length can frame.
  std::vector<std::vector<RrPtr>> messages(1);
  std::size_t bytes = 0;
  for (const TxtRecord* record : batch.records) {
    Result<RrPtr> rr = makeTxtRr(*record, ttl_, remove);
    if (!rr.ok()) {
      return rr.status();
    }
    std::size_t size = txtRrWireBound(*record);
    if (bytes + size > kUpdateBytesPerMessage && !messages.back().empty()) {
      messages.emplace_back();
      bytes = 0;
    }
    messages.back().push_back(std::move(*rr));
    bytes += size;
  }

  services_->log(LogLevel::kInfo,
                 std::string(remove ? "removing " : "adding ") +
                     plural(batch.records.size(), "txt record") + (remove ? " from" : " to") +
                     " zone " + batch.zone + " on " + server_.text +
                     (messages.size() > 1 ? " in " + plural(messages.size(), "update") : ""));
  for (const std::vector<RrPtr>& updates : messages) {
    Status sent = sendUpdate(connection, batch.zone, updates);
    if (!sent.ok()) {
      return sent;
    }
  }
  return {};
}

Status Rfc2136Plugin::sendUpdate(DnsConnection& connection,
                                 const std::string& zone,
                                 const std::vector<RrPtr>& updates) {
  std::string context = "update of zone " + zone + " on " + server_.text;
  Result<RdfPtr> zone_name = parseName(zone);
  if (!zone_name.ok()) {
    return zone_name.status().withContext(context);
  }
  Result<OutgoingMessage> request = makeSignedUpdate(zone_name->get(), updates, key_);
  if (!request.ok()) {
    return request.status().withContext(context);
  }
  Result<std::vector<std::uint8_t>> wire = connection.exchange(request->wire);
  if (!wire.ok()) {
    return wire.status().withContext(context);
  }
  Result<IncomingMessage> reply = parseReply(std::move(*wire), *request);
  if (!reply.ok()) {
    return reply.status().withContext(context);
  }
  services_->log(LogLevel::kDebug, context + ": " + plural(updates.size(), "record") + " in " +
                                       std::to_string(request->wire.size()) + " bytes, " +
                                       rcodeName(ldns_pkt_get_rcode(reply->packet.get())));
  return checkUpdateReply(*reply, *request, zone).withContext(context);
}

Status Rfc2136Plugin::checkUpdateReply(IncomingMessage& reply,
                                       const OutgoingMessage& request,
                                       const std::string& zone) const {
  std::string key = "tsig key '" + key_.name + "'";
  std::uint16_t tsig_error = tsigError(reply);
  // A reply carrying a TSIG error is unsigned by design (RFC 8945 5.3.2): report it first.
  switch (tsig_error) {
    case 0:
      break;
    case 16:
      return permissionDenied(key + " refused: signature does not verify (BADSIG); " +
                              "tsig_secret or tsig_algorithm differ from the server's key");
    case 17:
      return permissionDenied(key + " (" + key_.algorithm +
                              ") is unknown to the server (BADKEY); check tsig_name and "
                              "tsig_algorithm against the server's key statement");
    case 18:
      return permissionDenied(key +
                              " refused: signature time outside the server's window "
                              "(BADTIME); the clocks of this machine and the server differ "
                              "by more than 300s");
    default:
      return permissionDenied(key + " refused (" + tsigErrorName(tsig_error) + ")");
  }

  ldns_pkt_rcode rcode = ldns_pkt_get_rcode(reply.packet.get());
  if (!tsigVerifies(reply, request, key_)) {
    return internalError("the reply (" + rcodeName(rcode) + ") carries no valid signature of " +
                         key + ", so it cannot be trusted");
  }

  switch (rcode) {
    case LDNS_RCODE_NOERROR:
      return {};
    case LDNS_RCODE_REFUSED:
      return permissionDenied("refused (REFUSED): the update-policy of zone " + zone +
                              " does not let " + key + " change these txt records");
    case LDNS_RCODE_NOTZONE:
      return invalidArgument("a record name lies outside zone " + zone + " (NOTZONE)");
    case LDNS_RCODE_NOTAUTH:
      return invalidArgument("the server is not authoritative for zone " + zone +
                             " (NOTAUTH); check 'server' and 'zone'");
    case LDNS_RCODE_SERVFAIL:
      return unavailable("the server failed to apply the update (SERVFAIL)");
    default:
      return internalError("unexpected answer " + rcodeName(rcode));
  }
}

}  // namespace certfleet::rfc2136

CERTFLEET_PLUGIN("rfc2136", certfleet::Stage::kDns, "0.1.0", certfleet::rfc2136::Rfc2136Plugin)
