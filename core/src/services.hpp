// The Services the core lends each loaded plugin.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "certfleet/plugin.hpp"

#include "http_client.hpp"
#include "logging.hpp"

namespace certfleet {

class CoreServices final : public Services {
 public:
  // `stage` and `plugin` label every log record; `state_directory` is created 0700 on
  // first use.
  CoreServices(std::string stage,
               std::string plugin,
               std::string ca_bundle,
               std::filesystem::path state_directory,
               std::chrono::steady_clock::time_point deadline);

  void log(LogLevel level, std::string_view message) override;
  Result<HttpResponse> http(const HttpRequest& request) override;
  std::string stateDirectory() override;
  // Reached at once for the ca and dns stages when the run is interrupted.
  std::chrono::steady_clock::time_point deadline() override;

 private:
  std::string stage_;
  std::string plugin_;
  HttpClient http_;
  std::filesystem::path state_directory_;
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace certfleet
