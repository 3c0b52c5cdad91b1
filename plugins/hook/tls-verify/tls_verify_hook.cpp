// hook.tls-verify: checks over TLS that the host now serves the leaf certificate that was
// just deployed. Identity of the leaf is the question here, not trust in its chain: the
// chain is not verified (see README.md).
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "certfleet/plugin.hpp"
#include "certfleet/status.hpp"

#include <sys/socket.h>

namespace {

using certfleet::CertificateBundle;
using certfleet::HostTarget;
using certfleet::LogLevel;
using certfleet::Result;
using certfleet::Settings;
using certfleet::Status;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kDefaultPort = 443;
constexpr std::chrono::milliseconds kDefaultTimeout = std::chrono::seconds(15);

// nginx swaps workers within tens of milliseconds of a reload; start polling that fast and
// back off so a slow host is not hammered.
constexpr std::chrono::milliseconds kFirstDelay{50};
constexpr std::chrono::milliseconds kMaxDelay{1000};

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct AddrinfoFree {
  void operator()(addrinfo* info) const { freeaddrinfo(info); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  Socket(Socket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  int fd() const { return fd_; }

 private:
  int fd_;
};

// OpenSSL writes to the socket with write(2), so a server that resets the connection
// mid-handshake raises SIGPIPE, whose default action ends the whole orchestrator. Blocks
// it on this thread for the handshake and discards any that the handshake caused.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    ::sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    ::pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
  }
  ~SigpipeBlock() {
    if (!was_pending_) {
      timespec no_wait{};
      while (::sigtimedwait(&pipe_, nullptr, &no_wait) == SIGPIPE) {
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t previous_{};
  bool was_pending_ = false;
};

struct VerifySettings {
  std::string address;      // empty: the host's SSH address
  std::string server_name;  // empty: the host's first name
  std::uint16_t port = kDefaultPort;
  std::chrono::milliseconds timeout = kDefaultTimeout;
};

// A certificate as messages name it.
struct CertificateId {
  std::string sha256;  // of the DER encoding, lower-case hex
  std::string serial;  // hex

  std::string describe() const { return "sha256 " + sha256 + " (serial " + serial + ")"; }
};

Result<VerifySettings> parseVerifySettings(const Settings& settings) {
  VerifySettings parsed;
  parsed.address = settings.getOr("address", "");
  parsed.server_name = settings.getOr("server_name", "");

  Result<std::int64_t> port = settings.getInt("port", kDefaultPort);
  if (!port.ok()) {
    return port.status();
  }
  if (*port < 1 || *port > 65535) {
    return settings.error("port",
                          "'port' must be between 1 and 65535, got " + std::to_string(*port));
  }
  parsed.port = static_cast<std::uint16_t>(*port);

  Result<std::chrono::milliseconds> timeout = settings.getDuration("timeout", kDefaultTimeout);
  if (!timeout.ok()) {
    return timeout.status();
  }
  if (timeout->count() <= 0) {
    return settings.error("timeout", "'timeout' must be longer than 0");
  }
  parsed.timeout = *timeout;
  return parsed;
}

std::string formatEndpoint(const std::string& address, std::uint16_t port) {
  if (address.find(':') != std::string::npos) {
    return "[" + address + "]:" + std::to_string(port);
  }
  return address + ":" + std::to_string(port);
}

// strerror and getaddrinfo capitalise their messages; ours are lower case.
std::string lowerFirst(std::string text) {
  if (text.size() >= 2 && std::isupper(static_cast<unsigned char>(text[0])) != 0 &&
      std::islower(static_cast<unsigned char>(text[1])) != 0) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

std::string opensslReason() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) {
    return "no details from openssl";
  }
  const char* reason = ERR_reason_error_string(code);
  return reason != nullptr ? reason : "openssl error " + std::to_string(code);
}

std::string toHex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    hex += kDigits[bytes[i] >> 4];
    hex += kDigits[bytes[i] & 0x0f];
  }
  return hex;
}

Result<CertificateId> identify(X509* cert) {
  CertificateId id;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  if (X509_digest(cert, EVP_sha256(), digest, &digest_size) != 1) {
    return certfleet::internalError("hash certificate: " + opensslReason());
  }
  id.sha256 = toHex(digest, digest_size);

  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* serial_hex = serial != nullptr ? BN_bn2hex(serial) : nullptr;
  id.serial = serial_hex != nullptr ? serial_hex : "?";
  OPENSSL_free(serial_hex);
  BN_free(serial);
  std::transform(id.serial.begin(), id.serial.end(), id.serial.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return id;
}

// The deployed leaf: `leaf_pem`, or the first certificate of the full chain.
Result<CertificateId> expectedLeaf(const CertificateBundle& bundle) {
  const std::string& pem = bundle.leaf_pem.empty() ? bundle.fullchain_pem : bundle.leaf_pem;
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(bio != nullptr ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (cert == nullptr) {
    return certfleet::invalidArgument("the deployed leaf is not a PEM certificate: " +
                                      opensslReason());
  }
  return identify(cert.get());
}

int millisecondsUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 60000));
}

// Waits until `fd` is ready for `events` or the deadline passes.
bool waitFor(int fd, short events, Clock::time_point deadline) {
  while (true) {
    int wait = millisecondsUntil(deadline);
    if (wait <= 0) {
      return false;
    }
    pollfd entry{fd, events, 0};
    int ready = ::poll(&entry, 1, wait);
    if (ready > 0) {
      return true;
    }
    if (ready < 0 && errno != EINTR) {
      return false;
    }
  }
}

Result<Socket> connectTcp(const std::string& address,
                          std::uint16_t port,
                          Clock::time_point deadline) {
  std::string endpoint = formatEndpoint(address, port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  int rc = ::getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) {
    return certfleet::unavailable("resolve " + address + ": " + lowerFirst(::gai_strerror(rc)));
  }
  std::unique_ptr<addrinfo, AddrinfoFree> addresses(found);

  std::string failure = "no address";
  for (addrinfo* info = addresses.get(); info != nullptr; info = info->ai_next) {
    Socket socket(::socket(info->ai_family, info->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (socket.fd() < 0) {
      failure = lowerFirst(std::strerror(errno));
      continue;
    }
    if (::connect(socket.fd(), info->ai_addr, info->ai_addrlen) != 0 && errno != EINPROGRESS) {
      failure = lowerFirst(std::strerror(errno));
      continue;
    }
    if (!waitFor(socket.fd(), POLLOUT, deadline)) {
      failure = "timed out";
      continue;
    }
    int error = 0;
    socklen_t size = sizeof(error);
    ::getsockopt(socket.fd(), SOL_SOCKET, SO_ERROR, &error, &size);
    if (error != 0) {
      failure = lowerFirst(std::strerror(error));
      continue;
    }
    return socket;
  }
  return certfleet::unavailable("connect " + endpoint + ": " + failure);
}

// One TLS handshake; returns the leaf certificate the server presented.
Result<X509Ptr> fetchServedLeaf(SSL_CTX* ctx,
                                const std::string& address,
                                std::uint16_t port,
                                const std::string& server_name,
                                Clock::time_point deadline) {
  SigpipeBlock no_sigpipe;
  Result<Socket> socket = connectTcp(address, port, deadline);
  if (!socket.ok()) {
    return socket.status();
  }
  std::string where = "tls handshake with " + formatEndpoint(address, port) +
                      (server_name.empty() ? "" : " (server name " + server_name + ")");

  ERR_clear_error();
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx));
  if (ssl == nullptr || SSL_set_fd(ssl.get(), socket->fd()) != 1) {
    return certfleet::internalError(where + ": " + opensslReason());
  }
  if (!server_name.empty() && SSL_set_tlsext_host_name(ssl.get(), server_name.c_str()) != 1) {
    return certfleet::invalidArgument(where + ": bad server name: " + opensslReason());
  }
  while (true) {
    int rc = SSL_connect(ssl.get());
    if (rc == 1) {
      break;
    }
    int error = SSL_get_error(ssl.get(), rc);
    if (error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE) {
      where += ": ";
      where += error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0
                   ? "connection closed by the server"
                   : opensslReason();
      return certfleet::unavailable(where);
    }
    short events = error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
    if (!waitFor(socket->fd(), events, deadline)) {
      return certfleet::unavailable(where + ": timed out");
    }
  }
  X509Ptr leaf(SSL_get1_peer_certificate(ssl.get()));
  if (leaf == nullptr) {
    return certfleet::internalError(where + ": the server presented no certificate");
  }
  return leaf;
}

class TlsVerifyHook final : public certfleet::HookPlugin {
 public:
  Status configure(const Settings& settings, certfleet::Services& services) override {
    if (Status known = settings.onlyKnown({"address", "port", "timeout", "server_name"});
        !known.ok()) {
      return known;
    }
    services_ = &services;
    if (!settings.prefix().empty()) {
      context_ = settings.prefix();
    }
    if (Status valid = parseVerifySettings(settings).status(); !valid.ok()) {
      return valid;
    }
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    if (ctx_ == nullptr) {
      return certfleet::internalError(context_ + ": create tls context: " + opensslReason());
    }
    // Only the leaf's identity matters: an untrusted chain must still be examined.
    SSL_CTX_set_verify(ctx_.get(), SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_min_proto_version(ctx_.get(), TLS1_2_VERSION);
    return {};
  }

  Status checkHost(const HostTarget& /*host*/, const Settings& settings) override {
    if (Status known = settings.onlyKnown({"address", "port", "timeout", "server_name"});
        !known.ok()) {
      return known;
    }
    return parseVerifySettings(settings).status();
  }

  Status run(const HostTarget& host,
             const Settings& settings,
             const CertificateBundle& bundle) override {
    Result<VerifySettings> parsed = parseVerifySettings(settings);
    if (!parsed.ok()) {
      return parsed.status();
    }
    return verify(host, *parsed, bundle).withContext(context_);
  }

 private:
  Status verify(const HostTarget& host,
                const VerifySettings& settings,
                const CertificateBundle& bundle) {
    Result<CertificateId> expected = expectedLeaf(bundle);
    if (!expected.ok()) {
      return expected.status();
    }
    std::string address = settings.address.empty() ? host.address : settings.address;
    if (address.empty()) {
      return certfleet::invalidArgument("host " + host.name + " has no address to check");
    }
    std::string server_name = settings.server_name;
    if (server_name.empty() && !host.names.empty()) {
      server_name = host.names.front();
    }
    std::string where = formatEndpoint(address, settings.port);

    // The reload is asynchronous: poll, quickly at first, until the new leaf shows or
    // the time is up. The last failure is the one reported.
    Clock::time_point deadline = std::min(Clock::now() + settings.timeout, services_->deadline());
    std::chrono::milliseconds delay = kFirstDelay;
    Status last;
    // During a reload the old workers still answer some new connections for a moment: the
    // new leaf counts as served once several handshakes in a row show it.
    constexpr int kConfirmations = 3;
    int confirmed = 0;
    for (int attempt = 1;; ++attempt) {
      Result<X509Ptr> served =
          fetchServedLeaf(ctx_.get(), address, settings.port, server_name, deadline);
      if (served.ok()) {
        Result<CertificateId> id = identify(served->get());
        if (!id.ok()) {
          return id.status();
        }
        if (id->sha256 == expected->sha256 && ++confirmed >= kConfirmations) {
          services_->log(LogLevel::kInfo, where + " serves the deployed certificate " +
                                              expected->describe() + " (attempt " +
                                              std::to_string(attempt) + ")");
          return {};
        }
        if (id->sha256 == expected->sha256) {
          std::this_thread::sleep_for(kFirstDelay);
          continue;
        }
        confirmed = 0;
        last = certfleet::failedPrecondition(where + ": served certificate " + id->describe() +
                                             " is not the deployed one " + expected->describe());
      } else {
        last = served.status();
      }
      services_->log(LogLevel::kDebug,
                     "attempt " + std::to_string(attempt) + ": " + last.message());

      if (Clock::now() + delay >= deadline) {
        return last;
      }
      std::this_thread::sleep_for(delay);
      delay = std::min(kMaxDelay, delay * 3 / 2);
    }
  }

  certfleet::Services* services_ = nullptr;
  std::string context_ = "hook.tls-verify";
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx_;
};

}  // namespace

CERTFLEET_PLUGIN("tls-verify", certfleet::Stage::kHook, "0.1.0", TlsVerifyHook)
