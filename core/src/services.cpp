#include "services.hpp"

#include <system_error>

#include "interrupt.hpp"
#include <sys/stat.h>

namespace certfleet {

CoreServices::CoreServices(std::string stage,
                           std::string plugin,
                           std::string ca_bundle,
                           std::filesystem::path state_directory,
                           std::chrono::steady_clock::time_point deadline)
    : stage_(std::move(stage)),
      plugin_(std::move(plugin)),
      http_(std::move(ca_bundle)),
      state_directory_(std::move(state_directory)),
      deadline_(deadline) {}

void CoreServices::log(LogLevel level, std::string_view message) {
  logging::write(level, stage_, plugin_, message);
}

Result<HttpResponse> CoreServices::http(const HttpRequest& request) {
  return http_.send(request);
}

std::chrono::steady_clock::time_point CoreServices::deadline() {
  // Issuance polls stop at once; a deploy, reload or verify that has begun runs to its end
  // (bounded by its own timeout), so Ctrl-C never leaves a host between two pairs.
  bool stops_at_once = stage_ == "ca" || stage_ == "dns";
  return stops_at_once && interrupted() ? std::chrono::steady_clock::now() : deadline_;
}

std::string CoreServices::stateDirectory() {
  std::error_code error;
  std::filesystem::create_directories(state_directory_, error);
  // The folder may hold an account key: only the orchestrator's user may enter it.
  ::chmod(state_directory_.c_str(), 0700);
  return state_directory_.string();
}

}  // namespace certfleet
