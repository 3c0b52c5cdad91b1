#include "rsync/openssh.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace certfleet::rsync {
namespace {

// ssh expands %-tokens in UserKnownHostsFile and IdentityFile; a literal % is written %%.
std::string escapePercent(const std::string& path) {
  std::string escaped;
  for (char c : path) {
    escaped += c;
    if (c == '%') {
      escaped += '%';
    }
  }
  return escaped;
}

bool hasUnsafeChar(const std::string& text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\'' || c == '"' || c == '\\' ||
           static_cast<unsigned char>(c) < 0x20;
  });
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

// The line of `text` that contains `needle`, without the line break.
std::string lineWith(const std::string& text, const std::string& needle) {
  std::size_t at = text.find(needle);
  if (at == std::string::npos) {
    return "";
  }
  std::size_t start = text.rfind('\n', at);
  start = start == std::string::npos ? 0 : start + 1;
  std::size_t end = text.find('\n', at);
  return text.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

// "SHA256:abc..." from ssh's host key warning, or "" when it gave none.
std::string presentedFingerprint(const std::string& text) {
  std::size_t at = text.find("SHA256:");
  if (at == std::string::npos) {
    return "";
  }
  std::size_t end = text.find_first_of(" .\n", at);
  return text.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

// "ED25519" from "... for the ED25519 key sent by ..." or "No ED25519 host key is known".
std::string keyType(const std::string& text) {
  for (const char* type : {"ED25519", "ECDSA", "RSA", "DSA"}) {
    if (contains(text, std::string(" ") + type + " ")) {
      return type;
    }
  }
  return "";
}

}  // namespace

std::string shellQuote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

std::string lastLines(const std::string& text, std::size_t max_bytes) {
  std::string tail = text.size() > max_bytes ? text.substr(text.size() - max_bytes) : text;
  std::string line;
  for (char c : tail) {
    if (c == '\n') {
      line += "; ";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      line += ' ';
    } else {
      line += c;
    }
  }
  auto is_filler = [](char c) { return c == ' ' || c == ';'; };
  while (!line.empty() && is_filler(line.back())) {
    line.pop_back();
  }
  std::size_t start = 0;
  while (start < line.size() && is_filler(line[start])) {
    ++start;
  }
  line.erase(0, start);
  if (text.size() > max_bytes) {
    line = "..." + line;
  }
  return line.empty() ? "(no error output)" : line;
}

OpenSsh::OpenSsh(std::string ssh_path, ssh::SshOptions options, HostTarget host)
    : ssh_path_(std::move(ssh_path)),
      options_(std::move(options)),
      host_(std::move(host)),
      endpoint_(ssh::formatEndpoint(host_.address, host_.port)) {}

Status OpenSsh::checkUsable(const std::string& ssh_path, const ssh::SshOptions& options) {
  for (const auto& [what, path] : {std::pair<const char*, const std::string&>{"ssh_path", ssh_path},
                                   {"known_hosts", options.known_hosts},
                                   {"identity_file", options.identity_file}}) {
    if (hasUnsafeChar(path)) {
      return invalidArgument(std::string(what) + " " + path +
                             ": a path with white space, quotes or backslashes cannot be passed "
                             "through rsync's --rsh");
    }
  }
  return {};
}

Status OpenSsh::checkHost(const HostTarget& host) {
  if (host.address.empty() || host.address.front() == '-' || hasUnsafeChar(host.address) ||
      host.address.find_first_of("@/") != std::string::npos) {
    return invalidArgument("host " + host.name + ": address '" + host.address +
                           "' is not a host name or IP address ssh can be given");
  }
  if (host.user.empty() || host.user.front() == '-' || hasUnsafeChar(host.user) ||
      host.user.find_first_of("@:/") != std::string::npos) {
    return invalidArgument("host " + host.name + ": user '" + host.user +
                           "' cannot be passed to ssh");
  }
  return {};
}

std::vector<std::string> OpenSsh::options() const {
  // No ssh_config: nothing of the orchestrator user's set-up decides where we connect.
  std::vector<std::string> args{"-F", "/dev/null"};
  auto option = [&args](std::string value) {
    args.push_back("-o");
    args.push_back(std::move(value));
  };

  // Never ask, never accept an unknown or changed key, never record one.
  option("BatchMode=yes");
  option("StrictHostKeyChecking=yes");
  option("UpdateHostKeys=no");
  option("UserKnownHostsFile=" + escapePercent(options_.known_hosts));
  option("GlobalKnownHostsFile=/dev/null");
  option("CheckHostIP=no");

  // The configured identity alone: no agent, no other key, no password.
  option("IdentitiesOnly=yes");
  option("IdentityAgent=none");
  option("PasswordAuthentication=no");
  option("KbdInteractiveAuthentication=no");
  args.insert(args.end(), {"-i", escapePercent(options_.identity_file)});

  // Nothing shared with or forwarded to other sessions.
  option("ControlMaster=no");
  option("ControlPath=none");
  option("ForwardAgent=no");
  option("ForwardX11=no");
  option("ClearAllForwardings=yes");

  auto seconds = (options_.connect_timeout.count() + 999) / 1000;
  option("ConnectTimeout=" + std::to_string(std::max<std::int64_t>(1, seconds)));
  args.insert(args.end(), {"-p", std::to_string(host_.port), "-l", host_.user});
  return args;
}

std::string OpenSsh::rshString() const {
  std::string joined = ssh_path_;
  for (const std::string& option : options()) {
    joined += " " + option;
  }
  return joined;
}

std::vector<std::string> OpenSsh::commandArgv(const std::string& command) const {
  std::vector<std::string> argv{ssh_path_};
  for (std::string& option : options()) {
    argv.push_back(std::move(option));
  }
  argv.insert(argv.end(), {"-T", "--", host_.address, command});
  return argv;
}

std::string OpenSsh::rsyncHost() const {
  if (host_.address.find(':') != std::string::npos) {
    return "[" + host_.address + "]";
  }
  return host_.address;
}

Status OpenSsh::classify(const std::string& text) const {
  const std::string prefix = "ssh " + endpoint_ + ": ";
  if (contains(text, "REMOTE HOST IDENTIFICATION HAS CHANGED") ||
      contains(text, "has changed and you have requested strict checking")) {
    // The one refusal that may mean an attack: say so plainly, with the evidence.
    std::string presented = keyType(text);
    std::string fingerprint = presentedFingerprint(text);
    std::string key = presented.empty() ? "another key" : presented + " key";
    if (!fingerprint.empty()) {
      key += " " + fingerprint;
    }
    return failedPrecondition(prefix + "host key changed: the host presents " + key +
                              ", not the key " + options_.known_hosts +
                              " holds for it; someone may be intercepting the connection, or "
                              "the host was reinstalled; refusing to connect until the key is "
                              "checked out of band and known_hosts corrected");
  }
  if (contains(text, "host key is known for") || contains(text, "Host key verification failed")) {
    return failedPrecondition(prefix + "unknown host key: " + options_.known_hosts +
                              " has no entry for " + endpoint_ +
                              " (ssh: " + lastLines(lineWith(text, "host key")) +
                              "); add the key to known_hosts after checking it out of band");
  }
  for (const char* unreachable :
       {"Connection refused", "Connection timed out", "No route to host", "Network is unreachable",
        "Could not resolve hostname", "Connection closed by", "Connection reset by",
        "kex_exchange_identification", "Operation timed out"}) {
    if (contains(text, unreachable)) {
      return unavailable(prefix + "connect: " + lastLines(lineWith(text, unreachable)));
    }
  }
  if (contains(text, "Permission denied (")) {
    return permissionDenied(prefix + "login as " + host_.user + " refused the key of " +
                            options_.identity_file);
  }
  if (contains(text, "Load key") || contains(text, "invalid format") ||
      contains(text, "UNPROTECTED PRIVATE KEY FILE")) {
    return invalidArgument(prefix + "cannot use identity_file " + options_.identity_file + ": " +
                           lastLines(text));
  }
  return {};
}

}  // namespace certfleet::rsync
