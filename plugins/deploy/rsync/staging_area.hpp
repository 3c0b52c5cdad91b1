// deploy/rsync/staging_area.hpp - the local files rsync sends: a private folder under the
// plugin's state directory, mirroring the absolute paths the files get on the host.
//
// rsync reads what it sends from files, so the private key has to exist on the
// orchestrator's disk for the length of one transfer. It does so in a folder created 0700
// by mkdtemp(3) inside the state directory (itself 0700, beside the key store, never a
// shared /tmp), in a file created O_EXCL with mode 0600. The area removes itself when it
// goes out of scope, whatever path the deploy took.
//
//   auto area = StagingArea::create(services.stateDirectory());
//   if (!area.ok()) {
//     return area.status();
//   }
//   Result<std::string> source = (*area)->add("/etc/nginx/tls/key.pem", key, 0600);
//   // rsync --relative ... *source host:/   (the area goes when `area` does)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "certfleet/status.hpp"

namespace certfleet::rsync {

class StagingArea {
 public:
  // Makes a new private folder in `state_directory`, first removing any folder a crashed
  // run of an earlier process left there.
  static Result<std::unique_ptr<StagingArea>> create(const std::string& state_directory);

  ~StagingArea();
  StagingArea(const StagingArea&) = delete;
  StagingArea& operator=(const StagingArea&) = delete;

  // Writes `contents` with exactly `mode` under the mirror of `remote_path` (absolute) and
  // returns the source argument for `rsync --relative`: "<area>/./<remote_path>", whose
  // part after "/./" is the path the file gets on the host.
  Result<std::string> add(const std::string& remote_path,
                          std::string_view contents,
                          std::uint32_t mode);

  // Removes the folder and everything in it now; the destructor does the same, silently.
  Status remove();

  const std::string& path() const { return path_; }

 private:
  explicit StagingArea(std::string path) : path_(std::move(path)) {}

  std::string path_;
  bool removed_ = false;
};

}  // namespace certfleet::rsync
