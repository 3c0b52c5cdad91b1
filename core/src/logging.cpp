#include "logging.hpp"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <vector>

namespace certfleet::logging {
namespace {

std::atomic<LogLevel> g_level{LogLevel::kInfo};
std::mutex g_mutex;
std::vector<std::string>& secrets() {
  static std::vector<std::string> values;
  return values;
}
thread_local std::string t_host;
std::string g_status_line;
const bool g_terminal = ::isatty(STDERR_FILENO) == 1 && std::getenv("TERM") != nullptr &&
                        std::string_view(std::getenv("TERM")) != "dumb";

// Moves to the start of the line and clears it.
constexpr const char* kClearLine = "\r\033[K";

const char* levelName(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      return "trace";
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

std::string timestamp() {
  auto now = std::chrono::system_clock::now();
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[64];
  std::snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<int>(millis));
  return text;
}

}  // namespace

void setLevel(LogLevel level) {
  g_level = level;
}
LogLevel level() {
  return g_level;
}

void registerSecret(const std::string& value) {
  // Very short values would blank out ordinary words; such secrets are refused earlier.
  if (value.size() < 4) {
    return;
  }
  std::lock_guard lock(g_mutex);
  secrets().push_back(value);
}

std::string redact(std::string_view text) {
  std::string result(text);
  std::lock_guard lock(g_mutex);
  for (const std::string& secret : secrets()) {
    for (std::size_t at = result.find(secret); at != std::string::npos;
         at = result.find(secret, at)) {
      result.replace(at, secret.size(), "[redacted]");
    }
  }
  return result;
}

HostScope::HostScope(std::string host) : previous_(std::move(t_host)) {
  t_host = std::move(host);
}
HostScope::~HostScope() {
  t_host = std::move(previous_);
}
const std::string& currentHost() {
  return t_host;
}

bool statusLineEnabled() {
  return g_terminal;
}

void setStatusLine(const std::string& text) {
  if (!g_terminal) {
    return;
  }
  std::lock_guard lock(g_mutex);
  g_status_line = text;
  std::string out = kClearLine + text;
  std::fwrite(out.data(), 1, out.size(), stderr);
  std::fflush(stderr);
}

void write(LogLevel record_level,
           std::string_view stage,
           std::string_view plugin,
           std::string_view message) {
  if (record_level < g_level.load()) {
    return;
  }
  std::string line = timestamp() + " " + levelName(record_level);
  if (!t_host.empty()) {
    line += " host=" + t_host;
  }
  if (!stage.empty()) {
    line += " stage=";
    line += stage;
  }
  if (!plugin.empty()) {
    line += " plugin=";
    line += plugin;
  }
  line += " ";
  line += message;
  line = redact(line);
  line += '\n';
  std::lock_guard lock(g_mutex);
  if (g_terminal && !g_status_line.empty()) {
    line = kClearLine + line + g_status_line;
  }
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace certfleet::logging
