// The orchestrator's store of every host's private key and chain. Keys are written mode
// 0600 into 0700 folders, through a temporary file created with those modes from the
// start, so no key is ever readable by others, not even for a moment, and a crash leaves
// either the old or the new file, never a torn one.
//
// Layout under the state directory:
//   hosts/<host>/pending/key.pem              a key whose certificate is being ordered
//   hosts/<host>/current/{key.pem,fullchain.pem}
//   hosts/<host>/previous/{key.pem,fullchain.pem}   kept until the next deploy succeeds
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "certfleet/plugin.hpp"

#include <sys/types.h>

namespace certfleet {

// Writes `contents` to `path` via a sibling temporary file: O_EXCL with `mode`, fsync,
// rename, fsync of the folder.
Status writeFileAtomically(const std::filesystem::path& path,
                           std::string_view contents,
                           mode_t mode);

Result<std::string> readFile(const std::filesystem::path& path);

// Creates `path` and missing parents with mode 0700 and tightens an existing one.
Status makePrivateDirectory(const std::filesystem::path& path);

class KeyStore {
 public:
  explicit KeyStore(const std::filesystem::path& state_directory);

  // Keeps a freshly generated key before anything is ordered with it.
  Status savePendingKey(const std::string& host, const Secret& key_pem);
  Result<Secret> pendingKey(const std::string& host) const;

  // The pending key with its new chain becomes current; the current pair becomes previous.
  Status promote(const std::string& host, const std::string& fullchain_pem);

  Result<std::optional<CertificateBundle>> current(const std::string& host) const;
  Result<std::optional<CertificateBundle>> previous(const std::string& host) const;

  // Finishes a promote that a crash interrupted.
  Status recover(const std::string& host);

  std::filesystem::path hostDirectory(const std::string& host) const;

 private:
  Result<std::optional<CertificateBundle>> readPair(const std::filesystem::path& folder) const;

  std::filesystem::path root_;
};

}  // namespace certfleet
