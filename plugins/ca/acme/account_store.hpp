// What the plugin keeps between runs in its state directory: the account key
// (account.key.pem, mode 0600) and the account URL per CA directory (account.json), which
// also remembers the accounts that were deactivated.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "certfleet/plugin.hpp"

namespace certfleet::acme {

class AccountStore {
 public:
  explicit AccountStore(std::filesystem::path directory);

  std::filesystem::path keyPath() const { return directory_ / "account.key.pem"; }
  std::filesystem::path accountsPath() const { return directory_ / "account.json"; }
  // During a key rollover: the new key before the CA accepted it, the old one until the
  // new one is in place.
  std::filesystem::path nextKeyPath() const { return directory_ / "account.key.pem.next"; }
  std::filesystem::path previousKeyPath() const { return directory_ / "account.key.pem.previous"; }
  // Where a deactivated account's key is moved, so that it is never registered again.
  std::filesystem::path retiredKeyPath() const {
    return directory_ / "account.key.pem.deactivated";
  }
  const std::filesystem::path& directory() const { return directory_; }

  // The stored key, or nullopt when none was written yet. A key file that others may read
  // is refused: it has already leaked as far as this machine goes.
  Result<std::optional<Secret>> readKey() const;

  // Stores `pem` as the account key unless another process stored one first; returns the
  // key that is on disk afterwards.
  Result<Secret> createKey(const Secret& pem) const;

  // Writes `pem` to `path` (one of the key paths above) with mode 0600, replacing what is
  // there, so that a reader sees the old or the new file, never a partial one.
  Status writeKeyFile(const std::filesystem::path& path, const Secret& pem) const;

  // Renames `from` over `to` in one step and makes the rename durable.
  Status moveFile(const std::filesystem::path& from, const std::filesystem::path& to) const;

  // Removes `path`; a missing file is fine.
  void removeFile(const std::filesystem::path& path) const;

  // The account URL registered for `directory_url` with the stored key, if any.
  Result<std::optional<std::string>> accountUrl(const std::string& directory_url) const;

  Status saveAccountUrl(const std::string& directory_url, const std::string& account_url) const;

  // The deactivated account URL recorded for `directory_url`, if any.
  Result<std::optional<std::string>> deactivatedAccount(const std::string& directory_url) const;

  // Records that the account at `account_url` was deactivated.
  Status saveDeactivated(const std::string& directory_url, const std::string& account_url) const;

 private:
  Status ensureDirectory() const;
  Result<std::optional<std::string>> lookup(const char* section,
                                            const std::string& directory_url) const;
  Status store(const char* section,
               const std::string& directory_url,
               const std::string& account_url) const;

  std::filesystem::path directory_;
};

}  // namespace certfleet::acme
