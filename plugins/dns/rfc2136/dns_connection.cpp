#include "dns_connection.hpp"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <system_error>
#include <utility>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

namespace certfleet::rfc2136 {

std::string formatDuration(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) {
    return std::to_string(duration.count() / 1000) + "s";
  }
  return std::to_string(duration.count()) + "ms";
}

DnsConnection::DnsConnection(ServerAddress server, std::chrono::milliseconds timeout)
    : server_(std::move(server)), timeout_(timeout) {}

DnsConnection::~DnsConnection() {
  close();
}

void DnsConnection::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Status DnsConnection::systemError(const char* what, int error) const {
  std::string reason = std::error_code(error, std::generic_category()).message();
  if (!reason.empty()) {
    reason[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(reason[0])));
  }
  return unavailable(std::string(what) + " " + server_.text + ": " + reason);
}

Result<std::vector<std::uint8_t>> DnsConnection::exchange(
    const std::vector<std::uint8_t>& message) {
  bool reused = fd_ >= 0;
  bool peer_closed = false;
  Result<std::vector<std::uint8_t>> reply = exchangeOnce(message, &peer_closed);
  if (!reply.ok() && reused && peer_closed) {
    // The server closed an idle connection under us. Sending again is safe: adding a
    // present record or deleting an absent one changes nothing (RFC 2136 3.4.2).
    close();
    reply = exchangeOnce(message, &peer_closed);
  }
  if (!reply.ok()) {
    close();
  }
  return reply;
}

Result<std::vector<std::uint8_t>> DnsConnection::exchangeOnce(
    const std::vector<std::uint8_t>& message, bool* peer_closed) {
  *peer_closed = false;
  if (message.size() > 65535) {
    return internalError("dns message of " + std::to_string(message.size()) +
                         " bytes exceeds the 65535 bytes tcp can carry");
  }
  Clock::time_point deadline = Clock::now() + timeout_;
  if (fd_ < 0) {
    Status connected = connect(deadline);
    if (!connected.ok()) {
      return connected;
    }
  }

  std::vector<std::uint8_t> framed;
  framed.reserve(message.size() + 2);
  framed.push_back(static_cast<std::uint8_t>(message.size() >> 8));
  framed.push_back(static_cast<std::uint8_t>(message.size() & 0xff));
  framed.insert(framed.end(), message.begin(), message.end());
  Status written = writeAll(framed.data(), framed.size(), deadline);
  if (!written.ok()) {
    *peer_closed = true;
    return written;
  }

  std::uint8_t length[2];
  Status read = readExactly(length, sizeof(length), deadline, peer_closed);
  if (!read.ok()) {
    return read;
  }
  std::vector<std::uint8_t> reply(static_cast<std::size_t>(length[0]) << 8 | length[1]);
  read = readExactly(reply.data(), reply.size(), deadline, peer_closed);
  if (!read.ok()) {
    // A reply cut short is not an idle close: the server may have acted on the message.
    *peer_closed = false;
    return read;
  }
  return reply;
}

Status DnsConnection::connect(Clock::time_point deadline) {
  const sockaddr* address = reinterpret_cast<const sockaddr*>(&server_.socket_address);
  fd_ = ::socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    return systemError("socket for", errno);
  }
  int one = 1;
  // Small request, small reply: waiting for more data to coalesce only adds latency.
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

  if (::connect(fd_, address, server_.socket_address_length) == 0) {
    return {};
  }
  if (errno != EINPROGRESS) {
    int error = errno;
    close();
    return systemError("cannot reach", error);
  }
  Status ready = waitFor(POLLOUT, deadline);
  if (!ready.ok()) {
    close();
    return ready;
  }
  int error = 0;
  socklen_t error_length = sizeof(error);
  ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &error_length);
  if (error != 0) {
    close();
    return systemError("cannot reach", error);
  }
  return {};
}

Status DnsConnection::waitFor(short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return unavailable("no answer from " + server_.text + " within " + formatDuration(timeout_));
    }
    pollfd entry{fd_, events, 0};
    int ready = ::poll(&entry, 1, static_cast<int>(std::min<long long>(left.count(), 60000)));
    if (ready < 0 && errno != EINTR) {
      return systemError("poll on connection to", errno);
    }
    if (ready > 0) {
      return {};
    }
  }
}

Status DnsConnection::writeAll(const std::uint8_t* data,
                               std::size_t size,
                               Clock::time_point deadline) {
  while (size > 0) {
    ssize_t sent = ::send(fd_, data, size, MSG_NOSIGNAL);
    if (sent > 0) {
      data += sent;
      size -= static_cast<std::size_t>(sent);
      continue;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return systemError("send to", errno);
    }
    Status ready = waitFor(POLLOUT, deadline);
    if (!ready.ok()) {
      return ready;
    }
  }
  return {};
}

Status DnsConnection::readExactly(std::uint8_t* data,
                                  std::size_t size,
                                  Clock::time_point deadline,
                                  bool* peer_closed) {
  while (size > 0) {
    ssize_t received = ::recv(fd_, data, size, 0);
    if (received > 0) {
      data += received;
      size -= static_cast<std::size_t>(received);
      continue;
    }
    if (received == 0) {
      *peer_closed = true;
      return unavailable(server_.text + " closed the connection without an answer");
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == ECONNRESET) {
      *peer_closed = true;
      return systemError("receive from", errno);
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return systemError("receive from", errno);
    }
    Status ready = waitFor(POLLIN, deadline);
    if (!ready.ok()) {
      return ready;
    }
  }
  return {};
}

}  // namespace certfleet::rfc2136
