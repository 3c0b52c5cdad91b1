// What the plugin keeps between runs in its state directory: the account key
// (account.key.pem, mode 0600) and the account URL per CA directory (account.json).
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

  // The stored key, or nullopt when none was written yet. A key file that others may read
  // is refused: it has already leaked as far as this machine goes.
  Result<std::optional<Secret>> readKey() const;

  // Stores `pem` as the account key unless another process stored one first; returns the
  // key that is on disk afterwards.
  Result<Secret> createKey(const Secret& pem) const;

  // The account URL registered for `directory_url` with the stored key, if any.
  Result<std::optional<std::string>> accountUrl(const std::string& directory_url) const;

  Status saveAccountUrl(const std::string& directory_url, const std::string& account_url) const;

 private:
  Status ensureDirectory() const;

  std::filesystem::path directory_;
};

}  // namespace certfleet::acme
