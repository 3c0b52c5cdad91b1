#include "state_store.hpp"

#include <sqlite3.h>

#include <mutex>

namespace certfleet {
namespace {

#define COLUMNS                                                                               \
  "host, names, key_type, serial, not_before, not_after, fingerprint, deployed_fingerprint, " \
  "last_result, last_attempt, ari_renew_at, ari_next_check, failures, next_attempt, revoked"

// Columns added after the first layout; a database from an older certfleet gains them.
constexpr const char* kAddedColumns[] = {"ari_renew_at", "ari_next_check", "failures",
                                         "next_attempt", "revoked"};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS hosts (
  host TEXT PRIMARY KEY,
  names TEXT NOT NULL,
  key_type TEXT NOT NULL,
  serial TEXT NOT NULL,
  not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  fingerprint TEXT NOT NULL,
  deployed_fingerprint TEXT NOT NULL,
  last_result TEXT NOT NULL,
  last_attempt INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS presented_records (
  fqdn TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (fqdn, value)
);
)sql";

class SqliteStateStore final : public StateStore {
 public:
  explicit SqliteStateStore(sqlite3* database) : database_(database) {}
  ~SqliteStateStore() override { sqlite3_close(database_); }
  SqliteStateStore(const SqliteStateStore&) = delete;
  SqliteStateStore& operator=(const SqliteStateStore&) = delete;

  Result<std::optional<HostRecord>> find(const std::string& host) override {
    std::lock_guard lock(mutex_);
    Statement statement(database_, "SELECT " COLUMNS " FROM hosts WHERE host = ?1");
    if (!statement.ok()) {
      return failure("read host " + host);
    }
    sqlite3_bind_text(statement.get(), 1, host.c_str(), -1, SQLITE_TRANSIENT);
    int step = sqlite3_step(statement.get());
    if (step == SQLITE_DONE) {
      return std::optional<HostRecord>();
    }
    if (step != SQLITE_ROW) {
      return failure("read host " + host);
    }
    return std::optional<HostRecord>(readRow(statement.get()));
  }

  Status save(const HostRecord& record) override {
    std::lock_guard lock(mutex_);
    Statement statement(database_,
                        "INSERT OR REPLACE INTO hosts (host, names, key_type, serial, "
                        "not_before, not_after, fingerprint, deployed_fingerprint, last_result, "
                        "last_attempt, ari_renew_at, ari_next_check, failures, next_attempt, "
                        "revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
                        "?14, ?15)");
    if (!statement.ok()) {
      return failure("save host " + record.host);
    }
    sqlite3_stmt* s = statement.get();
    sqlite3_bind_text(s, 1, record.host.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, record.names.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, record.key_type.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, record.serial.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, record.not_before);
    sqlite3_bind_int64(s, 6, record.not_after);
    sqlite3_bind_text(s, 7, record.fingerprint.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 8, record.deployed_fingerprint.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 9, record.last_result.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 10, record.last_attempt);
    sqlite3_bind_int64(s, 11, record.ari_renew_at);
    sqlite3_bind_int64(s, 12, record.ari_next_check);
    sqlite3_bind_int64(s, 13, record.failures);
    sqlite3_bind_int64(s, 14, record.next_attempt);
    sqlite3_bind_int64(s, 15, record.revoked ? 1 : 0);
    if (sqlite3_step(s) != SQLITE_DONE) {
      return failure("save host " + record.host);
    }
    return {};
  }

  Result<std::vector<HostRecord>> all() override {
    std::lock_guard lock(mutex_);
    Statement statement(database_, "SELECT " COLUMNS " FROM hosts ORDER BY host");
    if (!statement.ok()) {
      return failure("list hosts");
    }
    std::vector<HostRecord> records;
    int step = SQLITE_ROW;
    while ((step = sqlite3_step(statement.get())) == SQLITE_ROW) {
      records.push_back(readRow(statement.get()));
    }
    if (step != SQLITE_DONE) {
      return failure("list hosts");
    }
    return records;
  }

  Status rememberRecords(const std::vector<TxtRecord>& records) override {
    return changeRecords(records, "INSERT OR IGNORE INTO presented_records VALUES (?1, ?2)");
  }

  Status forgetRecords(const std::vector<TxtRecord>& records) override {
    return changeRecords(records, "DELETE FROM presented_records WHERE fqdn = ?1 AND value = ?2");
  }

  Result<std::vector<TxtRecord>> rememberedRecords() override {
    std::lock_guard lock(mutex_);
    Statement statement(database_, "SELECT fqdn, value FROM presented_records ORDER BY fqdn");
    if (!statement.ok()) {
      return failure("list presented records");
    }
    std::vector<TxtRecord> records;
    int step = SQLITE_ROW;
    while ((step = sqlite3_step(statement.get())) == SQLITE_ROW) {
      records.push_back({text(statement.get(), 0), text(statement.get(), 1)});
    }
    if (step != SQLITE_DONE) {
      return failure("list presented records");
    }
    return records;
  }

 private:
  // One transaction for the whole batch: hundreds of records cost one fsync, not hundreds.
  Status changeRecords(const std::vector<TxtRecord>& records, const char* sql) {
    std::lock_guard lock(mutex_);
    if (sqlite3_exec(database_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return failure("begin");
    }
    Statement statement(database_, sql);
    bool ok = statement.ok();
    for (std::size_t i = 0; ok && i < records.size(); ++i) {
      sqlite3_reset(statement.get());
      sqlite3_bind_text(statement.get(), 1, records[i].fqdn.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(statement.get(), 2, records[i].value.c_str(), -1, SQLITE_TRANSIENT);
      ok = sqlite3_step(statement.get()) == SQLITE_DONE;
    }
    if (!ok) {
      Status error = failure("record presented records");
      sqlite3_exec(database_, "ROLLBACK", nullptr, nullptr, nullptr);
      return error;
    }
    if (sqlite3_exec(database_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      return failure("commit");
    }
    return {};
  }

  class Statement {
   public:
    Statement(sqlite3* database, const char* sql) {
      sqlite3_prepare_v2(database, sql, -1, &statement_, nullptr);
    }
    ~Statement() { sqlite3_finalize(statement_); }
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    bool ok() const { return statement_ != nullptr; }
    sqlite3_stmt* get() const { return statement_; }

   private:
    sqlite3_stmt* statement_ = nullptr;
  };

  static std::string text(sqlite3_stmt* statement, int column) {
    const unsigned char* value = sqlite3_column_text(statement, column);
    return value != nullptr ? reinterpret_cast<const char*>(value) : "";
  }

  static HostRecord readRow(sqlite3_stmt* statement) {
    HostRecord record;
    record.host = text(statement, 0);
    record.names = text(statement, 1);
    record.key_type = text(statement, 2);
    record.serial = text(statement, 3);
    record.not_before = sqlite3_column_int64(statement, 4);
    record.not_after = sqlite3_column_int64(statement, 5);
    record.fingerprint = text(statement, 6);
    record.deployed_fingerprint = text(statement, 7);
    record.last_result = text(statement, 8);
    record.last_attempt = sqlite3_column_int64(statement, 9);
    record.ari_renew_at = sqlite3_column_int64(statement, 10);
    record.ari_next_check = sqlite3_column_int64(statement, 11);
    record.failures = sqlite3_column_int64(statement, 12);
    record.next_attempt = sqlite3_column_int64(statement, 13);
    record.revoked = sqlite3_column_int64(statement, 14) != 0;
    return record;
  }

  Status failure(const std::string& what) const {
    return internalError("state: " + what + ": " + sqlite3_errmsg(database_));
  }

  std::mutex mutex_;
  sqlite3* database_;
};

}  // namespace

Result<std::unique_ptr<StateStore>> openSqliteStateStore(const std::filesystem::path& directory) {
  std::filesystem::path file = directory / "state.db";
  sqlite3* database = nullptr;
  int opened =
      sqlite3_open_v2(file.c_str(), &database,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (opened != SQLITE_OK) {
    std::string message = database != nullptr ? sqlite3_errmsg(database) : "out of memory";
    sqlite3_close(database);
    return failedPrecondition("state: open " + file.string() + ": " + message);
  }
  sqlite3_busy_timeout(database, 10000);
  char* error = nullptr;
  // WAL with synchronous=NORMAL survives a crash of certfleet at any point; only a power
  // loss may drop the last commits, and the next run then redoes that work.
  if (sqlite3_exec(database, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", nullptr,
                   nullptr, nullptr) != SQLITE_OK ||
      sqlite3_exec(database, kSchema, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error != nullptr ? error : sqlite3_errmsg(database);
    sqlite3_free(error);
    sqlite3_close(database);
    return internalError("state: prepare " + file.string() + ": " + message);
  }
  for (const char* column : kAddedColumns) {
    std::string add =
        std::string("ALTER TABLE hosts ADD COLUMN ") + column + " INTEGER NOT NULL DEFAULT 0";
    // Fails with "duplicate column" once the column exists, which is the normal case.
    sqlite3_exec(database, add.c_str(), nullptr, nullptr, nullptr);
  }
  return std::unique_ptr<StateStore>(std::make_unique<SqliteStateStore>(database));
}

}  // namespace certfleet
