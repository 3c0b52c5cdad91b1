#include "local_env.hpp"

#include <unistd.h>

#include <fstream>

#include <netinet/in.h>
#include <sys/socket.h>

namespace certfleet::testing {

std::map<std::string, std::string> readEnvFile(const std::filesystem::path& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const std::string prefix = "export ";
    std::size_t equals = line.find('=');
    if (line.rfind(prefix, 0) != 0 || equals == std::string::npos) {
      continue;
    }
    std::string name = line.substr(prefix.size(), equals - prefix.size());
    std::string value;
    for (std::size_t i = equals + 1; i < line.size(); ++i) {
      if (line[i] == '\'') {
        std::size_t end = line.find('\'', i + 1);
        value += line.substr(i + 1, end - i - 1);
        i = end == std::string::npos ? line.size() : end;
      } else if (line[i] == '\\' && i + 1 < line.size()) {
        value += line[++i];
      } else {
        value += line[i];
      }
    }
    values[name] = value;
  }
  return values;
}

std::uint16_t unusedLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return 0;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  bool picked = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0;
  ::close(fd);
  return picked ? ntohs(address.sin_port) : 0;
}

}  // namespace certfleet::testing
