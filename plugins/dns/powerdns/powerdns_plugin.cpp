// The dns stage plugin `powerdns`: DNS-01 records through the PowerDNS Authoritative HTTP
// API.
//
// PowerDNS replaces a whole RRset at a time, so adding or removing one value is a
// read-modify-write: read the name's TXT RRset, change it, and write it back with
// `changetype: REPLACE` (or DELETE when nothing is left). Each call reads every affected
// name first and then sends one PATCH per zone, which PowerDNS applies in one transaction.

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

#include "powerdns_api.hpp"
#include "txt_content.hpp"

namespace certfleet::powerdns {
namespace {

constexpr const char* kContext = "dns.powerdns";
constexpr std::int64_t kMaxTtl = 2147483647;  // RFC 2181 8

const char* const kKnownSettings[] = {"url", "api_key", "server_id", "zone", "ttl", "timeout"};

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

// Lower case and without the trailing dot, or nullopt when `name` is no DNS name.
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

bool isInside(const std::string& name, const std::string& zone) {
  return name == zone || (name.size() > zone.size() &&
                          name.compare(name.size() - zone.size(), zone.size(), zone) == 0 &&
                          name[name.size() - zone.size() - 1] == '.');
}

std::string plural(std::size_t count, const char* word) {
  return std::to_string(count) + " " + word + (count == 1 ? "" : "s");
}

Status unexpected(const char* what) {
  return internalError(std::string(kContext) + ": unexpected error: " + what);
}

}  // namespace

class PowerDnsPlugin final : public DnsPlugin {
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

  Status present(const std::vector<TxtRecord>& records) override { return guarded(records, false); }

  Status cleanup(const std::vector<TxtRecord>& records) override { return guarded(records, true); }

 private:
  // The values of one call that belong to one zone, by name, in the order they came.
  struct ZoneBatch {
    Zone zone;
    std::vector<std::pair<std::string, std::vector<std::string>>> names;
  };

  Status configureOrFail(const Settings& settings, Services& services);
  Status guarded(const std::vector<TxtRecord>& records, bool remove);
  Status apply(const std::vector<TxtRecord>& records, bool remove);
  Result<std::vector<ZoneBatch>> groupByZone(PowerDnsApi& api,
                                             const std::vector<TxtRecord>& records);
  Result<Zone> findZone(PowerDnsApi& api,
                        const std::string& name,
                        std::optional<std::vector<Zone>>& zones);
  // Changes one zone with one PATCH. On present, `added` receives the values that were not
  // there before, which a later failure takes back.
  Status applyToZone(PowerDnsApi& api, const ZoneBatch& batch, bool remove, ZoneBatch* added);

  Services* services_ = nullptr;
  ApiConfig config_;
  std::string zone_;  // empty: discover per record
  std::uint32_t ttl_ = 60;

  // Zones found by discovery, by record name: cleanup reuses what present found.
  std::mutex zones_mutex_;
  std::map<std::string, Zone> zone_of_name_;
};

Status PowerDnsPlugin::configureOrFail(const Settings& settings, Services& services) {
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
                                     "' (known: url, api_key, server_id, zone, ttl, timeout)");
    }
  }

  Result<std::string> url = settings.require("url");
  if (!url.ok()) {
    return url.status();
  }
  std::string base = trimmed(*url);
  while (!base.empty() && base.back() == '/') {
    base.pop_back();
  }
  bool http = base.rfind("http://", 0) == 0 && base.size() > 7;
  bool https = base.rfind("https://", 0) == 0 && base.size() > 8;
  if ((!http && !https) || base.find_first_of("?# ") != std::string::npos) {
    return settings.error("url",
                          "'url' must be the API's base address such as "
                          "http://127.0.0.1:8081, got '" +
                              *url + "'");
  }
  config_.url = base;

  Result<Secret> key = settings.requireSecret("api_key");
  if (!key.ok()) {
    return key.status();
  }
  // A key file usually ends with a newline, which is no part of the key.
  Secret clean(trimmed(key->reveal()));
  if (clean.empty()) {
    return settings.error("api_key", "secret 'api_key' is empty");
  }
  config_.api_key = std::move(clean);

  config_.server_id = trimmed(settings.getOr("server_id", "localhost"));
  if (config_.server_id.empty()) {
    return settings.error("server_id",
                          "'server_id' must not be empty (PowerDNS calls its own "
                          "server 'localhost')");
  }

  if (settings.has("zone")) {
    Result<std::string> zone = settings.require("zone");
    if (!zone.ok()) {
      return zone.status();
    }
    std::optional<std::string> name = normalName(trimmed(*zone));
    if (!name) {
      return settings.error("zone", "zone '" + *zone + "' is not a valid dns name");
    }
    zone_ = *name;
  }

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
  config_.timeout = *timeout;
  return {};
}

Status PowerDnsPlugin::guarded(const std::vector<TxtRecord>& records, bool remove) {
  if (services_ == nullptr) {
    return failedPrecondition(std::string(kContext) + ": used before configure()");
  }
  try {
    return apply(records, remove);
  } catch (const std::exception& error) {
    return unexpected(error.what());
  } catch (...) {
    return unexpected("unknown exception");
  }
}

Status PowerDnsPlugin::apply(const std::vector<TxtRecord>& records, bool remove) {
  if (records.empty()) {
    return {};
  }
  PowerDnsApi api(*services_, config_);
  Result<std::vector<ZoneBatch>> batches = groupByZone(api, records);
  if (!batches.ok()) {
    return batches.status().withContext(kContext);
  }

  // A failed present stops at once and takes back what it added to earlier zones: the core
  // cleans up only what present reported as added. A failed cleanup goes on with the other
  // zones so that as little as possible stays behind.
  Status first_failure;
  std::size_t failures = 0;
  std::vector<ZoneBatch> added;
  for (const ZoneBatch& batch : *batches) {
    ZoneBatch added_here{batch.zone, {}};
    Status applied = applyToZone(api, batch, remove, remove ? nullptr : &added_here);
    if (applied.ok()) {
      added.push_back(std::move(added_here));
      continue;
    }
    if (!remove) {
      for (const ZoneBatch& done : added) {
        Status taken_back = applyToZone(api, done, true, nullptr);
        if (!taken_back.ok()) {
          services_->log(LogLevel::kWarn, "taking back after a failed present: " +
                                              taken_back.withContext(kContext).message());
        }
      }
      return applied.withContext(kContext);
    }
    if (failures++ == 0) {
      first_failure = applied;
    }
  }
  if (failures > 1) {
    first_failure =
        Status(first_failure.code(),
               first_failure.message() + " (and " + plural(failures - 1, "more zone") + " failed)");
  }
  return first_failure.withContext(kContext);
}

Result<std::vector<PowerDnsPlugin::ZoneBatch>> PowerDnsPlugin::groupByZone(
    PowerDnsApi& api, const std::vector<TxtRecord>& records) {
  std::vector<ZoneBatch> batches;
  // Listed at most once per call, and only when some name's zone is not known yet.
  std::optional<std::vector<Zone>> zones;

  for (const TxtRecord& record : records) {
    std::optional<std::string> name = normalName(record.fqdn);
    if (!name) {
      return invalidArgument("record name '" + record.fqdn + "' is not a valid dns name");
    }

    Zone zone;
    if (!zone_.empty()) {
      if (!isInside(*name, zone_)) {
        return invalidArgument("record '" + record.fqdn + "' is not inside zone '" + zone_ +
                               "' (setting 'zone')");
      }
      zone = Zone{zoneIdOf(zone_), zone_};
    } else {
      Result<Zone> found = findZone(api, *name, zones);
      if (!found.ok()) {
        return found.status();
      }
      zone = *found;
    }

    auto batch = std::find_if(batches.begin(), batches.end(), [&](const ZoneBatch& existing) {
      return existing.zone.name == zone.name;
    });
    if (batch == batches.end()) {
      batches.push_back(ZoneBatch{zone, {}});
      batch = std::prev(batches.end());
    }
    auto entry = std::find_if(batch->names.begin(), batch->names.end(),
                              [&](const auto& existing) { return existing.first == *name; });
    if (entry == batch->names.end()) {
      batch->names.emplace_back(*name, std::vector<std::string>{});
      entry = std::prev(batch->names.end());
    }
    if (std::find(entry->second.begin(), entry->second.end(), record.value) ==
        entry->second.end()) {
      entry->second.push_back(record.value);
    }
  }
  return batches;
}

Result<Zone> PowerDnsPlugin::findZone(PowerDnsApi& api,
                                      const std::string& name,
                                      std::optional<std::vector<Zone>>& zones) {
  {
    std::lock_guard<std::mutex> lock(zones_mutex_);
    auto known = zone_of_name_.find(name);
    if (known != zone_of_name_.end()) {
      return known->second;
    }
  }

  if (!zones) {
    Result<std::vector<Zone>> listed = api.listZones();
    if (!listed.ok()) {
      return listed.status();
    }
    zones = std::move(*listed);
  }

  // The longest zone name that encloses the record: a delegated sub-zone served by the same
  // server wins over its parent.
  const Zone* best = nullptr;
  for (const Zone& zone : *zones) {
    if (isInside(name, zone.name) && (best == nullptr || zone.name.size() > best->name.size())) {
      best = &zone;
    }
  }
  if (best == nullptr) {
    return notFound("no zone on " + config_.url + " (server '" + config_.server_id +
                    "') holds record '" + name + "' among " + plural(zones->size(), "zone"));
  }

  services_->log(LogLevel::kDebug, "record " + name + " is in zone " + best->name);
  std::lock_guard<std::mutex> lock(zones_mutex_);
  zone_of_name_[name] = *best;
  return *best;
}

Status PowerDnsPlugin::applyToZone(PowerDnsApi& api,
                                   const ZoneBatch& batch,
                                   bool remove,
                                   ZoneBatch* added) {
  std::vector<RrsetChange> changes;
  std::size_t touched_values = 0;

  for (const auto& [name, values] : batch.names) {
    Result<TxtRrset> current = api.txtRrset(batch.zone, name);
    if (!current.ok()) {
      return current.status().withContext("zone " + batch.zone.name);
    }

    // Values compare by the text they carry, not by their quoting, which another writer may
    // have spelled differently.
    std::set<std::string> ours(values.begin(), values.end());
    RrsetChange change;
    change.name = name;
    change.ttl = remove && current->exists ? current->ttl : ttl_;
    std::set<std::string> already;
    bool changed = false;
    for (const TxtValue& value : current->values) {
      std::optional<std::string> text = unquoteTxt(value.content);
      bool is_ours = text && ours.count(*text) != 0;
      if (remove && is_ours) {
        changed = true;
        ++touched_values;
        continue;
      }
      if (!remove && is_ours) {
        // A disabled copy of our value is not served: enable it rather than adding another.
        if (value.disabled) {
          changed = true;
          ++touched_values;
          change.values.push_back(TxtValue{value.content, false});
        } else {
          change.values.push_back(value);
        }
        already.insert(*text);
        continue;
      }
      change.values.push_back(value);
    }
    if (!remove) {
      std::vector<std::string> new_values;
      for (const std::string& value : values) {
        if (already.count(value) == 0) {
          change.values.push_back(TxtValue{quoteTxt(value), false});
          new_values.push_back(value);
          changed = true;
          ++touched_values;
        }
      }
      if (added != nullptr && !new_values.empty()) {
        added->names.emplace_back(name, std::move(new_values));
      }
    }
    if (changed) {
      changes.push_back(std::move(change));
    }
  }

  if (changes.empty()) {
    services_->log(LogLevel::kDebug, "zone " + batch.zone.name + ": nothing to change");
    return {};
  }
  Status patched = api.patchZone(batch.zone, changes);
  if (!patched.ok()) {
    return patched.withContext("zone " + batch.zone.name);
  }
  services_->log(LogLevel::kInfo,
                 std::string("zone ") + batch.zone.name + ": " + (remove ? "removed " : "added ") +
                     plural(touched_values, "value") + " on " + plural(changes.size(), "name"));
  return {};
}

}  // namespace certfleet::powerdns

CERTFLEET_PLUGIN("powerdns", certfleet::Stage::kDns, "0.1.0", certfleet::powerdns::PowerDnsPlugin)
