// The pipeline: one YAML file with the stages, the hosts and the environments, loaded,
// interpolated and validated into plain values before anything touches the network.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "certfleet/plugin.hpp"

namespace certfleet {

// The stages a pipeline names, in the order a run uses them.
inline constexpr const char* kStageKeys[] = {"key", "dns", "ca", "deploy", "reload", "verify"};

struct StageConfig {
  std::string key;  // "dns", "reload", ...
  std::string plugin;
  std::string ca_bundle;  // trusted roots for the plugin's HTTPS; empty: the system's
  Settings settings;
  std::string location;
};

struct HostConfig {
  HostTarget target;
  KeyType key_type = KeyType::kEcP256;
  // When set, _acme-challenge.<name> of every name is a CNAME to
  // _acme-challenge.<challenge_alias>, and the records are written there.
  std::string challenge_alias;
  std::map<std::string, Settings> stage_overrides;  // by stage key
  std::string location;
};

struct PropagationConfig {
  // Asked directly, "127.0.0.1:5300". Empty: each record's zone and its authoritative
  // servers are looked up through `resolvers`.
  std::vector<std::string> nameservers;
  std::vector<std::string> resolvers;  // for lookups; empty: those of /etc/resolv.conf
  std::uint16_t nameserver_port = 53;  // where discovered authoritative servers are asked
  std::chrono::milliseconds timeout{std::chrono::seconds(120)};
  std::chrono::milliseconds settle{0};  // waited once more after every record was seen
};

struct Pipeline {
  std::filesystem::path file;
  std::string name;
  std::string environment;                // "" when none was chosen
  std::filesystem::path state_directory;  // already per environment
  std::filesystem::path metrics_file;     // empty: metrics.prom in the state directory
  std::vector<StageConfig> stages;
  std::vector<HostConfig> hosts;
  PropagationConfig propagation;
  std::string caa_identity;  // stages.ca.caa_identity; empty: no CAA pre-check
  std::chrono::milliseconds run_timeout{std::chrono::minutes(30)};
  std::size_t parallel = 8;
  bool check_in_place = true;  // compare each host's files with its current pair

  const StageConfig* stage(const std::string& key) const;
  const HostConfig* host(const std::string& name) const;

  // Stage settings with the host's overrides on top.
  Settings settingsFor(const StageConfig& stage, const HostConfig& host) const;
};

// Loads `file`, applies environment `environment` (when not empty) and resolves
// ${env:NAME}, ${file:PATH} and ${var:NAME}. Every error names file, line and column.
Result<Pipeline> loadPipeline(const std::filesystem::path& file, const std::string& environment);

std::optional<KeyType> parseKeyType(const std::string& text);
std::string keyTypeName(KeyType type);

}  // namespace certfleet
