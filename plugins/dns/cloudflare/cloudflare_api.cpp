#include "cloudflare_api.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace certfleet::cloudflare {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// Cloudflare's Free plan takes at most 200 operations per batch request; larger plans more.
constexpr std::size_t kMaxBatchOperations = 200;

// A broken server that reports ever more pages must not keep a run busy.
constexpr int kMaxPages = 1000;

// After this many 429 answers in a row the call gives up even with time left: something
// else is eating the account's request budget.
constexpr int kMaxRateLimitedAttempts = 6;

constexpr std::size_t kMaxErrorText = 300;

// Cloudflare's code for "An identical record already exists."
constexpr long kIdenticalRecordExists = 81058;

std::string toLower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string singleLine(std::string text) {
  for (char& c : text) {
    if (c == '\r' || c == '\n' || c == '\t') {
      c = ' ';
    }
  }
  if (text.size() > kMaxErrorText) {
    text = text.substr(0, kMaxErrorText) + "...";
  }
  return text;
}

std::string stringField(const Json& object, const char* key) {
  if (object.is_object() && object.contains(key) && object[key].is_string()) {
    return object[key].get<std::string>();
  }
  return {};
}

// "10000 Authentication error; 9109 ..." from Cloudflare's `errors` array.
std::string errorsText(const Json& body, std::vector<long>* codes) {
  std::string text;
  if (!body.is_object() || !body.contains("errors") || !body["errors"].is_array()) {
    return text;
  }
  for (const Json& error : body["errors"]) {
    if (!error.is_object()) {
      continue;
    }
    long code = 0;
    if (error.contains("code") && error["code"].is_number_integer()) {
      code = error["code"].get<long>();
    }
    if (codes != nullptr) {
      codes->push_back(code);
    }
    if (!text.empty()) {
      text += "; ";
    }
    text += std::to_string(code) + " " + singleLine(stringField(error, "message"));
  }
  return text;
}

// Seconds to wait after a 429: Cloudflare sends Retry-After in seconds; without it the
// wait doubles per attempt.
std::chrono::seconds retryAfter(const HttpResponse& response, int attempt) {
  std::optional<std::string> header = response.header("retry-after");
  if (header && !header->empty() &&
      std::all_of(header->begin(), header->end(),
                  [](unsigned char c) { return std::isdigit(c) != 0; }) &&
      header->size() < 7) {
    return std::chrono::seconds(std::stol(*header));
  }
  return std::chrono::seconds(std::min(1L << std::min(attempt, 6), 60L));
}

long number(const Json& object, const char* key, long fallback) {
  if (object.is_object() && object.contains(key) && object[key].is_number_integer()) {
    return object[key].get<long>();
  }
  return fallback;
}

// True while result_info says pages remain after `page`.
bool morePages(const Json& body, long page) {
  if (!body.contains("result_info") || !body["result_info"].is_object()) {
    return false;
  }
  return page < number(body["result_info"], "total_pages", page);
}

}  // namespace

std::string encodeComponent(const std::string& text) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string encoded;
  for (unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_' || c == '~') {
      encoded += static_cast<char>(c);
    } else {
      encoded += '%';
      encoded += kHex[c >> 4];
      encoded += kHex[c & 0x0f];
    }
  }
  return encoded;
}

std::string txtText(const std::string& content) {
  if (content.size() >= 2 && content.front() == '"' && content.back() == '"') {
    return content.substr(1, content.size() - 2);
  }
  return content;
}

CloudflareApi::CloudflareApi(Services& services, const ApiConfig& config)
    : services_(services), config_(config) {}

Result<Json> CloudflareApi::call(const std::string& method,
                                 const std::string& path_and_query,
                                 const std::optional<Json>& body,
                                 std::vector<long>* error_codes) {
  HttpRequest request;
  request.method = method;
  request.url = config_.base_url + path_and_query;
  request.headers.emplace_back("Authorization", "Bearer " + config_.token.reveal());
  request.headers.emplace_back("Accept", "application/json");
  if (body) {
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = body->dump(-1, ' ', false, Json::error_handler_t::replace);
  }
  const std::string what = method + " " + request.url;

  for (int attempt = 1;; ++attempt) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(services_.deadline() - Clock::now());
    if (left.count() <= 0) {
      return deadlineExceeded(what + ": the run's deadline passed");
    }
    request.timeout = std::min(config_.timeout, left);
    services_.log(LogLevel::kTrace, what);
    Result<HttpResponse> response = services_.http(request);
    if (!response.ok()) {
      return response.status();
    }

    if (response->status == 429) {
      if (attempt >= kMaxRateLimitedAttempts) {
        return unavailable(what + ": rate limited (http 429) " + std::to_string(attempt) +
                           " times in a row");
      }
      std::chrono::seconds wait = retryAfter(*response, attempt);
      if (Clock::now() + wait >= services_.deadline()) {
        return deadlineExceeded(what + ": rate limited (http 429) and told to wait " +
                                std::to_string(wait.count()) + "s, past the run's deadline");
      }
      services_.log(LogLevel::kWarn, what + ": rate limited (http 429), retrying in " +
                                         std::to_string(wait.count()) + "s");
      // Short naps, because an interrupted run moves the deadline to now.
      Clock::time_point wake = Clock::now() + wait;
      while (Clock::now() < wake) {
        if (Clock::now() >= services_.deadline()) {
          return deadlineExceeded(what + ": the run's deadline passed while waiting out a 429");
        }
        std::this_thread::sleep_for(
            std::min<Clock::duration>(wake - Clock::now(), std::chrono::milliseconds(100)));
      }
      continue;
    }

    Json parsed = Json::parse(response->body, nullptr, false);
    const std::string code = "http " + std::to_string(response->status);
    std::string detail =
        parsed.is_discarded() ? singleLine(response->body) : errorsText(parsed, error_codes);
    std::string suffix = detail.empty() ? "" : ": " + detail;
    bool success = !parsed.is_discarded() && parsed.is_object() && parsed.contains("success") &&
                   parsed["success"].is_boolean() && parsed["success"].get<bool>();
    if (response->status >= 200 && response->status < 300 && success) {
      return parsed;
    }
    if (response->status == 401 || response->status == 403) {
      return permissionDenied(what + ": api token refused or lacking a permission (" + code + ")" +
                              suffix);
    }
    if (response->status >= 500) {
      return unavailable(what + ": server error (" + code + ")" + suffix);
    }
    if (response->status >= 400) {
      return invalidArgument(what + ": request refused (" + code + ")" + suffix);
    }
    return internalError(what + ": unexpected answer (" + code + ")" + suffix);
  }
}

Result<std::optional<ZoneRef>> CloudflareApi::zoneByName(const std::string& name) {
  std::vector<ZoneRef> found;
  for (long page = 1; page <= kMaxPages; ++page) {
    std::string query = "/zones?name=" + encodeComponent(name);
    if (!config_.account_id.empty()) {
      query += "&account.id=" + encodeComponent(config_.account_id);
    }
    query += "&per_page=50&page=" + std::to_string(page);
    Result<Json> body = call("GET", query, std::nullopt, nullptr);
    if (!body.ok()) {
      return body.status();
    }
    if (!body->contains("result") || !(*body)["result"].is_array()) {
      return internalError("GET " + config_.base_url + query + ": answer has no result list");
    }
    for (const Json& zone : (*body)["result"]) {
      ZoneRef ref{stringField(zone, "id"), toLower(stringField(zone, "name")),
                  stringField(zone, "status")};
      if (!ref.id.empty() && ref.name == name) {
        found.push_back(std::move(ref));
      }
    }
    if ((*body)["result"].empty() || !morePages(*body, page)) {
      break;
    }
  }

  std::vector<ZoneRef> active;
  std::copy_if(found.begin(), found.end(), std::back_inserter(active),
               [](const ZoneRef& zone) { return zone.status == "active"; });
  if (active.size() > 1) {
    return invalidArgument("zone " + name + " is active in " + std::to_string(active.size()) +
                           " accounts the token can see: set account_id or zone_id");
  }
  if (active.size() == 1) {
    return std::optional<ZoneRef>(active.front());
  }
  if (!found.empty()) {
    // Records in a zone that is not active are never served: the challenge would fail later
    // and less clearly.
    return failedPrecondition("zone " + name + " is " + found.front().status +
                              ", not active, on cloudflare");
  }
  return std::optional<ZoneRef>();
}

Result<Created> CloudflareApi::createTxt(const std::string& zone_id,
                                         const std::string& name,
                                         const std::string& content,
                                         std::uint32_t ttl) {
  Json body = {{"type", "TXT"}, {"name", name}, {"content", content}, {"ttl", ttl}};
  std::vector<long> codes;
  Result<Json> answer =
      call("POST", "/zones/" + encodeComponent(zone_id) + "/dns_records", body, &codes);
  if (!answer.ok()) {
    if (std::find(codes.begin(), codes.end(), kIdenticalRecordExists) != codes.end()) {
      return Created{"", true};
    }
    return answer.status();
  }
  std::string id = answer->contains("result") ? stringField((*answer)["result"], "id") : "";
  if (id.empty()) {
    return internalError("POST " + config_.base_url + "/zones/" + zone_id +
                         "/dns_records: answer has no record id");
  }
  return Created{id, false};
}

Result<std::vector<RecordRef>> CloudflareApi::listTxt(const std::string& zone_id,
                                                      const std::string& name) {
  std::vector<RecordRef> records;
  for (long page = 1; page <= kMaxPages; ++page) {
    std::string query = "/zones/" + encodeComponent(zone_id) +
                        "/dns_records?type=TXT&name=" + encodeComponent(name) +
                        "&per_page=100&page=" + std::to_string(page);
    Result<Json> body = call("GET", query, std::nullopt, nullptr);
    if (!body.ok()) {
      return body.status();
    }
    if (!body->contains("result") || !(*body)["result"].is_array()) {
      return internalError("GET " + config_.base_url + query + ": answer has no result list");
    }
    for (const Json& record : (*body)["result"]) {
      // The name filter is exact on Cloudflare's side; checking again costs nothing and keeps
      // a lax server from handing out another name's records for deletion.
      if (toLower(stringField(record, "name")) != name || stringField(record, "type") != "TXT") {
        continue;
      }
      records.push_back(RecordRef{stringField(record, "id"), stringField(record, "content")});
    }
    if ((*body)["result"].empty() || !morePages(*body, page)) {
      break;
    }
  }
  return records;
}

Status CloudflareApi::deleteRecords(const std::string& zone_id,
                                    const std::vector<std::string>& ids) {
  for (std::size_t start = 0; start < ids.size(); start += kMaxBatchOperations) {
    Json deletes = Json::array();
    for (std::size_t i = start; i < std::min(ids.size(), start + kMaxBatchOperations); ++i) {
      deletes.push_back({{"id", ids[i]}});
    }
    Result<Json> answer = call("POST", "/zones/" + encodeComponent(zone_id) + "/dns_records/batch",
                               Json{{"deletes", std::move(deletes)}}, nullptr);
    if (!answer.ok()) {
      return answer.status();
    }
  }
  return {};
}

}  // namespace certfleet::cloudflare
