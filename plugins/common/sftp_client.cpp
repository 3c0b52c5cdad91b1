#include "common/sftp_client.hpp"

#include <algorithm>
#include <optional>
#include <utility>

namespace certfleet::ssh {
namespace {

using Clock = std::chrono::steady_clock;

// Message types, flags and status codes of draft-ietf-secsh-filexfer-02 (SFTP version 3),
// the version OpenSSH speaks.
constexpr std::uint32_t kVersion = 3;
constexpr std::uint8_t kFxpInit = 1;
constexpr std::uint8_t kFxpVersion = 2;
constexpr std::uint8_t kFxpOpen = 3;
constexpr std::uint8_t kFxpClose = 4;
constexpr std::uint8_t kFxpRead = 5;
constexpr std::uint8_t kFxpWrite = 6;
constexpr std::uint8_t kFxpFstat = 8;
constexpr std::uint8_t kFxpFsetstat = 10;
constexpr std::uint8_t kFxpRemove = 13;
constexpr std::uint8_t kFxpStatus = 101;
constexpr std::uint8_t kFxpHandle = 102;
constexpr std::uint8_t kFxpData = 103;
constexpr std::uint8_t kFxpAttrs = 105;
constexpr std::uint8_t kFxpExtended = 200;

constexpr std::uint32_t kOpenRead = 0x01;
constexpr std::uint32_t kOpenWrite = 0x02;
constexpr std::uint32_t kOpenCreate = 0x08;
constexpr std::uint32_t kOpenExclusive = 0x20;

constexpr std::uint32_t kAttrSize = 0x01;
constexpr std::uint32_t kAttrUidGid = 0x02;
constexpr std::uint32_t kAttrPermissions = 0x04;
constexpr std::uint32_t kAttrAcModTime = 0x08;
constexpr std::uint32_t kAttrExtended = 0x80000000;

constexpr std::uint32_t kFxOk = 0;
constexpr std::uint32_t kFxEof = 1;
constexpr std::uint32_t kFxNoSuchFile = 2;
constexpr std::uint32_t kFxPermissionDenied = 3;
constexpr std::uint32_t kFxFailure = 4;
constexpr std::uint32_t kFxBadMessage = 5;
constexpr std::uint32_t kFxOpUnsupported = 8;

// OpenSSH accepts packets up to 256 KiB; 32 KiB writes are what every client uses and any
// server takes. Larger replies than the cap would be a broken or hostile server.
constexpr std::size_t kWriteChunk = std::size_t{32} * 1024;
constexpr std::uint32_t kReadChunk = std::uint32_t{32} * 1024;
constexpr std::uint32_t kMaxReply = std::uint32_t{256} * 1024;

void putU32(std::string& out, std::uint32_t value) {
  out.push_back(static_cast<char>((value >> 24) & 0xff));
  out.push_back(static_cast<char>((value >> 16) & 0xff));
  out.push_back(static_cast<char>((value >> 8) & 0xff));
  out.push_back(static_cast<char>(value & 0xff));
}

void putU64(std::string& out, std::uint64_t value) {
  putU32(out, static_cast<std::uint32_t>(value >> 32));
  putU32(out, static_cast<std::uint32_t>(value & 0xffffffffU));
}

void putString(std::string& out, std::string_view value) {
  putU32(out, static_cast<std::uint32_t>(value.size()));
  out.append(value);
}

void putModeAttrs(std::string& out, std::uint32_t mode) {
  putU32(out, kAttrPermissions);
  putU32(out, mode);
}

// Reads the fields of a received packet; every read is bounds-checked.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  std::optional<std::uint32_t> u32() {
    if (data_.size() < 4) {
      return std::nullopt;
    }
    std::uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
      value = (value << 8) | static_cast<unsigned char>(data_[i]);
    }
    data_.remove_prefix(4);
    return value;
  }

  std::optional<std::uint64_t> u64() {
    std::optional<std::uint32_t> high = u32();
    std::optional<std::uint32_t> low = u32();
    if (!high || !low) {
      return std::nullopt;
    }
    return (std::uint64_t{*high} << 32) | *low;
  }

  std::optional<std::string> string() {
    std::optional<std::uint32_t> size = u32();
    if (!size || data_.size() < *size) {
      return std::nullopt;
    }
    std::string value(data_.substr(0, *size));
    data_.remove_prefix(*size);
    return value;
  }

  bool empty() const { return data_.empty(); }

 private:
  std::string_view data_;
};

// The ATTRS structure of draft-ietf-secsh-filexfer-02 section 5.
std::optional<FileAttributes> readAttributes(Reader& reader) {
  FileAttributes attributes;
  std::optional<std::uint32_t> flags = reader.u32();
  if (!flags) {
    return std::nullopt;
  }
  if ((*flags & kAttrSize) != 0) {
    attributes.size = reader.u64();
    if (!attributes.size) {
      return std::nullopt;
    }
  }
  if ((*flags & kAttrUidGid) != 0) {
    attributes.uid = reader.u32();
    attributes.gid = reader.u32();
    if (!attributes.uid || !attributes.gid) {
      return std::nullopt;
    }
  }
  if ((*flags & kAttrPermissions) != 0) {
    attributes.permissions = reader.u32();
    if (!attributes.permissions) {
      return std::nullopt;
    }
  }
  if ((*flags & kAttrAcModTime) != 0) {
    if (!reader.u32() || !reader.u32()) {
      return std::nullopt;
    }
  }
  if ((*flags & kAttrExtended) != 0) {
    std::optional<std::uint32_t> count = reader.u32();
    for (std::uint32_t i = 0; count && i < *count; ++i) {
      if (!reader.string() || !reader.string()) {
        return std::nullopt;
      }
    }
    if (!count) {
      return std::nullopt;
    }
  }
  return attributes;
}

std::string describeStatus(std::uint32_t code, const std::string& server_message) {
  switch (code) {
    case kFxEof:
      return "unexpected end of file";
    case kFxNoSuchFile:
      return "no such file or directory";
    case kFxPermissionDenied:
      return "permission denied";
    case kFxBadMessage:
      return "server rejected the request as malformed";
    case kFxOpUnsupported:
      return "operation not supported by the server";
    case kFxFailure:
      // OpenSSH folds most errno values into this one code; its text is all we have.
      if (!server_message.empty() && server_message != "Failure") {
        return "failure (" + server_message + ")";
      }
      return "failure (the server gives no reason; the file may already exist or the disk "
             "be full)";
    default:
      return "sftp status " + std::to_string(code);
  }
}

StatusCode statusCodeFor(std::uint32_t code) {
  switch (code) {
    case kFxNoSuchFile:
      return StatusCode::kNotFound;
    case kFxPermissionDenied:
      return StatusCode::kPermissionDenied;
    case kFxOpUnsupported:
      return StatusCode::kFailedPrecondition;
    case kFxFailure:
      return StatusCode::kUnavailable;
    default:
      return StatusCode::kInternal;
  }
}

}  // namespace

struct SftpClient::Reply {
  std::uint8_t type = 0;
  std::string body;  // after the request id
};

SftpClient::SftpClient(SshConnection& connection, ssh_channel channel, Clock::time_point deadline)
    : connection_(connection), channel_(channel), deadline_(deadline) {}

SftpClient::~SftpClient() {
  ssh_channel_close(channel_);
  ssh_channel_free(channel_);
}

Result<std::unique_ptr<SftpClient>> SftpClient::open(SshConnection& connection,
                                                     Clock::time_point deadline) {
  ssh_channel channel = ssh_channel_new(connection.session());
  if (channel == nullptr) {
    return connection.failure(StatusCode::kInternal, "sftp: open channel");
  }
  std::unique_ptr<SftpClient> client(new SftpClient(connection, channel, deadline));
  if (ssh_channel_open_session(channel) != SSH_OK) {
    return connection.failure(StatusCode::kUnavailable, "sftp: open session channel");
  }
  if (ssh_channel_request_subsystem(channel, "sftp") != SSH_OK) {
    return connection.failure(StatusCode::kUnavailable, "sftp: start the sftp subsystem");
  }

  std::string init;
  putU32(init, kVersion);
  if (Status sent = client->sendPacket(kFxpInit, init); !sent.ok()) {
    return sent;
  }
  Result<std::string> packet = client->readPacket();
  if (!packet.ok()) {
    return packet.status();
  }
  if (packet->empty() || static_cast<std::uint8_t>((*packet)[0]) != kFxpVersion) {
    return internalError("ssh " + connection.endpoint() +
                         ": sftp: server did not answer the version handshake");
  }
  Reader reader(std::string_view(*packet).substr(1));
  std::optional<std::uint32_t> version = reader.u32();
  if (!version || *version < kVersion) {
    return internalError("ssh " + connection.endpoint() + ": sftp: server speaks version " +
                         (version ? std::to_string(*version) : "?") + ", need 3");
  }
  while (!reader.empty()) {
    std::optional<std::string> name = reader.string();
    std::optional<std::string> data = reader.string();
    if (!name || !data) {
      return internalError("ssh " + connection.endpoint() +
                           ": sftp: malformed extension list in the version reply");
    }
    client->extensions_[*name] = *data;
  }
  return client;
}

bool SftpClient::hasExtension(std::string_view name, std::string_view version) const {
  auto found = extensions_.find(name);
  return found != extensions_.end() && found->second == version;
}

Status SftpClient::lost(const std::string& what) const {
  return connection_.failure(StatusCode::kUnavailable, "sftp: " + what);
}

Status SftpClient::sendPacket(std::uint8_t type, const std::string& body) {
  std::string packet;
  packet.reserve(body.size() + 5);
  putU32(packet, static_cast<std::uint32_t>(body.size() + 1));
  packet.push_back(static_cast<char>(type));
  packet.append(body);

  std::size_t sent = 0;
  while (sent < packet.size()) {
    std::size_t piece = std::min<std::size_t>(packet.size() - sent, 1U << 20);
    int written = ssh_channel_write(channel_, packet.data() + sent, static_cast<uint32_t>(piece));
    if (written == SSH_ERROR) {
      return lost("send request");
    }
    sent += static_cast<std::size_t>(written);
  }
  return {};
}

Status SftpClient::readExactly(char* buffer, std::size_t size) {
  std::size_t got = 0;
  while (got < size) {
    auto remaining =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now());
    if (remaining.count() <= 0) {
      return deadlineExceeded("ssh " + connection_.endpoint() +
                              ": sftp: no reply from the server before the deadline");
    }
    int wait = static_cast<int>(std::min<std::int64_t>(remaining.count(), 1000));
    int n = ssh_channel_read_timeout(channel_, buffer + got, static_cast<uint32_t>(size - got), 0,
                                     wait);
    if (n == SSH_ERROR) {
      return lost("read reply");
    }
    if (n == 0 && ssh_channel_is_eof(channel_) != 0) {
      return unavailable("ssh " + connection_.endpoint() + ": sftp: server closed the channel");
    }
    got += static_cast<std::size_t>(std::max(n, 0));
  }
  return {};
}

// One packet without its length: the type byte, then the body.
Result<std::string> SftpClient::readPacket() {
  char header[4];
  if (Status read = readExactly(header, sizeof(header)); !read.ok()) {
    return read;
  }
  std::uint32_t size = *Reader(std::string_view(header, sizeof(header))).u32();
  if (size == 0 || size > kMaxReply) {
    return internalError("ssh " + connection_.endpoint() + ": sftp: reply of " +
                         std::to_string(size) + " bytes is out of bounds");
  }
  std::string packet(size, '\0');
  if (Status read = readExactly(packet.data(), packet.size()); !read.ok()) {
    return read;
  }
  return packet;
}

Result<SftpClient::Reply> SftpClient::request(std::uint8_t type, const std::string& body_after_id) {
  std::uint32_t id = next_id_++;
  std::string body;
  putU32(body, id);
  body.append(body_after_id);
  if (Status sent = sendPacket(type, body); !sent.ok()) {
    return sent;
  }

  Result<std::string> packet = readPacket();
  if (!packet.ok()) {
    return packet.status();
  }
  Reader reader(std::string_view(*packet).substr(1));
  std::optional<std::uint32_t> reply_id = reader.u32();
  // Requests go one at a time, so any other id means the stream is out of step.
  if (!reply_id || *reply_id != id) {
    return internalError("ssh " + connection_.endpoint() + ": sftp: reply to another request");
  }
  Reply reply;
  reply.type = static_cast<std::uint8_t>((*packet)[0]);
  reply.body = packet->substr(5);
  return reply;
}

Status SftpClient::expectOk(std::uint8_t type,
                            const std::string& body_after_id,
                            const std::string& what) {
  Result<Reply> reply = request(type, body_after_id);
  if (!reply.ok()) {
    return reply.status().withContext(what);
  }
  if (reply->type != kFxpStatus) {
    return internalError(what + ": unexpected sftp reply type " + std::to_string(reply->type));
  }
  Reader reader(reply->body);
  std::optional<std::uint32_t> code = reader.u32();
  if (!code) {
    return internalError(what + ": malformed sftp status");
  }
  if (*code == kFxOk) {
    return {};
  }
  std::string server_message = reader.string().value_or("");
  return {statusCodeFor(*code), what + ": " + describeStatus(*code, server_message)};
}

Result<std::string> SftpClient::create(const std::string& path, std::uint32_t mode) {
  Result<std::string> handle = openHandle(path, kOpenWrite | kOpenCreate | kOpenExclusive, mode);
  if (!handle.ok()) {
    return handle.status().withContext("create " + path);
  }
  return handle;
}

Result<std::string> SftpClient::openForReading(const std::string& path) {
  Result<std::string> handle = openHandle(path, kOpenRead, 0);
  if (!handle.ok()) {
    return handle.status().withContext("open " + path);
  }
  return handle;
}

// OPEN with `flags`; `mode` goes along as the new file's permissions when creating.
Result<std::string> SftpClient::openHandle(const std::string& path,
                                           std::uint32_t flags,
                                           std::uint32_t mode) {
  std::string body;
  putString(body, path);
  putU32(body, flags);
  if ((flags & kOpenCreate) != 0) {
    putModeAttrs(body, mode);
  } else {
    putU32(body, 0);  // no attributes
  }

  Result<Reply> reply = request(kFxpOpen, body);
  if (!reply.ok()) {
    return reply.status();
  }
  Reader reader(reply->body);
  if (reply->type == kFxpHandle) {
    std::optional<std::string> handle = reader.string();
    if (!handle) {
      return internalError("malformed sftp handle");
    }
    return *handle;
  }
  if (reply->type == kFxpStatus) {
    std::uint32_t code = reader.u32().value_or(kFxFailure);
    std::string server_message = reader.string().value_or("");
    if (code == kFxOk) {
      return internalError("server answered ok without a handle");
    }
    return Status(statusCodeFor(code), describeStatus(code, server_message));
  }
  return internalError("unexpected sftp reply type " + std::to_string(reply->type));
}

Result<std::string> SftpClient::read(const std::string& handle,
                                     std::uint64_t offset,
                                     std::uint32_t length) {
  std::string body;
  putString(body, handle);
  putU64(body, offset);
  putU32(body, length);

  Result<Reply> reply = request(kFxpRead, body);
  if (!reply.ok()) {
    return reply.status().withContext("read");
  }
  Reader reader(reply->body);
  if (reply->type == kFxpData) {
    std::optional<std::string> data = reader.string();
    if (!data || data->size() > length) {
      return internalError("read: malformed sftp data");
    }
    return std::move(*data);
  }
  if (reply->type == kFxpStatus) {
    std::uint32_t code = reader.u32().value_or(kFxFailure);
    if (code == kFxEof) {
      return std::string();
    }
    std::string server_message = reader.string().value_or("");
    return Status(statusCodeFor(code), "read: " + describeStatus(code, server_message));
  }
  return internalError("read: unexpected sftp reply type " + std::to_string(reply->type));
}

Result<FileAttributes> SftpClient::fstat(const std::string& handle) {
  std::string body;
  putString(body, handle);

  Result<Reply> reply = request(kFxpFstat, body);
  if (!reply.ok()) {
    return reply.status().withContext("stat");
  }
  Reader reader(reply->body);
  if (reply->type == kFxpAttrs) {
    std::optional<FileAttributes> attributes = readAttributes(reader);
    if (!attributes) {
      return internalError("stat: malformed sftp attributes");
    }
    return *attributes;
  }
  if (reply->type == kFxpStatus) {
    std::uint32_t code = reader.u32().value_or(kFxFailure);
    std::string server_message = reader.string().value_or("");
    return Status(statusCodeFor(code), "stat: " + describeStatus(code, server_message));
  }
  return internalError("stat: unexpected sftp reply type " + std::to_string(reply->type));
}

Result<std::string> SftpClient::readFile(const std::string& path,
                                         std::size_t max_bytes,
                                         FileAttributes* attributes_out) {
  Result<std::string> handle = openForReading(path);
  if (!handle.ok()) {
    return handle.status();
  }

  // The size is only a hint (the file may change while it is read); the bound is enforced
  // on the bytes received.
  // TODO: the reply packets that carried a private key's bytes are freed without being
  // wiped, so the bytes may linger in freed heap memory until it is reused.
  std::string contents;
  Status status;
  Result<FileAttributes> attributes = fstat(*handle);
  if (!attributes.ok()) {
    status = attributes.status();
  } else if (attributes->size && *attributes->size > max_bytes) {
    status = failedPrecondition("longer than " + std::to_string(max_bytes) + " bytes");
  } else if (attributes_out != nullptr) {
    *attributes_out = *attributes;
  }
  while (status.ok()) {
    Result<std::string> piece = read(*handle, contents.size(), kReadChunk);
    if (!piece.ok()) {
      status = piece.status();
      break;
    }
    if (piece->empty()) {
      break;
    }
    if (contents.size() + piece->size() > max_bytes) {
      status = failedPrecondition("longer than " + std::to_string(max_bytes) + " bytes");
      break;
    }
    contents += *piece;
  }

  Status closed = close(*handle);
  if (status.ok()) {
    status = closed;
  }
  if (!status.ok()) {
    return status.withContext("read " + path);
  }
  return contents;
}

Status SftpClient::write(const std::string& handle, std::uint64_t offset, std::string_view data) {
  // An empty file still gets one write so that a failing handle shows up here.
  std::size_t done = 0;
  do {
    std::string_view piece = data.substr(done, kWriteChunk);
    std::string body;
    putString(body, handle);
    putU64(body, offset + done);
    putString(body, piece);
    if (Status written = expectOk(kFxpWrite, body, "write"); !written.ok()) {
      return written;
    }
    done += piece.size();
  } while (done < data.size());
  return {};
}

Status SftpClient::setMode(const std::string& handle, std::uint32_t mode) {
  std::string body;
  putString(body, handle);
  putModeAttrs(body, mode);
  return expectOk(kFxpFsetstat, body, "set mode");
}

Status SftpClient::fsync(const std::string& handle) {
  std::string body;
  putString(body, kFsync);
  putString(body, handle);
  return expectOk(kFxpExtended, body, "fsync");
}

Status SftpClient::setOwner(const std::string& handle, std::uint32_t uid, std::uint32_t gid) {
  std::string body;
  putString(body, handle);
  putU32(body, kAttrUidGid);
  putU32(body, uid);
  putU32(body, gid);
  return expectOk(kFxpFsetstat, body,
                  "set owner " + std::to_string(uid) + " and group " + std::to_string(gid));
}

Status SftpClient::close(const std::string& handle) {
  std::string body;
  putString(body, handle);
  return expectOk(kFxpClose, body, "close");
}

Status SftpClient::posixRename(const std::string& from, const std::string& to) {
  std::string body;
  putString(body, kPosixRename);
  putString(body, from);
  putString(body, to);
  return expectOk(kFxpExtended, body, "rename " + from + " to " + to);
}

Status SftpClient::remove(const std::string& path) {
  std::string body;
  putString(body, path);
  return expectOk(kFxpRemove, body, "remove " + path);
}

Status SftpClient::hardlink(const std::string& from, const std::string& to) {
  std::string body;
  putString(body, kHardlink);
  putString(body, from);
  putString(body, to);
  return expectOk(kFxpExtended, body, "link " + from + " to " + to);
}

}  // namespace certfleet::ssh
