// One logger for the whole process. Every record carries host, stage and plugin where
// they apply, and any registered secret value is blanked out before it is written.
#pragma once

#include <string>
#include <string_view>

#include "certfleet/plugin.hpp"

namespace certfleet::logging {

void setLevel(LogLevel level);
LogLevel level();

// Secrets resolved from the pipeline are registered here so that no log line can carry
// them, whatever code formatted the message.
void registerSecret(const std::string& value);
std::string redact(std::string_view text);

// The host the current thread works for; set by the runner around per-host calls.
class HostScope {
 public:
  explicit HostScope(std::string host);
  ~HostScope();
  HostScope(const HostScope&) = delete;
  HostScope& operator=(const HostScope&) = delete;

 private:
  std::string previous_;
};
const std::string& currentHost();

// On a terminal, one status line stays below the log records and is redrawn in place;
// elsewhere it is ignored, so piped output stays plain timestamped lines.
bool statusLineEnabled();
void setStatusLine(const std::string& text);

void write(LogLevel level,
           std::string_view stage,
           std::string_view plugin,
           std::string_view message);

}  // namespace certfleet::logging
