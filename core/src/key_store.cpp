#include "key_store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "certificate.hpp"
#include <sys/stat.h>

namespace certfleet {
namespace fs = std::filesystem;

namespace {

Status systemError(const std::string& what, int error_number) {
  return internalError(what + ": " + std::strerror(error_number));
}

std::string randomSuffix() {
  static thread_local std::mt19937_64 generator{std::random_device{}()};
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(generator()));
  return text;
}

Status syncDirectory(const fs::path& directory) {
  int descriptor = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (descriptor < 0) {
    return systemError("open " + directory.string(), errno);
  }
  ::fsync(descriptor);
  ::close(descriptor);
  return {};
}

}  // namespace

Status writeFileAtomically(const fs::path& path, std::string_view contents, mode_t mode) {
  fs::path temporary =
      path.parent_path() / ("." + path.filename().string() + ".tmp-" + randomSuffix());
  int descriptor =
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (descriptor < 0) {
    return systemError("create " + temporary.string(), errno);
  }
  // The umask may have cleared bits we want; it can never have added any.
  ::fchmod(descriptor, mode);
  std::size_t written = 0;
  while (written < contents.size()) {
    ssize_t count = ::write(descriptor, contents.data() + written, contents.size() - written);
    if (count < 0) {
      if (errno == EINTR) {
        continue;
      }
      int saved = errno;
      ::close(descriptor);
      ::unlink(temporary.c_str());
      return systemError("write " + temporary.string(), saved);
    }
    written += static_cast<std::size_t>(count);
  }
  if (::fsync(descriptor) != 0 || ::close(descriptor) != 0) {
    int saved = errno;
    ::unlink(temporary.c_str());
    return systemError("sync " + temporary.string(), saved);
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(temporary.c_str());
    return systemError("rename " + temporary.string() + " to " + path.string(), saved);
  }
  return syncDirectory(path.parent_path());
}

Result<std::string> readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return notFound("cannot read " + path.string());
  }
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

Status makePrivateDirectory(const fs::path& path) {
  std::error_code error;
  fs::path partial;
  for (const fs::path& part : path) {
    partial /= part;
    if (fs::exists(partial, error)) {
      continue;
    }
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
      return systemError("create " + partial.string(), errno);
    }
  }
  if (::chmod(path.c_str(), 0700) != 0) {
    return systemError("chmod " + path.string(), errno);
  }
  return {};
}

KeyStore::KeyStore(const fs::path& state_directory) : root_(state_directory / "hosts") {}

fs::path KeyStore::hostDirectory(const std::string& host) const {
  return root_ / host;
}

Status KeyStore::savePendingKey(const std::string& host, const Secret& key_pem) {
  fs::path folder = hostDirectory(host) / "pending";
  Status made = makePrivateDirectory(folder);
  if (!made.ok()) {
    return made.withContext("key store");
  }
  std::error_code ignored;
  fs::remove(folder / "fullchain.pem", ignored);
  return writeFileAtomically(folder / "key.pem", key_pem.reveal(), 0600).withContext("key store");
}

Result<Secret> KeyStore::pendingKey(const std::string& host) const {
  Result<std::string> key = readFile(hostDirectory(host) / "pending" / "key.pem");
  if (!key.ok()) {
    return key.status().withContext("key store");
  }
  return Secret(std::move(*key));
}

Status KeyStore::promote(const std::string& host, const std::string& fullchain_pem) {
  fs::path base = hostDirectory(host);
  fs::path pending = base / "pending";
  // The pending folder holds a complete pair before anything moves, so that recover()
  // can finish the promotion from any point.
  Status written = writeFileAtomically(pending / "fullchain.pem", fullchain_pem, 0644);
  if (!written.ok()) {
    return written.withContext("key store");
  }
  std::error_code error;
  if (fs::exists(base / "current", error)) {
    fs::remove_all(base / "previous", error);
    fs::rename(base / "current", base / "previous", error);
    if (error) {
      return internalError("key store: keep previous pair of " + host + ": " + error.message());
    }
  }
  fs::rename(pending, base / "current", error);
  if (error) {
    return internalError("key store: promote new pair of " + host + ": " + error.message());
  }
  return syncDirectory(base);
}

Status KeyStore::recover(const std::string& host) {
  fs::path base = hostDirectory(host);
  std::error_code error;
  if (!fs::exists(base / "current", error) && fs::exists(base / "pending" / "key.pem", error) &&
      fs::exists(base / "pending" / "fullchain.pem", error)) {
    fs::rename(base / "pending", base / "current", error);
    if (error) {
      return internalError("key store: recover " + host + ": " + error.message());
    }
  }
  return {};
}

Result<std::optional<CertificateBundle>> KeyStore::readPair(const fs::path& folder) const {
  std::error_code error;
  if (!fs::exists(folder / "key.pem", error) || !fs::exists(folder / "fullchain.pem", error)) {
    return std::optional<CertificateBundle>();
  }
  Result<std::string> key = readFile(folder / "key.pem");
  Result<std::string> chain = readFile(folder / "fullchain.pem");
  if (!key.ok() || !chain.ok()) {
    return internalError("key store: cannot read the pair in " + folder.string());
  }
  Result<CertificateInfo> info = inspectChain(*chain);
  if (!info.ok()) {
    return info.status().withContext("key store: " + folder.string());
  }
  CertificateBundle bundle;
  bundle.key_pem = Secret(std::move(*key));
  bundle.fullchain_pem = std::move(*chain);
  bundle.leaf_pem = info->leaf_pem;
  return std::optional<CertificateBundle>(std::move(bundle));
}

Result<std::optional<CertificateBundle>> KeyStore::current(const std::string& host) const {
  return readPair(hostDirectory(host) / "current");
}

Result<std::optional<CertificateBundle>> KeyStore::previous(const std::string& host) const {
  return readPair(hostDirectory(host) / "previous");
}

}  // namespace certfleet
