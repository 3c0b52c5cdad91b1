#include "powerdns_api.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace certfleet::powerdns {
namespace {

using Json = nlohmann::json;

// Enough of an error body to explain it; a proxy's HTML page is cut short.
constexpr std::size_t kMaxErrorText = 300;

std::string toLower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string withoutTrailingDot(std::string name) {
  if (!name.empty() && name.back() == '.') {
    name.pop_back();
  }
  return name;
}

// Percent-encodes everything but RFC 3986 unreserved characters and '=', which PowerDNS
// uses in the ids of zones with unusual names.
std::string encodeComponent(const std::string& text) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string encoded;
  for (unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~' || c == '=') {
      encoded += static_cast<char>(c);
    } else {
      encoded += '%';
      encoded += kHex[c >> 4];
      encoded += kHex[c & 0x0f];
    }
  }
  return encoded;
}

std::string singleLine(std::string text) {
  for (char& c : text) {
    if (c == '\r' || c == '\n' || c == '\t') {
      c = ' ';
    }
  }
  while (!text.empty() && text.back() == ' ') {
    text.pop_back();
  }
  if (text.size() > kMaxErrorText) {
    text = text.substr(0, kMaxErrorText) + "...";
  }
  return text;
}

// PowerDNS explains a refusal as {"error": "..."}; its web server's own errors are plain text.
std::string errorText(const HttpResponse& response) {
  Json body = Json::parse(response.body, nullptr, false);
  if (!body.is_discarded() && body.is_object() && body.contains("error") &&
      body["error"].is_string()) {
    return singleLine(body["error"].get<std::string>());
  }
  return singleLine(response.body);
}

std::string serializable(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace

std::string zoneIdOf(const std::string& zone_name) {
  return zone_name + ".";
}

PowerDnsApi::PowerDnsApi(Services& services, const ApiConfig& config)
    : services_(services), config_(config) {}

std::string PowerDnsApi::zonesUrl() const {
  return config_.url + "/api/v1/servers/" + encodeComponent(config_.server_id) + "/zones";
}

std::string PowerDnsApi::zoneUrl(const Zone& zone) const {
  return zonesUrl() + "/" + encodeComponent(zone.id);
}

Result<HttpResponse> PowerDnsApi::send(HttpRequest request) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      services_.deadline() - std::chrono::steady_clock::now());
  if (left.count() <= 0) {
    return deadlineExceeded(request.method + " " + request.url + ": the run's deadline passed");
  }
  request.timeout = std::min(config_.timeout, left);
  request.headers.emplace_back("X-API-Key", config_.api_key.reveal());
  request.headers.emplace_back("Accept", "application/json");
  if (!request.body.empty()) {
    request.headers.emplace_back("Content-Type", "application/json");
  }
  services_.log(LogLevel::kTrace, request.method + " " + request.url);
  return services_.http(request);
}

Status PowerDnsApi::failure(const HttpResponse& response,
                            const HttpRequest& request,
                            const std::string& zone_name) const {
  const std::string what = request.method + " " + request.url;
  const std::string code = "http " + std::to_string(response.status);
  if (response.status == 401 || response.status == 403) {
    return permissionDenied(what + ": api key refused (" + code +
                            "): check api_key against the server's api-key");
  }
  if (response.status == 404) {
    if (zone_name.empty()) {
      return invalidArgument(what + ": no server '" + config_.server_id + "' (" + code +
                             "): check server_id and url");
    }
    return invalidArgument(what + ": zone '" + zone_name + "' not found on server '" +
                           config_.server_id + "' (" + code + ")");
  }
  std::string detail = errorText(response);
  std::string suffix = detail.empty() ? "" : ": " + detail;
  if (response.status >= 500) {
    return unavailable(what + ": server error (" + code + ")" + suffix);
  }
  if (response.status == 400 || response.status == 422) {
    return invalidArgument(what + ": request refused (" + code + ")" + suffix);
  }
  return internalError(what + ": unexpected answer (" + code + ")" + suffix);
}

Result<std::vector<Zone>> PowerDnsApi::listZones() {
  HttpRequest request;
  request.method = "GET";
  request.url = zonesUrl();
  Result<HttpResponse> response = send(request);
  if (!response.ok()) {
    return response.status();
  }
  if (response->status != 200) {
    return failure(*response, request, "");
  }

  Json body = Json::parse(response->body, nullptr, false);
  if (body.is_discarded() || !body.is_array()) {
    return internalError("GET " + request.url + ": answer is not a json array of zones");
  }
  std::vector<Zone> zones;
  for (const Json& entry : body) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string()) {
      continue;
    }
    Zone zone;
    zone.name = toLower(withoutTrailingDot(entry["name"].get<std::string>()));
    zone.id = entry.contains("id") && entry["id"].is_string() ? entry["id"].get<std::string>()
                                                              : zoneIdOf(zone.name);
    zones.push_back(std::move(zone));
  }
  return zones;
}

Result<TxtRrset> PowerDnsApi::txtRrset(const Zone& zone, const std::string& name) {
  HttpRequest request;
  request.method = "GET";
  request.url = zoneUrl(zone) + "?rrset_name=" + encodeComponent(name + ".") + "&rrset_type=TXT";
  Result<HttpResponse> response = send(request);
  if (!response.ok()) {
    return response.status();
  }
  if (response->status != 200) {
    return failure(*response, request, zone.name);
  }

  Json body = Json::parse(response->body, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("rrsets") ||
      !body["rrsets"].is_array()) {
    return internalError("GET " + request.url + ": answer is not a zone with rrsets");
  }
  const std::string wanted = toLower(name);
  TxtRrset rrset;
  for (const Json& entry : body["rrsets"]) {
    if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
        !entry.contains("type") || entry["type"] != "TXT") {
      continue;
    }
    if (toLower(withoutTrailingDot(entry["name"].get<std::string>())) != wanted) {
      continue;
    }
    rrset.exists = true;
    if (entry.contains("ttl") && entry["ttl"].is_number_unsigned()) {
      rrset.ttl = entry["ttl"].get<std::uint32_t>();
    }
    if (!entry.contains("records") || !entry["records"].is_array()) {
      continue;
    }
    for (const Json& record : entry["records"]) {
      if (!record.is_object() || !record.contains("content") || !record["content"].is_string()) {
        continue;
      }
      TxtValue value;
      value.content = record["content"].get<std::string>();
      value.disabled = record.contains("disabled") && record["disabled"].is_boolean() &&
                       record["disabled"].get<bool>();
      rrset.values.push_back(std::move(value));
    }
  }
  return rrset;
}

Status PowerDnsApi::patchZone(const Zone& zone, const std::vector<RrsetChange>& changes) {
  Json rrsets = Json::array();
  for (const RrsetChange& change : changes) {
    Json rrset = {{"name", change.name + "."}, {"type", "TXT"}};
    if (change.values.empty()) {
      rrset["changetype"] = "DELETE";
    } else {
      rrset["changetype"] = "REPLACE";
      rrset["ttl"] = change.ttl;
      Json records = Json::array();
      for (const TxtValue& value : change.values) {
        records.push_back({{"content", value.content}, {"disabled", value.disabled}});
      }
      rrset["records"] = std::move(records);
    }
    rrsets.push_back(std::move(rrset));
  }

  HttpRequest request;
  request.method = "PATCH";
  request.url = zoneUrl(zone);
  request.body = serializable(Json{{"rrsets", std::move(rrsets)}});
  Result<HttpResponse> response = send(request);
  if (!response.ok()) {
    return response.status();
  }
  if (response->status != 204 && response->status != 200) {
    return failure(*response, request, zone.name);
  }
  return {};
}

}  // namespace certfleet::powerdns
