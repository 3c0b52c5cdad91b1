#include "account_store.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>
#include <openssl/crypto.h>

#include <sys/stat.h>

namespace certfleet::acme {
namespace {

std::string errnoText(int error) {
  std::string text = std::generic_category().message(error);
  if (text.size() >= 2 && text[0] >= 'A' && text[0] <= 'Z' && text[1] >= 'a' && text[1] <= 'z') {
    text[0] = static_cast<char>(text[0] - 'A' + 'a');
  }
  return text;
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;

  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// The file's contents, or nullopt when it does not exist. With `private_only`, a file that
// group or others may access is refused.
Result<std::optional<std::string>> readFile(const std::filesystem::path& path, bool private_only) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) {
    if (errno == ENOENT) {
      return std::optional<std::string>();
    }
    return failedPrecondition("read " + path.string() + ": " + errnoText(errno));
  }
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) {
    return failedPrecondition("stat " + path.string() + ": " + errnoText(errno));
  }
  if (!S_ISREG(info.st_mode)) {
    return failedPrecondition(path.string() + " is not a regular file");
  }
  if (private_only && (info.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(info.st_mode & 07777));
    return failedPrecondition(path.string() + " may be read by other users (mode " + mode +
                              "): make it 0600 or remove it");
  }

  // Sized once, so that no reallocation leaves a copy of a key in freed memory.
  std::string contents;
  contents.reserve(static_cast<std::size_t>(info.st_size));
  char buffer[4096];
  for (;;) {
    ssize_t got = ::read(fd.get(), buffer, sizeof(buffer));
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got < 0) {
      return failedPrecondition("read " + path.string() + ": " + errnoText(errno));
    }
    if (got == 0) {
      break;
    }
    contents.append(buffer, static_cast<std::size_t>(got));
  }
  OPENSSL_cleanse(buffer, sizeof(buffer));
  return std::optional<std::string>(std::move(contents));
}

// Makes a rename in `directory` durable.
void syncDirectory(const std::filesystem::path& directory) {
  FileDescriptor fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() >= 0) {
    ::fsync(fd.get());
  }
}

enum class Placement {
  kReplace,    // overwrite any existing file
  kKeepFirst,  // leave an existing file alone
};

// Writes `contents` to `path` with mode 0600 so that a reader sees the old file, the new
// one, or none, and never a partial or world-readable one: the bytes go to a fresh file
// created 0600 in the same directory, reach the disk, and only then get the final name.
// Returns false when `placement` is kKeepFirst and the file already existed.
Result<bool> writePrivateFile(const std::filesystem::path& path,
                              const std::string& contents,
                              Placement placement) {
  static std::atomic<unsigned> counter{0};
  std::filesystem::path temp = path;
  temp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);

  FileDescriptor fd(
      ::open(temp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0) {
    return failedPrecondition("create " + temp.string() + ": " + errnoText(errno));
  }
  auto fail = [&temp](const std::string& step) {
    int error = errno;
    ::unlink(temp.c_str());
    return failedPrecondition(step + " " + temp.string() + ": " + errnoText(error));
  };

  std::size_t written = 0;
  while (written < contents.size()) {
    ssize_t put = ::write(fd.get(), contents.data() + written, contents.size() - written);
    if (put < 0 && errno == EINTR) {
      continue;
    }
    if (put < 0) {
      return fail("write");
    }
    written += static_cast<std::size_t>(put);
  }
  if (::fsync(fd.get()) != 0) {
    return fail("sync");
  }
  if (::close(fd.release()) != 0) {
    return fail("close");
  }

  int renamed = 0;
  if (placement == Placement::kKeepFirst) {
    renamed = ::renameat2(AT_FDCWD, temp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
    if (renamed != 0 && errno == EEXIST) {
      ::unlink(temp.c_str());
      return false;
    }
    // A filesystem without RENAME_NOREPLACE: only another process starting at the same
    // instant could lose its file, and then both still hold a working account key.
    if (renamed != 0 && errno == EINVAL) {
      renamed = ::rename(temp.c_str(), path.c_str());
    }
  } else {
    renamed = ::rename(temp.c_str(), path.c_str());
  }
  if (renamed != 0) {
    return fail("rename");
  }
  syncDirectory(path.parent_path());
  return true;
}

}  // namespace

AccountStore::AccountStore(std::filesystem::path directory) : directory_(std::move(directory)) {}

Status AccountStore::ensureDirectory() const {
  if (directory_.empty()) {
    return failedPrecondition("no state directory");
  }
  std::error_code error;
  if (std::filesystem::is_directory(directory_, error)) {
    return {};
  }
  std::filesystem::create_directories(directory_, error);
  if (!error) {
    std::filesystem::permissions(directory_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, error);
  }
  if (error) {
    return failedPrecondition("create " + directory_.string() + ": " + error.message());
  }
  return {};
}

Result<std::optional<Secret>> AccountStore::readKey() const {
  Result<std::optional<std::string>> contents = readFile(keyPath(), true);
  if (!contents.ok()) {
    return contents.status();
  }
  if (!contents->has_value()) {
    return std::optional<Secret>();
  }
  return std::optional<Secret>(Secret(std::move(**contents)));
}

Result<Secret> AccountStore::createKey(const Secret& pem) const {
  Status ready = ensureDirectory();
  if (!ready.ok()) {
    return ready;
  }
  Result<bool> placed = writePrivateFile(keyPath(), pem.reveal(), Placement::kKeepFirst);
  if (!placed.ok()) {
    return placed.status();
  }
  if (*placed) {
    return pem;
  }

  Result<std::optional<Secret>> existing = readKey();
  if (!existing.ok()) {
    return existing.status();
  }
  if (!existing->has_value()) {
    return failedPrecondition(keyPath().string() + " vanished while being created");
  }
  return std::move(**existing);
}

Status AccountStore::writeKeyFile(const std::filesystem::path& path, const Secret& pem) const {
  Status ready = ensureDirectory();
  if (!ready.ok()) {
    return ready;
  }
  Result<bool> placed = writePrivateFile(path, pem.reveal(), Placement::kReplace);
  return placed.ok() ? Status() : placed.status();
}

Status AccountStore::moveFile(const std::filesystem::path& from,
                              const std::filesystem::path& to) const {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return failedPrecondition("rename " + from.string() + " to " + to.string() + ": " +
                              errnoText(errno));
  }
  syncDirectory(to.parent_path());
  return {};
}

void AccountStore::removeFile(const std::filesystem::path& path) const {
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
}

Result<std::optional<std::string>> AccountStore::lookup(const char* section,
                                                        const std::string& directory_url) const {
  Result<std::optional<std::string>> contents = readFile(accountsPath(), false);
  if (!contents.ok()) {
    return contents.status();
  }
  if (!contents->has_value()) {
    return std::optional<std::string>();
  }
  nlohmann::json accounts = nlohmann::json::parse(**contents, nullptr, false);
  if (accounts.is_discarded() || !accounts.is_object() || !accounts.contains("accounts") ||
      !accounts["accounts"].is_object()) {
    return failedPrecondition(accountsPath().string() + ": not an account list");
  }
  if (!accounts.contains(section) || !accounts[section].is_object()) {
    return std::optional<std::string>();
  }
  const nlohmann::json& urls = accounts[section];
  auto found = urls.find(directory_url);
  if (found == urls.end() || !found->is_string()) {
    return std::optional<std::string>();
  }
  return std::optional<std::string>(found->get<std::string>());
}

Result<std::optional<std::string>> AccountStore::accountUrl(
    const std::string& directory_url) const {
  return lookup("accounts", directory_url);
}

Result<std::optional<std::string>> AccountStore::deactivatedAccount(
    const std::string& directory_url) const {
  return lookup("deactivated", directory_url);
}

Status AccountStore::saveAccountUrl(const std::string& directory_url,
                                    const std::string& account_url) const {
  return store("accounts", directory_url, account_url);
}

Status AccountStore::saveDeactivated(const std::string& directory_url,
                                     const std::string& account_url) const {
  return store("deactivated", directory_url, account_url);
}

Status AccountStore::store(const char* section,
                           const std::string& directory_url,
                           const std::string& account_url) const {
  Status ready = ensureDirectory();
  if (!ready.ok()) {
    return ready;
  }

  // Keep the accounts registered at other CAs (another environment of the pipeline).
  nlohmann::json document = {{"accounts", nlohmann::json::object()}};
  Result<std::optional<std::string>> contents = readFile(accountsPath(), false);
  if (contents.ok() && contents->has_value()) {
    nlohmann::json parsed = nlohmann::json::parse(**contents, nullptr, false);
    if (!parsed.is_discarded() && parsed.is_object() && parsed.contains("accounts") &&
        parsed["accounts"].is_object()) {
      document = parsed;
    }
  }
  if (!document.contains(section) || !document[section].is_object()) {
    document[section] = nlohmann::json::object();
  }
  document[section][directory_url] = account_url;

  std::string text = document.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  Result<bool> placed = writePrivateFile(accountsPath(), text, Placement::kReplace);
  return placed.ok() ? Status() : placed.status();
}

}  // namespace certfleet::acme
