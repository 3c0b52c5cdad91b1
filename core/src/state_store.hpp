// What the orchestrator remembers between runs, per host. Behind an interface so that a
// shared store (PostgreSQL with a lock per host) can replace SQLite for several
// orchestrators.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "certfleet/plugin.hpp"

namespace certfleet {

struct HostRecord {
  std::string host;
  std::string names;            // comma separated, in pipeline order
  std::string key_type;         // "ec-256"
  std::string serial;           // hex
  std::int64_t not_before = 0;  // unix seconds
  std::int64_t not_after = 0;
  std::string fingerprint;           // SHA-256 of the issued leaf
  std::string deployed_fingerprint;  // what the host was last confirmed to serve
  std::string last_result;           // "ok" or the failure
  std::int64_t last_attempt = 0;
  // ACME Renewal Information: the moment picked inside the CA's window, and when to ask
  // again; both 0 when the CA offers none.
  std::int64_t ari_renew_at = 0;
  std::int64_t ari_next_check = 0;
  std::int64_t failures = 0;      // issuance failures in a row
  std::int64_t next_attempt = 0;  // no new order before this moment (backoff)
  bool revoked = false;           // the current certificate was revoked
};

class StateStore {
 public:
  virtual ~StateStore() = default;
  virtual Result<std::optional<HostRecord>> find(const std::string& host) = 0;
  virtual Status save(const HostRecord& record) = 0;
  virtual Result<std::vector<HostRecord>> all() = 0;

  // DNS-01 records are written down before they are presented and forgotten once they
  // are removed, so that a run killed in between has its records removed by the next.
  virtual Status rememberRecords(const std::vector<TxtRecord>& records) = 0;
  virtual Status forgetRecords(const std::vector<TxtRecord>& records) = 0;
  virtual Result<std::vector<TxtRecord>> rememberedRecords() = 0;
};

// SQLite in `<state_directory>/state.db`; each save is one transaction.
Result<std::unique_ptr<StateStore>> openSqliteStateStore(const std::filesystem::path& directory);

}  // namespace certfleet
