// The dns stage plugin `cloudflare`: DNS-01 records through the Cloudflare v4 API with an
// API token.
//
// Cloudflare keeps each TXT value as a record of its own, so several values on one name
// coexist without any read-modify-write: present creates one record per value, and cleanup
// lists the name's TXT records and deletes those whose content is one of the given values,
// one batch request per zone.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <exception>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "certfleet/plugin.hpp"

#include "cloudflare_api.hpp"

namespace certfleet::cloudflare {
namespace {

constexpr const char* kContext = "dns.cloudflare";

// 120 s is valid on every plan (Cloudflare's floor is 60 s, 30 s on Enterprise) and is what
// other ACME clients use for Cloudflare, so resolvers forget a challenge value soon after
// the order is done. 1 means Cloudflare's "automatic", which is 300 s.
constexpr std::int64_t kDefaultTtl = 120;
constexpr std::int64_t kMinTtl = 30;
constexpr std::int64_t kMaxTtl = 86400;

const char* const kKnownSettings[] = {"api_token", "zone_id", "account_id",
                                      "base_url",  "ttl",     "timeout"};

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

std::optional<std::string> normalName(const std::string& name) {
  std::string text = toLower(name);
  if (!text.empty() && text.back() == '.') {
    text.pop_back();
  }
  if (text.empty() || text.size() > 253 || text.front() == '.' ||
      text.find("..") != std::string::npos) {
    return std::nullopt;
  }
  std::size_t label = 0;
  for (unsigned char c : text) {
    if (std::isalnum(c) == 0 && c != '-' && c != '_' && c != '.' && c != '*') {
      return std::nullopt;
    }
    label = c == '.' ? 0 : label + 1;
    if (label > 63) {
      return std::nullopt;
    }
  }
  return text;
}

bool isIdentifier(const std::string& text) {
  return !text.empty() && text.size() <= 64 &&
         std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isalnum(c); });
}

std::string plural(std::size_t count, const char* word) {
  return std::to_string(count) + " " + word + (count == 1 ? "" : "s");
}

Status unexpected(const char* what) {
  return internalError(std::string(kContext) + ": unexpected error: " + what);
}

}  // namespace

class CloudflarePlugin final : public DnsPlugin {
 public:
  Status configure(const Settings& settings, Services& services) override {
    try {
      return configureOrFail(settings, services);
    } catch (const std::exception& error) {
      return unexpected(error.what());
    } catch (...) {
      return unexpected("unknown exception");
    }
  }

  Status present(const std::vector<TxtRecord>& records) override {
    return guarded([&] { return presentAll(records); });
  }

  Status cleanup(const std::vector<TxtRecord>& records) override {
    return guarded([&] { return cleanupAll(records); });
  }

 private:
  Status configureOrFail(const Settings& settings, Services& services);
  Status presentAll(const std::vector<TxtRecord>& records);
  Status cleanupAll(const std::vector<TxtRecord>& records);
  Result<ZoneRef> zoneFor(CloudflareApi& api, const std::string& name);
  void takeBack(CloudflareApi& api, const std::map<std::string, std::vector<std::string>>& ids);

  template <typename Call>
  Status guarded(Call&& call) {
    if (services_ == nullptr) {
      return failedPrecondition(std::string(kContext) + ": used before configure()");
    }
    try {
      return call();
    } catch (const std::exception& error) {
      return unexpected(error.what());
    } catch (...) {
      return unexpected("unknown exception");
    }
  }

  Services* services_ = nullptr;
  ApiConfig config_;
  std::string zone_id_;  // empty: look the zone up by name
  std::uint32_t ttl_ = kDefaultTtl;

  // Zones found by name lookup, by record name: cleanup reuses what present found.
  std::mutex zones_mutex_;
  std::map<std::string, ZoneRef> zone_of_name_;
};

Status CloudflarePlugin::configureOrFail(const Settings& settings, Services& services) {
  services_ = &services;
  zone_id_.clear();
  config_ = ApiConfig{};
  {
    std::lock_guard<std::mutex> lock(zones_mutex_);
    zone_of_name_.clear();
  }

  for (const auto& [key, entry] : settings.entries()) {
    if (std::find(std::begin(kKnownSettings), std::end(kKnownSettings), key) ==
        std::end(kKnownSettings)) {
      return settings.error(key, "unknown setting '" + key +
                                     "' (known: api_token, zone_id, account_id, base_url, ttl, "
                                     "timeout)");
    }
  }

  Result<Secret> token = settings.requireSecret("api_token");
  if (!token.ok()) {
    return token.status();
  }
  Secret clean(trimmed(token->reveal()));
  if (clean.empty()) {
    return settings.error("api_token", "secret 'api_token' is empty");
  }
  config_.token = std::move(clean);

  if (settings.has("zone_id")) {
    std::string zone_id = trimmed(settings.getOr("zone_id", ""));
    if (!isIdentifier(zone_id)) {
      return settings.error("zone_id",
                            "'zone_id' must be a zone's identifier (32 hex digits "
                            "on the zone's overview page), got '" +
                                zone_id + "'");
    }
    zone_id_ = zone_id;
  }
  if (settings.has("account_id")) {
    std::string account_id = trimmed(settings.getOr("account_id", ""));
    if (!isIdentifier(account_id)) {
      return settings.error(
          "account_id", "'account_id' must be an account's identifier, got '" + account_id + "'");
    }
    config_.account_id = account_id;
  }

  std::string base = trimmed(settings.getOr("base_url", config_.base_url));
  while (!base.empty() && base.back() == '/') {
    base.pop_back();
  }
  bool http = base.rfind("http://", 0) == 0 && base.size() > 7;
  bool https = base.rfind("https://", 0) == 0 && base.size() > 8;
  if ((!http && !https) || base.find_first_of("?# ") != std::string::npos) {
    return settings.error("base_url",
                          "'base_url' must be an http(s) address such as "
                          "https://api.cloudflare.com/client/v4, got '" +
                              base + "'");
  }
  config_.base_url = base;

  Result<std::int64_t> ttl = settings.getInt("ttl", kDefaultTtl);
  if (!ttl.ok()) {
    return ttl.status();
  }
  if (*ttl != 1 && (*ttl < kMinTtl || *ttl > kMaxTtl)) {
    return settings.error("ttl", "'ttl' must be 1 (automatic) or between " +
                                     std::to_string(kMinTtl) + " and " + std::to_string(kMaxTtl) +
                                     " seconds, got " + std::to_string(*ttl));
  }
  ttl_ = static_cast<std::uint32_t>(*ttl);

  Result<std::chrono::milliseconds> timeout =
      settings.getDuration("timeout", std::chrono::milliseconds(30000));
  if (!timeout.ok()) {
    return timeout.status();
  }
  if (timeout->count() <= 0) {
    return settings.error("timeout", "'timeout' must be longer than zero");
  }
  config_.timeout = *timeout;
  return {};
}

Result<ZoneRef> CloudflarePlugin::zoneFor(CloudflareApi& api, const std::string& name) {
  if (!zone_id_.empty()) {
    return ZoneRef{zone_id_, "", "active"};
  }
  {
    std::lock_guard<std::mutex> lock(zones_mutex_);
    auto known = zone_of_name_.find(name);
    if (known != zone_of_name_.end()) {
      return known->second;
    }
  }

  // The closest enclosing name that is a zone: right for example.co.uk and for sub-domain
  // zones, where counting labels is not. A label starting with '_' is never a zone apex, and
  // a single label is a top-level domain.
  std::string candidate = name;
  std::vector<std::string> asked;
  while (candidate.find('.') != std::string::npos) {
    if (candidate.front() != '_') {
      asked.push_back(candidate);
      Result<std::optional<ZoneRef>> zone = api.zoneByName(candidate);
      if (!zone.ok()) {
        return zone.status().withContext("record " + name);
      }
      if (zone->has_value()) {
        services_->log(LogLevel::kDebug, "record " + name + " is in zone " + (*zone)->name + " (" +
                                             (*zone)->id + ")");
        std::lock_guard<std::mutex> lock(zones_mutex_);
        zone_of_name_[name] = **zone;
        return **zone;
      }
    }
    candidate = candidate.substr(candidate.find('.') + 1);
  }
  std::string tried;
  for (const std::string& zone : asked) {
    tried += (tried.empty() ? "" : ", ") + zone;
  }
  return notFound("record " + name + ": no active zone the api token can see holds it (asked " +
                  config_.base_url + " for " + tried + ")");
}

void CloudflarePlugin::takeBack(CloudflareApi& api,
                                const std::map<std::string, std::vector<std::string>>& ids) {
  for (const auto& [zone_id, zone_ids] : ids) {
    Status removed = api.deleteRecords(zone_id, zone_ids);
    if (!removed.ok()) {
      services_->log(LogLevel::kWarn, "taking back after a failed present: " +
                                          removed.withContext(kContext).message());
    }
  }
}

Status CloudflarePlugin::presentAll(const std::vector<TxtRecord>& records) {
  CloudflareApi api(*services_, config_);
  // Record ids this call created, by zone id: the core cleans up only what present reported
  // as added, so a failed call takes its own records back.
  std::map<std::string, std::vector<std::string>> created;
  std::size_t added = 0;
  std::size_t already = 0;

  for (const TxtRecord& record : records) {
    std::optional<std::string> name = normalName(record.fqdn);
    Status failed;
    if (!name) {
      failed = invalidArgument("record name '" + record.fqdn + "' is not a valid dns name");
    } else {
      Result<ZoneRef> zone = zoneFor(api, *name);
      if (!zone.ok()) {
        failed = zone.status();
      } else {
        Result<Created> made = api.createTxt(zone->id, *name, record.value, ttl_);
        if (!made.ok()) {
          failed = made.status().withContext("record " + *name);
        } else if (made->already_there) {
          ++already;
        } else {
          created[zone->id].push_back(made->id);
          ++added;
        }
      }
    }
    if (!failed.ok()) {
      takeBack(api, created);
      return failed.withContext(kContext);
    }
  }

  services_->log(LogLevel::kInfo,
                 "added " + plural(added, "record") +
                     (already == 0 ? "" : ", " + std::to_string(already) + " already there"));
  return {};
}

Status CloudflarePlugin::cleanupAll(const std::vector<TxtRecord>& records) {
  CloudflareApi api(*services_, config_);
  Status first_failure;
  std::size_t failures = 0;
  auto fail = [&](Status status) {
    if (failures++ == 0) {
      first_failure = std::move(status);
    }
  };

  // zone id -> name -> values, so that each zone gets one delete batch.
  std::map<std::string, std::map<std::string, std::set<std::string>>> wanted;
  for (const TxtRecord& record : records) {
    std::optional<std::string> name = normalName(record.fqdn);
    if (!name) {
      fail(invalidArgument("record name '" + record.fqdn + "' is not a valid dns name"));
      continue;
    }
    Result<ZoneRef> zone = zoneFor(api, *name);
    if (!zone.ok()) {
      fail(zone.status());
      continue;
    }
    wanted[zone->id][*name].insert(record.value);
  }

  // A failing zone does not stop the others from being cleaned.
  std::size_t removed = 0;
  for (const auto& [zone_id, names] : wanted) {
    std::vector<std::string> ids;
    Status listed;
    for (const auto& [name, values] : names) {
      Result<std::vector<RecordRef>> existing = api.listTxt(zone_id, name);
      if (!existing.ok()) {
        listed = existing.status().withContext("record " + name);
        break;
      }
      for (const RecordRef& record : *existing) {
        if (values.count(txtText(record.content)) != 0) {
          ids.push_back(record.id);
        }
      }
    }
    if (!listed.ok()) {
      fail(listed);
      continue;
    }
    if (ids.empty()) {
      continue;
    }
    Status deleted = api.deleteRecords(zone_id, ids);
    if (!deleted.ok()) {
      fail(deleted.withContext("zone " + zone_id));
      continue;
    }
    removed += ids.size();
  }

  services_->log(LogLevel::kInfo, "removed " + plural(removed, "record"));
  if (failures > 1) {
    first_failure =
        Status(first_failure.code(),
               first_failure.message() + " (and " + std::to_string(failures - 1) + " more failed)");
  }
  return first_failure.withContext(kContext);
}

}  // namespace certfleet::cloudflare

CERTFLEET_PLUGIN("cloudflare",
                 certfleet::Stage::kDns,
                 "0.1.0",
                 certfleet::cloudflare::CloudflarePlugin)
