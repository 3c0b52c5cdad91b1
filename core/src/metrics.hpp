// The Prometheus textfile (node_exporter's textfile collector format) written after
// every run, so that expiry and failures page someone before a certificate lapses.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "certfleet/status.hpp"

#include "state_store.hpp"

namespace certfleet {

// Renders one gauge per host for expiry, renewal moment, last result and last attempt.
std::string renderMetrics(const std::string& pipeline,
                          const std::string& environment,
                          const std::vector<HostRecord>& records);

// Writes the text atomically, so the collector never reads half a file.
Status writeMetrics(const std::filesystem::path& file, const std::string& text);

}  // namespace certfleet
