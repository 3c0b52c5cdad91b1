#include "test_dns_server.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

namespace certfleet::testing {
namespace fs = std::filesystem;

namespace {

std::string randomSecret() {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::random_device random;
  std::string secret;
  // 48 base64 digits: 36 bytes of key, and no padding to get right.
  for (int i = 0; i < 48; ++i) {
    secret += kAlphabet[random() % 64];
  }
  return secret;
}

bool canBind(const std::string& address, std::uint16_t port, int type) {
  int fd = ::socket(AF_INET, type, 0);
  if (fd < 0) {
    return false;
  }
  int yes = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  sockaddr_in where{};
  where.sin_family = AF_INET;
  where.sin_port = htons(port);
  ::inet_pton(AF_INET, address.c_str(), &where.sin_addr);
  bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&where), sizeof(where)) == 0;
  ::close(fd);
  return bound;
}

}  // namespace

int runCommand(const std::string& command, std::string* output) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    return -1;
  }
  char buffer[512];
  output->clear();
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) {
    *output += buffer;
  }
  int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TestDnsServer::TestDnsServer(std::string address, std::uint16_t port, Zones zones)
    : address_(std::move(address)), port_(port), zones_(std::move(zones)) {}

TestDnsServer::~TestDnsServer() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    // named needs a moment to let go of its sockets; after 5 s it is killed outright.
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  if (!directory_.empty()) {
    std::error_code ignored;
    fs::remove_all(directory_, ignored);
  }
}

std::string TestDnsServer::namedBinary() {
  // start-env runs a copy of named when AppArmor confines /usr/sbin/named; so do we.
  if (const char* env = std::getenv("CERTFLEET_TEST_ENV")) {
    fs::path copy = fs::path(env) / "bin" / "named";
    if (fs::exists(copy)) {
      return copy.string();
    }
  }
  for (const char* candidate : {"/usr/sbin/named", "/usr/bin/named"}) {
    if (::access(candidate, X_OK) == 0) {
      return candidate;
    }
  }
  return "";
}

std::string TestDnsServer::enterPrivateLoopback(const std::vector<std::string>& addresses) {
  if (::unshare(CLONE_NEWNET) != 0) {
    return std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
  }
  std::string command = "ip link set lo up";
  for (const std::string& address : addresses) {
    command += " && ip addr add " + address + "/8 dev lo";
  }
  std::string output;
  if (runCommand(command, &output) != 0) {
    return command + ": " + output;
  }
  return "";
}

std::uint16_t TestDnsServer::freePort(const std::vector<std::string>& addresses) {
  std::mt19937 random{std::random_device{}()};
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto port =
        static_cast<std::uint16_t>(std::uniform_int_distribution<int>(20000, 60000)(random));
    bool free = true;
    for (const std::string& address : addresses) {
      free = free && canBind(address, port, SOCK_DGRAM) && canBind(address, port, SOCK_STREAM);
    }
    if (free) {
      return port;
    }
  }
  return 0;
}

bool TestDnsServer::start() {
  char pattern[] = "/tmp/certfleet-named-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) {
    return false;
  }
  directory_ = pattern;
  secret_ = randomSecret();
  fs::create_directories(directory_ + "/managed-keys");

  std::ofstream conf(directory_ + "/named.conf");
  // The same shape as tests/env/start-env: loopback only, no recursion, no NOTIFY (the
  // NS records name port 53), no rndc channel.
  conf << "options {\n"
       << "  directory \"" << directory_ << "\";\n"
       << "  pid-file \"" << directory_ << "/named.pid\";\n"
       << "  session-keyfile \"" << directory_ << "/session.key\";\n"
       << "  managed-keys-directory \"" << directory_ << "/managed-keys\";\n"
       << "  listen-on port " << port_ << " { " << address_ << "; };\n"
       << "  listen-on-v6 { none; };\n"
       << "  recursion no;\n  dnssec-validation no;\n  notify no;\n"
       << "  allow-transfer { none; };\n  allow-query { 127.0.0.0/8; };\n"
       << "};\ncontrols { };\n"
       << "key \"test-key\" { algorithm hmac-sha256; secret \"" << secret_ << "\"; };\n";
  for (const auto& [zone, records] : zones_) {
    std::ofstream file(directory_ + "/" + zone + ".zone");
    file << "$TTL 60\n" << records << "\n";
    conf << "zone \"" << zone << "\" {\n  type primary;\n  file \"" << directory_ << "/" << zone
         << ".zone\";\n  update-policy { grant test-key zonesub TXT; };\n};\n";
  }
  conf.close();
  std::ofstream key(directory_ + "/nsupdate.key");
  key << "key \"test-key\" {\n  algorithm hmac-sha256;\n  secret \"" << secret_ << "\";\n};\n";
  key.close();

  std::string binary = namedBinary();
  std::string log_file = directory_ + "/named.log";
  std::string config = directory_ + "/named.conf";
  pid_ = ::fork();
  if (pid_ == 0) {
    int out = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    ::execl(binary.c_str(), binary.c_str(), "-g", "-4", "-c", config.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid_ < 0) {
    return false;
  }

  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    bool ready = true;
    for (const auto& [zone, records] : zones_) {
      std::string output;
      runCommand("dig +short +norec +time=1 +tries=1 @" + address_ + " -p " +
                     std::to_string(port_) + " " + zone + " SOA",
                 &output);
      ready = ready && output.find("hostmaster") != std::string::npos;
    }
    if (ready) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string TestDnsServer::update(const std::vector<std::string>& lines,
                                  const std::string& zone) const {
  std::string script_file = directory_ + "/update.txt";
  std::ofstream script(script_file);
  script << "server " << address_ << " " << port_ << "\nzone " << zone << "\n";
  for (const std::string& line : lines) {
    script << "update " << line << "\n";
  }
  script << "send\n";
  script.close();
  std::string output;
  int status =
      runCommand("nsupdate -t 5 -k " + directory_ + "/nsupdate.key " + script_file, &output);
  return status == 0 ? "" : "nsupdate exited " + std::to_string(status) + ": " + output;
}

std::vector<std::string> TestDnsServer::txt(const std::string& name) const {
  std::string output;
  runCommand("dig +short +norec +time=1 +tries=2 @" + address_ + " -p " + std::to_string(port_) +
                 " TXT " + name,
             &output);
  std::vector<std::string> values;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) {
      values.push_back(line);
    }
  }
  return values;
}

std::string TestDnsServer::endpoint() const {
  return address_ + ":" + std::to_string(port_);
}

std::string TestDnsServer::log() const {
  // The last lines say why it stopped or what it refused; the first are build options.
  std::ifstream in(directory_ + "/named.log");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  std::string text = "named on " + endpoint() + " (" + directory_ + "), last lines of its log:\n";
  for (std::size_t i = lines.size() > 15 ? lines.size() - 15 : 0; i < lines.size(); ++i) {
    text += "  " + lines[i] + "\n";
  }
  return text;
}

}  // namespace certfleet::testing
