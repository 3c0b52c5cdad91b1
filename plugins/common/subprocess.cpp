#include "common/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include <sys/wait.h>

namespace certfleet::process {
namespace {

using Clock = std::chrono::steady_clock;

// After the program exits, how long a descendant that kept its output open may delay us
// before it is killed with the rest of the group.
constexpr std::chrono::milliseconds kDrainGrace{500};

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

std::string errnoText(int error) {
  std::string text = std::strerror(error);
  if (!text.empty()) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

std::vector<char*> pointers(const std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (const std::string& value : strings) {
    result.push_back(const_cast<char*>(value.c_str()));
  }
  result.push_back(nullptr);
  return result;
}

// Frees the spawn attributes and file actions however run() leaves.
struct SpawnSetup {
  posix_spawn_file_actions_t actions{};
  posix_spawnattr_t attributes{};
  bool actions_ready = false;
  bool attributes_ready = false;
  ~SpawnSetup() {
    if (actions_ready) {
      posix_spawn_file_actions_destroy(&actions);
    }
    if (attributes_ready) {
      posix_spawnattr_destroy(&attributes);
    }
  }
};

std::string formatDuration(std::chrono::milliseconds duration) {
  if (duration.count() % 1000 == 0) {
    return std::to_string(duration.count() / 1000) + "s";
  }
  return std::to_string(duration.count()) + "ms";
}

void appendHead(std::string& head, bool& truncated, const char* data, std::size_t size) {
  std::size_t room = kMaxCapturedBytes - std::min(head.size(), kMaxCapturedBytes);
  head.append(data, std::min(size, room));
  truncated = truncated || size > room;
}

void appendTail(std::string& tail, const char* data, std::size_t size) {
  tail.append(data, size);
  if (tail.size() > kMaxCapturedBytes) {
    tail.erase(0, tail.size() - kMaxCapturedBytes);
  }
}

}  // namespace

Result<ProcessResult> run(const std::vector<std::string>& argv,
                          const std::vector<std::string>& environment,
                          std::chrono::milliseconds timeout) {
  if (argv.empty() || argv.front().empty() || argv.front().front() != '/') {
    return invalidArgument("run: the program must be an absolute path");
  }
  Clock::time_point deadline = Clock::now() + timeout;

  // O_CLOEXEC: a program another thread starts meanwhile must not inherit our pipe ends,
  // or our reads would not see the end of the output until that program exits too.
  std::array<int, 2> out_pipe{-1, -1};
  std::array<int, 2> err_pipe{-1, -1};
  if (::pipe2(out_pipe.data(), O_CLOEXEC) != 0) {
    return internalError("run " + argv.front() + ": pipe: " + errnoText(errno));
  }
  Fd out_read(out_pipe[0]);
  Fd out_write(out_pipe[1]);
  if (::pipe2(err_pipe.data(), O_CLOEXEC) != 0) {
    return internalError("run " + argv.front() + ": pipe: " + errnoText(errno));
  }
  Fd err_read(err_pipe[0]);
  Fd err_write(err_pipe[1]);

  SpawnSetup setup;
  if (posix_spawn_file_actions_init(&setup.actions) != 0) {
    return internalError("run " + argv.front() + ": cannot prepare the file actions");
  }
  setup.actions_ready = true;
  if (posix_spawnattr_init(&setup.attributes) != 0) {
    return internalError("run " + argv.front() + ": cannot prepare the spawn attributes");
  }
  setup.attributes_ready = true;

  sigset_t no_signals;
  sigset_t all_signals;
  sigemptyset(&no_signals);
  sigfillset(&all_signals);
  bool prepared =
      posix_spawn_file_actions_addopen(&setup.actions, 0, "/dev/null", O_RDONLY, 0) == 0 &&
      posix_spawn_file_actions_adddup2(&setup.actions, out_write.get(), 1) == 0 &&
      posix_spawn_file_actions_adddup2(&setup.actions, err_write.get(), 2) == 0 &&
      // Nothing else of ours (sockets, the state database) leaks into the program.
      posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3) == 0 &&
      posix_spawnattr_setpgroup(&setup.attributes, 0) == 0 &&
      posix_spawnattr_setsigmask(&setup.attributes, &no_signals) == 0 &&
      posix_spawnattr_setsigdefault(&setup.attributes, &all_signals) == 0 &&
      posix_spawnattr_setflags(&setup.attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                      POSIX_SPAWN_SETSIGDEF) == 0;
  if (!prepared) {
    return internalError("run " + argv.front() + ": cannot prepare the spawn attributes");
  }

  std::vector<char*> args = pointers(argv);
  std::vector<char*> env = pointers(environment);
  pid_t pid = -1;
  int spawned = ::posix_spawn(&pid, argv.front().c_str(), &setup.actions, &setup.attributes,
                              args.data(), env.data());
  if (spawned != 0) {
    return invalidArgument("run " + argv.front() + ": " + errnoText(spawned));
  }
  out_write.reset();
  err_write.reset();

  ProcessResult result;
  bool exited = false;
  int wait_status = 0;
  bool timed_out = false;
  int poll_failed = 0;
  Clock::time_point drain_until = Clock::time_point::max();
  std::array<char, 8192> buffer{};
  while (out_read.get() >= 0 || err_read.get() >= 0) {
    Clock::time_point now = Clock::now();
    if (now >= deadline) {
      timed_out = true;
      break;
    }
    if (now >= drain_until) {
      break;
    }
    std::array<pollfd, 2> fds{{{out_read.get(), POLLIN, 0}, {err_read.get(), POLLIN, 0}}};
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min(deadline, drain_until) - now);
    int ready = ::poll(fds.data(), fds.size(),
                       static_cast<int>(std::clamp<std::int64_t>(wait.count(), 1, 100)));
    if (ready < 0 && errno != EINTR) {
      poll_failed = errno;
      break;
    }
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
        continue;
      }
      ssize_t size = ::read(fds[i].fd, buffer.data(), buffer.size());
      if (size < 0 && (errno == EINTR || errno == EAGAIN)) {
        continue;
      }
      if (size <= 0) {
        (i == 0 ? out_read : err_read).reset();
        continue;
      }
      if (i == 0) {
        appendHead(result.stdout_head, result.stdout_truncated, buffer.data(),
                   static_cast<std::size_t>(size));
      } else {
        appendTail(result.stderr_tail, buffer.data(), static_cast<std::size_t>(size));
      }
    }
    // WNOWAIT leaves the program a zombie until the end, so its pid (the group's id)
    // cannot be reused by an unrelated process before the kill below.
    siginfo_t info{};
    if (!exited &&
        ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == pid) {
      exited = true;
      drain_until = Clock::now() + kDrainGrace;
    }
  }

  // Whatever is left of the group (the program itself on a timeout, a descendant that
  // outlived it otherwise) goes now, so nothing keeps running after we return.
  ::kill(-pid, SIGKILL);
  while (::waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
  }
  if (poll_failed != 0) {
    return internalError("run " + argv.front() + ": poll: " + errnoText(poll_failed));
  }
  if (timed_out) {
    return deadlineExceeded("run " + argv.front() + ": did not end within " +
                            formatDuration(timeout) + "; killed it");
  }

  if (WIFEXITED(wait_status)) {
    result.exit_status = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    result.signal = WTERMSIG(wait_status);
  }
  return result;
}

}  // namespace certfleet::process
