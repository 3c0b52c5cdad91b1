// The Cloudflare v4 API calls the plugin needs: find a zone by name, create a TXT record,
// list a name's TXT records, delete records in a batch. Every exchange goes through
// Services::http with the token in the Authorization header only, answers 429 by waiting
// for Retry-After within the run's deadline, and turns Cloudflare's `errors` array into
// the message of a failed Status.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "certfleet/plugin.hpp"

namespace certfleet::cloudflare {

struct ApiConfig {
  std::string base_url = "https://api.cloudflare.com/client/v4";  // no trailing slash
  Secret token;
  std::string account_id;  // empty: every account the token can see
  std::chrono::milliseconds timeout{30000};
};

struct ZoneRef {
  std::string id;
  std::string name;
  std::string status;  // "active", "pending", "moved", ...
};

struct RecordRef {
  std::string id;
  std::string content;
};

struct Created {
  std::string id;              // empty when the record was there already
  bool already_there = false;  // Cloudflare refused an identical duplicate (code 81058)
};

class CloudflareApi {
 public:
  CloudflareApi(Services& services, const ApiConfig& config);

  // GET /zones?name=NAME[&account.id=ID], every page. The one active zone of that name,
  // nullopt when there is none, or an error when several accounts hold it active.
  Result<std::optional<ZoneRef>> zoneByName(const std::string& name);

  // POST /zones/{zone_id}/dns_records
  Result<Created> createTxt(const std::string& zone_id,
                            const std::string& name,
                            const std::string& content,
                            std::uint32_t ttl);

  // GET /zones/{zone_id}/dns_records?type=TXT&name=NAME, every page.
  Result<std::vector<RecordRef>> listTxt(const std::string& zone_id, const std::string& name);

  // POST /zones/{zone_id}/dns_records/batch with `deletes` only, in chunks the smallest
  // plan accepts. Cloudflare runs each batch as one transaction.
  Status deleteRecords(const std::string& zone_id, const std::vector<std::string>& ids);

 private:
  // One API call: the parsed body of a successful answer, or the failure, with the codes
  // of Cloudflare's `errors` array in `error_codes` when given. 429 answers are retried
  // after Retry-After as long as the deadline allows.
  Result<nlohmann::json> call(const std::string& method,
                              const std::string& path_and_query,
                              const std::optional<nlohmann::json>& body,
                              std::vector<long>* error_codes);

  Services& services_;
  const ApiConfig& config_;
};

// Percent-encodes a query or path component.
std::string encodeComponent(const std::string& text);

// A TXT record's text as Cloudflare may return it, with or without surrounding quotes.
std::string txtText(const std::string& content);

}  // namespace certfleet::cloudflare
