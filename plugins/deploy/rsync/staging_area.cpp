#include "rsync/staging_area.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

#include <sys/stat.h>

namespace certfleet::rsync {
namespace {

namespace fs = std::filesystem;

// "rsync-<pid>-XXXXXX": the pid tells which process a folder belongs to, so that one left by
// a crash can be told from one a running deploy is using.
constexpr std::string_view kPrefix = "rsync-";

std::string errnoText(int error) {
  std::string text = std::strerror(error);
  if (!text.empty()) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

// Removes folders of processes that no longer exist. A folder of a live process (this
// one's other hosts, deployed concurrently) is left alone.
void removeAbandoned(const fs::path& state_directory) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(state_directory, error)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0) {
      continue;
    }
    std::size_t dash = name.find('-', kPrefix.size());
    std::string pid_text = name.substr(kPrefix.size(), dash - kPrefix.size());
    char* end = nullptr;
    long pid = std::strtol(pid_text.c_str(), &end, 10);
    if (pid_text.empty() || *end != '\0' || pid <= 0) {
      continue;
    }
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      std::error_code ignored;
      fs::remove_all(entry.path(), ignored);
    }
  }
}

Status writeAll(int fd, std::string_view contents, const std::string& path) {
  while (!contents.empty()) {
    ssize_t written = ::write(fd, contents.data(), contents.size());
    if (written < 0 && errno == EINTR) {
      continue;
    }
    if (written <= 0) {
      return internalError("write " + path + ": " + errnoText(errno));
    }
    contents.remove_prefix(static_cast<std::size_t>(written));
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<StagingArea>> StagingArea::create(const std::string& state_directory) {
  if (state_directory.empty()) {
    return internalError("staging: no state directory to stage files in");
  }
  removeAbandoned(state_directory);

  // mkdtemp creates the folder 0700 whatever the umask.
  std::string pattern =
      (fs::path(state_directory) / (std::string(kPrefix) + std::to_string(::getpid()) + "-XXXXXX"))
          .string();
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    return internalError("staging: create a private folder in " + state_directory + ": " +
                         errnoText(errno));
  }
  return std::unique_ptr<StagingArea>(new StagingArea(buffer.data()));
}

StagingArea::~StagingArea() {
  (void)remove();
}

Result<std::string> StagingArea::add(const std::string& remote_path,
                                     std::string_view contents,
                                     std::uint32_t mode) {
  if (remote_path.empty() || remote_path.front() != '/') {
    return internalError("staging: " + remote_path + " is not an absolute path");
  }
  fs::path relative = fs::path(remote_path).relative_path().lexically_normal();
  fs::path file = fs::path(path_) / "root" / relative;

  // Every folder of the mirror is 0700 too; the area's own mode already keeps others out,
  // this keeps it so should a parent's mode ever be widened.
  fs::path folder = fs::path(path_);
  for (const fs::path& part : fs::path("root") / relative.parent_path()) {
    folder /= part;
    if (::mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) {
      return internalError("staging: create " + folder.string() + ": " + errnoText(errno));
    }
  }

  // O_EXCL|O_NOFOLLOW: the file is new and ours, never something found at that name.
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    return internalError("staging: create " + file.string() + ": " + errnoText(errno));
  }
  Status written = writeAll(fd, contents, file.string());
  // rsync --perms gives the host's file this mode; the folder keeps it private here.
  if (written.ok() && ::fchmod(fd, mode) != 0) {
    written = internalError("staging: set mode of " + file.string() + ": " + errnoText(errno));
  }
  if (::close(fd) != 0 && written.ok()) {
    written = internalError("staging: close " + file.string() + ": " + errnoText(errno));
  }
  if (!written.ok()) {
    return written;
  }
  return (fs::path(path_) / "root" / "." / relative).string();
}

Status StagingArea::remove() {
  if (removed_) {
    return {};
  }
  std::error_code error;
  fs::remove_all(path_, error);
  if (error) {
    return internalError("staging: remove " + path_ + ": " + error.message());
  }
  removed_ = true;
  return {};
}

}  // namespace certfleet::rsync
