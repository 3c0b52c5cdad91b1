#include "common/ssh_options.hpp"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <string_view>

namespace certfleet::ssh {
namespace {

Status checkReadable(const Settings& settings, const std::string& key, const std::string& path) {
  if (::access(path.c_str(), R_OK) != 0) {
    int error = errno;
    return settings.error(
        key, "cannot read " + key + " " + path + ": " + lowerFirst(std::strerror(error)));
  }
  return {};
}

}  // namespace

std::string lowerFirst(std::string text) {
  if (text.size() >= 2 && std::isupper(static_cast<unsigned char>(text[0])) != 0 &&
      std::islower(static_cast<unsigned char>(text[1])) != 0) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

std::string formatEndpoint(const std::string& address, std::uint16_t port) {
  if (address.find(':') != std::string::npos) {
    return "[" + address + "]:" + std::to_string(port);
  }
  return address + ":" + std::to_string(port);
}

Result<SshOptions> parseSshOptions(const Settings& settings, bool require_files) {
  SshOptions options;

  for (const char* key : {"known_hosts", "identity_file"}) {
    if (!require_files && !settings.has(key)) {
      continue;
    }
    Result<std::string> path = settings.require(key);
    if (!path.ok()) {
      return path.status();
    }
    if (Status readable = checkReadable(settings, key, *path); !readable.ok()) {
      return readable;
    }
    (std::string_view(key) == "known_hosts" ? options.known_hosts : options.identity_file) = *path;
  }

  Result<std::chrono::milliseconds> timeout =
      settings.getDuration("connect_timeout", options.connect_timeout);
  if (!timeout.ok()) {
    return timeout.status();
  }
  if (timeout->count() <= 0) {
    return settings.error("connect_timeout", "'connect_timeout' must be longer than 0");
  }
  options.connect_timeout = *timeout;
  return options;
}

}  // namespace certfleet::ssh
