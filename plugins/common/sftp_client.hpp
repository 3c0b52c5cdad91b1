// common/sftp_client.hpp - the few SFTP version 3 requests certfleet needs, spoken directly
// over an SSH channel.
//
// Why not libssh's own SFTP client: libssh 0.10's sftp_rename sends the plain v3 RENAME,
// which OpenSSH refuses when the target exists, so replacing a file would need
// delete-then-rename and a window with no file at all. This client sends OpenSSH's
// posix-rename@openssh.com instead, which is rename(2) on the server: atomic, and it
// replaces the target. It also creates files with O_EXCL and their final mode from the
// first byte on, and sets the mode on the open handle so that no other file can be
// chmod-ed by a race on the path.
//
// It can also read a file back (bounded, for comparing what a host holds), set a file's
// owner and group on the open handle, and make a hard link with OpenSSH's
// hardlink@openssh.com (link(2) on the server), which is how deploy/sftp keeps the
// previous pair without ever copying a key.
//
// Requests go one at a time (the files are a few kilobytes); every wait for a reply ends
// at the deadline given to open().
//
//   auto sftp = certfleet::ssh::SftpClient::open(*connection, deadline);
//   auto handle = (*sftp)->create("/etc/tls/.key.pem.tmp", 0600);
//   ... write, setMode, fsync, close ...
//   certfleet::Status renamed = (*sftp)->posixRename("/etc/tls/.key.pem.tmp", "/etc/tls/key.pem");
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <libssh/libssh.h>

#include "certfleet/status.hpp"

#include "common/ssh_connection.hpp"

namespace certfleet::ssh {

inline constexpr std::string_view kPosixRename = "posix-rename@openssh.com";
inline constexpr std::string_view kFsync = "fsync@openssh.com";
inline constexpr std::string_view kHardlink = "hardlink@openssh.com";

// The attributes of a file as SFTP version 3 reports them; a field the server left out is
// empty.
struct FileAttributes {
  std::optional<std::uint64_t> size;
  std::optional<std::uint32_t> uid;
  std::optional<std::uint32_t> gid;
  std::optional<std::uint32_t> permissions;  // st_mode: type and permission bits
};

class SftpClient {
 public:
  // Opens the "sftp" subsystem on a new channel of `connection` (which must outlive the
  // client) and negotiates version 3.
  static Result<std::unique_ptr<SftpClient>> open(SshConnection& connection,
                                                  std::chrono::steady_clock::time_point deadline);

  ~SftpClient();
  SftpClient(const SftpClient&) = delete;
  SftpClient& operator=(const SftpClient&) = delete;

  // Whether the server announced extension `name` with exactly `version`.
  bool hasExtension(std::string_view name, std::string_view version) const;

  // Creates a new file for writing (fails if `path` exists) with permissions `mode`, as
  // far as the server's umask lets them through. Returns the file handle.
  Result<std::string> create(const std::string& path, std::uint32_t mode);

  // Writes all of `data` at `offset`, in pieces the server accepts.
  Status write(const std::string& handle, std::uint64_t offset, std::string_view data);

  // Sets exactly `mode` on the open file, whatever the server's umask.
  Status setMode(const std::string& handle, std::uint32_t mode);

  // fsync(2) on the server; needs the fsync@openssh.com extension.
  Status fsync(const std::string& handle);

  // Sets owner and group on the open file (fchown(2) on the server). Only root may give a
  // file to another user; anyone else only to one of their own groups.
  Status setOwner(const std::string& handle, std::uint32_t uid, std::uint32_t gid);

  // Opens an existing file for reading. Returns the file handle; kNotFound when missing.
  Result<std::string> openForReading(const std::string& path);

  // Up to `length` bytes from `offset`; an empty string at the end of the file.
  Result<std::string> read(const std::string& handle, std::uint64_t offset, std::uint32_t length);

  Result<FileAttributes> fstat(const std::string& handle);

  // The whole file at `path`, or kNotFound when there is none. A file longer than
  // `max_bytes` is not read past the bound: kFailedPrecondition. When `attributes` is
  // given, it receives the file's attributes as the open file had them.
  Result<std::string> readFile(const std::string& path,
                               std::size_t max_bytes,
                               FileAttributes* attributes = nullptr);

  Status close(const std::string& handle);

  // rename(2) on the server: atomically replaces `to`. Needs posix-rename@openssh.com.
  Status posixRename(const std::string& from, const std::string& to);

  Status remove(const std::string& path);

  // link(2) on the server: `to` becomes another name of `from`, with its mode and owner.
  // Needs hardlink@openssh.com; fails when `to` exists.
  Status hardlink(const std::string& from, const std::string& to);

 private:
  struct Reply;

  SftpClient(SshConnection& connection,
             ssh_channel channel,
             std::chrono::steady_clock::time_point deadline);

  Status sendPacket(std::uint8_t type, const std::string& body);
  Result<std::string> readPacket();
  Status readExactly(char* buffer, std::size_t size);
  Result<Reply> request(std::uint8_t type, const std::string& body_after_id);
  Result<std::string> openHandle(const std::string& path, std::uint32_t flags, std::uint32_t mode);
  Status expectOk(std::uint8_t type, const std::string& body_after_id, const std::string& what);
  Status lost(const std::string& what) const;

  SshConnection& connection_;
  ssh_channel channel_;
  std::chrono::steady_clock::time_point deadline_;
  std::uint32_t next_id_ = 1;
  std::map<std::string, std::string, std::less<>> extensions_;
};

}  // namespace certfleet::ssh
