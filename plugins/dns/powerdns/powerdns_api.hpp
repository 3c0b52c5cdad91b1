// The few calls of the PowerDNS Authoritative HTTP API (version 4.x, /api/v1) the plugin
// needs: list zones, read one TXT RRset, and PATCH a zone's RRsets. Every HTTP exchange goes
// through Services::http; the API key travels in the X-API-Key header only, so it appears in
// no URL and no message.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "certfleet/plugin.hpp"

namespace certfleet::powerdns {

struct ApiConfig {
  std::string url;  // "http://127.0.0.1:8081", no trailing slash
  Secret api_key;
  std::string server_id = "localhost";
  std::chrono::milliseconds timeout{10000};
};

struct Zone {
  std::string id;    // PowerDNS's zone id, used in URLs: "example.test."
  std::string name;  // lower case, without the trailing dot: "example.test"
};

struct TxtValue {
  std::string content;  // presentation form, quotes included: "\"abc\""
  bool disabled = false;
};

// A name's TXT RRset as the server holds it now.
struct TxtRrset {
  bool exists = false;
  std::uint32_t ttl = 0;
  std::vector<TxtValue> values;
};

// One RRset of a PATCH: REPLACE with `values`, or DELETE when `values` is empty.
struct RrsetChange {
  std::string name;  // without the trailing dot
  std::uint32_t ttl = 0;
  std::vector<TxtValue> values;
};

class PowerDnsApi {
 public:
  PowerDnsApi(Services& services, const ApiConfig& config);

  // GET /api/v1/servers/{server_id}/zones
  Result<std::vector<Zone>> listZones();

  // GET /api/v1/servers/{server_id}/zones/{zone}, narrowed to `name`'s TXT RRset with the
  // rrset_name and rrset_type filters (PowerDNS 4.7+; older servers send the whole zone,
  // which is searched the same way).
  Result<TxtRrset> txtRrset(const Zone& zone, const std::string& name);

  // PATCH /api/v1/servers/{server_id}/zones/{zone}: every change in one request, which
  // PowerDNS applies in one transaction.
  Status patchZone(const Zone& zone, const std::vector<RrsetChange>& changes);

  // The URL of a zone as a message names it.
  std::string zoneUrl(const Zone& zone) const;

 private:
  Result<HttpResponse> send(HttpRequest request);
  Status failure(const HttpResponse& response,
                 const HttpRequest& request,
                 const std::string& zone_name) const;
  std::string zonesUrl() const;

  Services& services_;
  const ApiConfig& config_;
};

// "example.test" -> "example.test." as PowerDNS names a plain zone's id.
std::string zoneIdOf(const std::string& zone_name);

}  // namespace certfleet::powerdns
