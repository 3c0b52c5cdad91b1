#include "interrupt.hpp"

#include <atomic>
#include <csignal>
#include <cstring>

namespace certfleet {
namespace {

std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free, "the signal handler needs a lock-free flag");

extern "C" void onInterrupt(int /*signal*/) {
  g_interrupted.store(true);
}

}  // namespace

void installInterruptHandlers() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = onInterrupt;
  // A second Ctrl-C ends the process at once, as operators expect when the first one
  // waits for a deploy to finish.
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool interrupted() {
  return g_interrupted.load();
}

}  // namespace certfleet
