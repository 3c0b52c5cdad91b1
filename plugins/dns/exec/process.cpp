#include "process.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

namespace certfleet::exec {
namespace {

using Clock = std::chrono::steady_clock;

// How often the exit is checked where pidfd_open (Linux 5.3) is missing.
constexpr std::chrono::milliseconds kExitPollInterval{20};

// How often the deadline is asked again while nothing happens.
constexpr std::chrono::milliseconds kDeadlinePollInterval{50};

// A program that exits while a background child of its own still holds the output pipes
// gets this long to flush them; then the plugin stops reading instead of waiting for that
// child.
constexpr std::chrono::milliseconds kDrainAfterExit{200};

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  bool open() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

struct Capture {
  std::string data;
  bool truncated = false;

  void append(const char* bytes, std::size_t count) {
    data.append(bytes, count);
    // Trimming only when twice the limit is reached keeps the copying linear.
    if (data.size() > 2 * kMaxCapturedBytes) {
      data.erase(0, data.size() - kMaxCapturedBytes);
      truncated = true;
    }
  }

  void finish() {
    if (data.size() > kMaxCapturedBytes) {
      data.erase(0, data.size() - kMaxCapturedBytes);
      truncated = true;
    }
  }
};

std::string errnoText(int error) {
  char buffer[256];
  return ::strerror_r(error, buffer, sizeof(buffer));
}

// Reads what is ready on `fd` into `capture`; closes `fd` at end of file.
void readReady(Fd& fd, Capture& capture) {
  char buffer[4096];
  ssize_t count = ::read(fd.get(), buffer, sizeof(buffer));
  if (count > 0) {
    capture.append(buffer, static_cast<std::size_t>(count));
    return;
  }
  if (count == 0 || (errno != EINTR && errno != EAGAIN)) {
    fd.reset();
  }
}

void recordExit(int wait_status, ProcessOutcome& outcome) {
  if (WIFEXITED(wait_status)) {
    outcome.exited = true;
    outcome.exit_status = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    outcome.signal = WTERMSIG(wait_status);
  }
}

class SpawnSetup {
 public:
  SpawnSetup() {
    ::posix_spawn_file_actions_init(&actions_);
    ::posix_spawnattr_init(&attributes_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
  ~SpawnSetup() {
    ::posix_spawn_file_actions_destroy(&actions_);
    ::posix_spawnattr_destroy(&attributes_);
  }

  // 0 or an errno value.
  int prepare(int stdout_fd, int stderr_fd) {
    int failed = ::posix_spawn_file_actions_addopen(&actions_, 0, "/dev/null", O_RDONLY, 0);
    if (failed == 0) {
      failed = ::posix_spawn_file_actions_adddup2(&actions_, stdout_fd, 1);
    }
    if (failed == 0) {
      failed = ::posix_spawn_file_actions_adddup2(&actions_, stderr_fd, 2);
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    // Descriptors other libraries opened without O_CLOEXEC (sockets, key files) must not
    // reach the user's program.
    if (failed == 0) {
      failed = ::posix_spawn_file_actions_addclosefrom_np(&actions_, 3);
    }
#endif
    if (failed != 0) {
      return failed;
    }

    // Its own process group lets a timeout kill the program's children too; the signal
    // mask and dispositions the orchestrator runs with (SIGPIPE ignored, for one) are no
    // business of the program.
    sigset_t empty;
    sigset_t defaults;
    sigemptyset(&empty);
    sigfillset(&defaults);
    sigdelset(&defaults, SIGKILL);
    sigdelset(&defaults, SIGSTOP);
    failed = ::posix_spawnattr_setflags(
        &attributes_, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (failed == 0) {
      failed = ::posix_spawnattr_setpgroup(&attributes_, 0);
    }
    if (failed == 0) {
      failed = ::posix_spawnattr_setsigmask(&attributes_, &empty);
    }
    if (failed == 0) {
      failed = ::posix_spawnattr_setsigdefault(&attributes_, &defaults);
    }
    return failed;
  }

  const posix_spawn_file_actions_t* actions() const {
    return &actions_;
  }
  const posix_spawnattr_t* attributes() const {
    return &attributes_;
  }

 private:
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attributes_;
};

std::vector<char*> pointers(const std::vector<std::string>& strings) {
  std::vector<char*> result;
  result.reserve(strings.size() + 1);
  for (const std::string& text : strings) {
    result.push_back(const_cast<char*>(text.c_str()));
  }
  result.push_back(nullptr);
  return result;
}

}  // namespace

Result<ProcessOutcome> runProcess(const std::vector<std::string>& argv,
                                  const std::vector<std::string>& environment,
                                  const std::function<Clock::time_point()>& deadline) {
  if (argv.empty()) {
    return invalidArgument("no program to run");
  }
  const std::string& program = argv.front();

  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    return unavailable("cannot run " + program + ": pipe: " + errnoText(errno));
  }
  Fd out_read(out_pipe[0]);
  Fd out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    return unavailable("cannot run " + program + ": pipe: " + errnoText(errno));
  }
  Fd err_read(err_pipe[0]);
  Fd err_write(err_pipe[1]);

  pid_t pid = 0;
  {
    SpawnSetup setup;
    int prepared = setup.prepare(out_write.get(), err_write.get());
    if (prepared != 0) {
      return unavailable("cannot run " + program + ": " + errnoText(prepared));
    }
    std::vector<char*> args = pointers(argv);
    std::vector<char*> env = pointers(environment);
    int spawned = ::posix_spawn(&pid, program.c_str(), setup.actions(), setup.attributes(),
                                args.data(), env.data());
    if (spawned != 0) {
      return failedPrecondition("cannot run " + program + ": " + errnoText(spawned));
    }
  }
  out_write.reset();
  err_write.reset();

  Fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  ProcessOutcome outcome;
  Capture out;
  Capture err;
  bool reaped = false;
  Clock::time_point stop_reading = Clock::time_point::max();

  auto reap = [&](int options) {
    int wait_status = 0;
    pid_t done = 0;
    do {
      done = ::waitpid(pid, &wait_status, options);
    } while (done < 0 && errno == EINTR);
    if (done == pid) {
      recordExit(wait_status, outcome);
      reaped = true;
      pidfd.reset();
      stop_reading = Clock::now() + kDrainAfterExit;
    } else if (done < 0) {
      // Nothing left to wait for (SIGCHLD ignored by the host process): the status is lost.
      reaped = true;
      pidfd.reset();
      stop_reading = Clock::now() + kDrainAfterExit;
    }
  };

  while (!reaped || out_read.open() || err_read.open()) {
    Clock::time_point now = Clock::now();
    Clock::time_point kill_at = deadline();
    if (!reaped && now >= kill_at) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      reap(0);
      outcome.timed_out = true;
      break;
    }
    if (reaped && now >= stop_reading) {
      break;
    }

    Clock::time_point until = reaped ? stop_reading : kill_at;
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(until - now) +
                std::chrono::milliseconds(1);
    if (!reaped) {
      wait = std::min(wait, pidfd.open() ? kDeadlinePollInterval : kExitPollInterval);
    }

    pollfd fds[3];
    nfds_t count = 0;
    int out_index = -1;
    int err_index = -1;
    if (out_read.open()) {
      out_index = static_cast<int>(count);
      fds[count++] = pollfd{out_read.get(), POLLIN, 0};
    }
    if (err_read.open()) {
      err_index = static_cast<int>(count);
      fds[count++] = pollfd{err_read.get(), POLLIN, 0};
    }
    if (pidfd.open()) {
      fds[count++] = pollfd{pidfd.get(), POLLIN, 0};
    }
    int ready = ::poll(fds, count, static_cast<int>(std::max<long long>(wait.count(), 0)));
    if (ready < 0 && errno != EINTR) {
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      if (!reaped) {
        reap(0);
      }
      return unavailable("running " + program + ": poll: " + errnoText(errno));
    }
    if (ready > 0) {
      if (out_index >= 0 && fds[out_index].revents != 0) {
        readReady(out_read, out);
      }
      if (err_index >= 0 && fds[err_index].revents != 0) {
        readReady(err_read, err);
      }
    }
    if (!reaped) {
      reap(WNOHANG);
    }
  }

  out.finish();
  err.finish();
  outcome.stdout_tail = std::move(out.data);
  outcome.stdout_truncated = out.truncated;
  outcome.stderr_tail = std::move(err.data);
  outcome.stderr_truncated = err.truncated;
  return outcome;
}

}  // namespace certfleet::exec
