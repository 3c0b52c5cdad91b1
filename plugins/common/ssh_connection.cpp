#include "common/ssh_connection.hpp"

#include <algorithm>
#include <string_view>
#include <utility>

#include <libssh/callbacks.h>

namespace certfleet::ssh {
namespace {

using Clock = std::chrono::steady_clock;

void appendTail(std::string& tail, const char* data, std::size_t size) {
  if (size >= kOutputTailBytes) {
    tail.assign(data + size - kOutputTailBytes, kOutputTailBytes);
    return;
  }
  tail.append(data, size);
  if (tail.size() > kOutputTailBytes) {
    tail.erase(0, tail.size() - kOutputTailBytes);
  }
}

// Refuses any passphrase prompt: the orchestrator runs unattended, and libssh would
// otherwise fall back to OpenSSL's terminal prompt for an encrypted PEM key.
int refusePassphrase(const char* /*prompt*/,
                     char* /*buf*/,
                     size_t /*len*/,
                     int /*echo*/,
                     int /*verify*/,
                     void* /*userdata*/) {
  return -1;
}

// "ssh-ed25519 SHA256:abc..." for the key the server presented in this session.
std::string presentedKey(ssh_session session) {
  ssh_key key = nullptr;
  if (ssh_get_server_publickey(session, &key) != SSH_OK || key == nullptr) {
    return "an unreadable key";
  }
  std::string text = ssh_key_type_to_char(ssh_key_type(key));
  unsigned char* hash = nullptr;
  size_t hash_size = 0;
  if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hash_size) == 0) {
    char* fingerprint = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hash_size);
    if (fingerprint != nullptr) {
      text += " ";
      text += fingerprint;
      ssh_string_free_char(fingerprint);
    }
    ssh_clean_pubkey_hash(&hash);
  }
  ssh_key_free(key);
  return text;
}

struct CommandState {
  CommandResult result;
  bool eof = false;
  bool closed = false;
  bool exited = false;
};

int onData(ssh_session /*session*/,
           ssh_channel /*channel*/,
           void* data,
           uint32_t size,
           int is_stderr,
           void* userdata) {
  auto* state = static_cast<CommandState*>(userdata);
  std::string& tail = is_stderr != 0 ? state->result.stderr_tail : state->result.stdout_tail;
  appendTail(tail, static_cast<const char*>(data), size);
  return static_cast<int>(size);
}

void onEof(ssh_session /*session*/, ssh_channel /*channel*/, void* userdata) {
  static_cast<CommandState*>(userdata)->eof = true;
}

void onClose(ssh_session /*session*/, ssh_channel /*channel*/, void* userdata) {
  static_cast<CommandState*>(userdata)->closed = true;
}

void onExitStatus(ssh_session /*session*/, ssh_channel /*channel*/, int status, void* userdata) {
  auto* state = static_cast<CommandState*>(userdata);
  state->result.exit_status = status;
  state->exited = true;
}

void onExitSignal(ssh_session /*session*/,
                  ssh_channel /*channel*/,
                  const char* signal,
                  int /*core*/,
                  const char* /*errmsg*/,
                  const char* /*lang*/,
                  void* userdata) {
  auto* state = static_cast<CommandState*>(userdata);
  state->result.exit_status = -1;
  state->result.exit_signal = signal != nullptr ? signal : "unknown";
  state->exited = true;
}

struct ChannelCloser {
  void operator()(ssh_channel channel) const {
    // libssh keeps a freed channel until the server confirms the close, and would call
    // our (by then gone) callbacks for whatever still arrives on it.
    ssh_remove_channel_callbacks(channel, callbacks);
    ssh_channel_close(channel);
    ssh_channel_free(channel);
  }
  ssh_channel_callbacks callbacks = nullptr;
};
using ChannelPtr = std::unique_ptr<ssh_channel_struct, ChannelCloser>;

struct EventFreer {
  void operator()(ssh_event event) const { ssh_event_free(event); }
};
using EventPtr = std::unique_ptr<ssh_event_struct, EventFreer>;

std::string formatSeconds(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) {
    return std::to_string(duration.count() / 1000) + "s";
  }
  return std::to_string(duration.count()) + "ms";
}

}  // namespace

SshConnection::SshConnection(ssh_session session, std::string endpoint)
    : session_(session), endpoint_(std::move(endpoint)) {}

SshConnection::~SshConnection() {
  if (ssh_is_connected(session_) != 0) {
    ssh_disconnect(session_);
  }
  ssh_free(session_);
}

Status SshConnection::failure(StatusCode code, const std::string& what) const {
  std::string message = "ssh " + endpoint_ + ": " + what;
  std::string detail = ssh_get_error(session_);
  if (!detail.empty()) {
    message += ": " + lowerFirst(detail);
  }
  return {code, message};
}

Result<std::unique_ptr<SshConnection>> SshConnection::open(const HostTarget& host,
                                                           const SshOptions& options) {
  std::string endpoint = formatEndpoint(host.address, host.port);
  if (host.address.empty()) {
    return invalidArgument("ssh: host " + host.name + " has no address");
  }
  if (host.user.empty()) {
    return invalidArgument("ssh " + endpoint + ": host " + host.name + " has no user to log in as");
  }

  ssh_session session = ssh_new();
  if (session == nullptr) {
    return internalError("ssh " + endpoint + ": cannot allocate a session");
  }
  std::unique_ptr<SshConnection> connection(new SshConnection(session, endpoint));

  // Nothing of the orchestrator user's SSH set-up may decide where we connect or which
  // keys we trust: no ssh_config, no ~/.ssh/known_hosts, no global known_hosts.
  unsigned int port = host.port;
  int process_config = 0;
  long seconds = static_cast<long>(options.connect_timeout.count() / 1000);
  long microseconds = static_cast<long>(options.connect_timeout.count() % 1000) * 1000;
  bool options_set =
      ssh_options_set(session, SSH_OPTIONS_HOST, host.address.c_str()) == 0 &&
      ssh_options_set(session, SSH_OPTIONS_PORT, &port) == 0 &&
      ssh_options_set(session, SSH_OPTIONS_USER, host.user.c_str()) == 0 &&
      ssh_options_set(session, SSH_OPTIONS_PROCESS_CONFIG, &process_config) == 0 &&
      ssh_options_set(session, SSH_OPTIONS_KNOWNHOSTS, options.known_hosts.c_str()) == 0 &&
      ssh_options_set(session, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null") == 0 &&
      ssh_options_set(session, SSH_OPTIONS_TIMEOUT, &seconds) == 0 &&
      ssh_options_set(session, SSH_OPTIONS_TIMEOUT_USEC, &microseconds) == 0;
  if (!options_set) {
    return connection->failure(StatusCode::kInvalidArgument, "set options");
  }

  if (ssh_connect(session) != SSH_OK) {
    return connection->failure(StatusCode::kUnavailable, "connect");
  }

  if (Status known = connection->verifyHostKey(options.known_hosts); !known.ok()) {
    return known;
  }

  if (Status authenticated = connection->authenticate(options.identity_file, host.user);
      !authenticated.ok()) {
    return authenticated;
  }
  return connection;
}

Status SshConnection::verifyHostKey(const std::string& known_hosts) {
  enum ssh_known_hosts_e state = ssh_session_is_known_server(session_);
  switch (state) {
    case SSH_KNOWN_HOSTS_OK:
      return {};
    case SSH_KNOWN_HOSTS_CHANGED:
    case SSH_KNOWN_HOSTS_OTHER:
      // The one refusal that may mean an attack: say so plainly, with the evidence.
      return failedPrecondition(
          "ssh " + endpoint_ + ": host key changed: the host presents " + presentedKey(session_) +
          ", not the key " + known_hosts +
          " holds for it; someone may be intercepting the connection, or the host was "
          "reinstalled; refusing to connect until the key is checked out of band and "
          "known_hosts corrected");
    case SSH_KNOWN_HOSTS_UNKNOWN:
    case SSH_KNOWN_HOSTS_NOT_FOUND:
      return failedPrecondition("ssh " + endpoint_ + ": unknown host key: " + known_hosts +
                                " has no entry for " + endpoint_ + " (it presents " +
                                presentedKey(session_) +
                                "); add the key to known_hosts after checking it out of band");
    case SSH_KNOWN_HOSTS_ERROR:
      break;
  }
  return failure(StatusCode::kInternal, "check host key against " + known_hosts);
}

Status SshConnection::authenticate(const std::string& identity_file, const std::string& user) {
  ssh_key key = nullptr;
  if (ssh_pki_import_privkey_file(identity_file.c_str(), nullptr, &refusePassphrase, nullptr,
                                  &key) != SSH_OK) {
    return invalidArgument("ssh " + endpoint_ + ": cannot load identity_file " + identity_file +
                           ": not a private key, or protected by a passphrase");
  }
  int rc = ssh_userauth_publickey(session_, nullptr, key);
  ssh_key_free(key);
  switch (rc) {
    case SSH_AUTH_SUCCESS:
      return {};
    case SSH_AUTH_DENIED:
    case SSH_AUTH_PARTIAL:
      return permissionDenied("ssh " + endpoint_ + ": login as " + user + " refused the key of " +
                              identity_file);
    default:
      return failure(StatusCode::kUnavailable, "authenticate");
  }
}

Result<CommandResult> SshConnection::run(const std::string& command,
                                         std::chrono::milliseconds timeout) {
  Clock::time_point deadline = Clock::now() + timeout;

  // Declared before the channel so that they outlive it: libssh may still call back while
  // the channel closes.
  CommandState state;
  ssh_channel_callbacks_struct callbacks{};
  callbacks.userdata = &state;
  callbacks.channel_data_function = &onData;
  callbacks.channel_eof_function = &onEof;
  callbacks.channel_close_function = &onClose;
  callbacks.channel_exit_status_function = &onExitStatus;
  callbacks.channel_exit_signal_function = &onExitSignal;
  ssh_callbacks_init(&callbacks);
  ChannelPtr channel(ssh_channel_new(session_), ChannelCloser{&callbacks});
  if (channel == nullptr) {
    return failure(StatusCode::kInternal, "open channel");
  }
  if (ssh_set_channel_callbacks(channel.get(), &callbacks) != SSH_OK) {
    return failure(StatusCode::kInternal, "set channel callbacks");
  }

  if (ssh_channel_open_session(channel.get()) != SSH_OK) {
    return failure(StatusCode::kUnavailable, "open session channel");
  }
  if (ssh_channel_request_exec(channel.get(), command.c_str()) != SSH_OK) {
    return failure(StatusCode::kUnavailable, "start command");
  }

  EventPtr event(ssh_event_new());
  if (event == nullptr || ssh_event_add_session(event.get(), session_) != SSH_OK) {
    return failure(StatusCode::kInternal, "watch session");
  }

  // OpenSSH sends exit-status, EOF and close in an order of its choosing; the command is
  // over when the channel closes, or when both its exit and the end of its output arrived.
  while (!state.closed && !(state.eof && state.exited)) {
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (remaining.count() <= 0) {
      ssh_event_remove_session(event.get(), session_);
      ssh_channel_request_send_signal(channel.get(), "KILL");
      return deadlineExceeded("ssh " + endpoint_ + ": command did not end within " +
                              formatSeconds(timeout) + "; sent it SIGKILL");
    }
    int wait = static_cast<int>(std::min<std::int64_t>(remaining.count(), 1000));
    if (ssh_event_dopoll(event.get(), wait) == SSH_ERROR || ssh_is_connected(session_) == 0) {
      ssh_event_remove_session(event.get(), session_);
      return failure(StatusCode::kUnavailable, "connection lost while the command ran");
    }
  }
  ssh_event_remove_session(event.get(), session_);

  if (!state.exited) {
    return unavailable("ssh " + endpoint_ + ": command channel closed without an exit status");
  }
  return std::move(state.result);
}

}  // namespace certfleet::ssh
