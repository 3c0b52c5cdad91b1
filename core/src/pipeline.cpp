#include "pipeline.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "dns_lookup.hpp"
#include "logging.hpp"

namespace certfleet {
namespace fs = std::filesystem;

namespace {

const std::set<std::string> kTopLevelKeys = {
    "version",      "name",      "state_dir", "stages",       "hosts",          "propagation",
    "environments", "variables", "run",       "metrics_file", "challenge_alias"};
const std::set<std::string> kStageBlockKeys = {"plugin", "ca_bundle", "settings", "caa_identity"};
const std::set<std::string> kHostKeys = {"address",  "port",   "user",           "names",
                                         "key_type", "stages", "challenge_alias"};
const std::set<std::string> kPropagationKeys = {"nameservers", "resolvers", "nameserver_port",
                                                "timeout", "settle"};

// Builds a pipeline from the (environment-merged) YAML tree. Collects nothing: the first
// error ends the load, since later errors are often caused by the first one.
class PipelineReader {
 public:
  explicit PipelineReader(fs::path file) : file_(std::move(file)) {}

  std::string where(const YAML::Node& node) const {
    YAML::Mark mark = node.Mark();
    if (mark.is_null() || mark.line < 0) {
      return file_.string();
    }
    return file_.string() + ":" + std::to_string(mark.line + 1) + ":" +
           std::to_string(mark.column + 1);
  }

  Status error(const YAML::Node& node, const std::string& message) const {
    return invalidArgument(where(node) + ": " + message);
  }

  void setVariables(std::map<std::string, std::string> variables) {
    variables_ = std::move(variables);
  }

  struct Interpolated {
    std::string value;
    bool from_secret_source = false;
  };

  // ${env:NAME}, ${file:PATH} (relative to the pipeline's folder) and ${var:NAME}. A
  // value that is exactly one env or file reference counts as coming from a secret source.
  Result<Interpolated> interpolate(const YAML::Node& node) const {
    static const std::regex kReference(R"(\$\{(env|file|var):([^}]+)\})");
    const std::string& text = node.Scalar();
    Interpolated result;
    std::smatch match;
    std::string rest = text;
    bool whole = std::regex_match(text, match, kReference) && match[1] != "var";
    std::string match_kind = whole ? std::string(match[1]) : "";
    std::string match_name = whole ? std::string(match[2]) : "";
    while (std::regex_search(rest, match, kReference)) {
      result.value += match.prefix();
      std::string kind = match[1];
      std::string name = match[2];
      if (kind == "env") {
        const char* value = std::getenv(name.c_str());
        if (value == nullptr) {
          return error(node, "environment variable " + name + " is not set");
        }
        result.value += value;
      } else if (kind == "file") {
        fs::path path = fs::path(name).is_absolute() ? fs::path(name) : file_.parent_path() / name;
        std::ifstream in(path, std::ios::binary);
        if (!in) {
          return error(node, "cannot read " + path.string());
        }
        std::stringstream contents;
        contents << in.rdbuf();
        std::string value = contents.str();
        // Files written by editors or `echo` end with a newline that is not part of a secret.
        while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) {
          value.pop_back();
        }
        result.value += value;
      } else {
        auto found = variables_.find(name);
        if (found == variables_.end()) {
          return error(node, "variable " + name + " is not defined under 'variables'");
        }
        result.value += found->second;
      }
      rest = match.suffix();
    }
    result.value += rest;
    result.from_secret_source = whole;
    if (whole && mayHoldSecret(match_kind, match_name)) {
      logging::registerSecret(result.value);
    }
    return result;
  }

  Result<std::string> scalar(const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar()) {
      return error(node, what + " must be a single value");
    }
    Result<Interpolated> value = interpolate(node);
    if (!value.ok()) {
      return value.status();
    }
    return value->value;
  }

  Status flatten(const YAML::Node& node, const std::string& key, Settings& settings) const {
    if (node.IsMap()) {
      for (const auto& item : node) {
        std::string child = item.first.as<std::string>();
        Status status = flatten(item.second, key.empty() ? child : key + "." + child, settings);
        if (!status.ok()) {
          return status;
        }
      }
      return {};
    }
    if (node.IsSequence()) {
      for (std::size_t i = 0; i < node.size(); ++i) {
        Status status = flatten(node[i], key + "." + std::to_string(i), settings);
        if (!status.ok()) {
          return status;
        }
      }
      return {};
    }
    if (node.IsNull()) {
      return {};
    }
    Result<Interpolated> value = interpolate(node);
    if (!value.ok()) {
      return value.status();
    }
    settings.set(key, {value->value, where(node), value->from_secret_source});
    return {};
  }

  Status checkKeys(const YAML::Node& map,
                   const std::set<std::string>& allowed,
                   const std::string& what) const {
    for (const auto& item : map) {
      std::string key = item.first.as<std::string>();
      if (allowed.count(key) == 0) {
        return error(item.first, "unknown key '" + key + "' in " + what);
      }
    }
    return {};
  }

 private:
  // Which whole values get blanked out of every log line: anything read from a file, and
  // variables whose name says secret. Ports, user names and paths come through ${env:...}
  // too, and blanking those would make the logs useless.
  static bool mayHoldSecret(const std::string& kind, const std::string& name) {
    if (kind == "file") {
      return true;
    }
    static const std::regex kSecretName("(SECRET|TOKEN|PASSWORD|PASS|KEY|AUTH|CREDENTIAL)",
                                        std::regex::icase);
    return std::regex_search(name, kSecretName);
  }

  fs::path file_;
  std::map<std::string, std::string> variables_;
};

// The environment's tree laid over the base: maps merge key by key, anything else is
// replaced. Children are shared, not copied, so every node keeps its line and column.
YAML::Node overlay(const YAML::Node& base, const YAML::Node& over) {
  if (!base.IsMap() || !over.IsMap()) {
    return over;
  }
  YAML::Node merged(YAML::NodeType::Map);
  for (const auto& item : base) {
    merged[item.first.as<std::string>()] = item.second;
  }
  for (const auto& item : over) {
    std::string key = item.first.as<std::string>();
    const YAML::Node& existing = base[key];
    merged[key] = existing ? overlay(existing, item.second) : item.second;
  }
  return merged;
}

bool validHostName(const std::string& name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  }) && name.front() != '.';
}

bool validDnsName(const std::string& name) {
  static const std::regex kName(
      R"(^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$)");
  return name.size() <= 253 && std::regex_match(name, kName);
}

// A plain DNS name (no wildcard), lower-cased: a challenge alias or a CAA issuer domain.
Result<std::string> readDomain(const PipelineReader& reader,
                               const YAML::Node& node,
                               const std::string& what,
                               const std::string& hint) {
  Result<std::string> value = reader.scalar(node, what);
  if (!value.ok()) {
    return value.status();
  }
  std::string lowered = *value;
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (!lowered.empty() && lowered.back() == '.') {
    lowered.pop_back();
  }
  if (!validDnsName(lowered) || lowered.rfind("*.", 0) == 0) {
    return reader.error(node, what + " '" + *value + "' is not a DNS name" + hint);
  }
  return lowered;
}

// A list of nameserver addresses ("127.0.0.1:5300"), each checked where it is written.
Result<std::vector<std::string>> readNameservers(const PipelineReader& reader,
                                                 const YAML::Node& node,
                                                 const std::string& what) {
  if (!node.IsSequence()) {
    return reader.error(node, "'" + what + "' must be a list");
  }
  std::vector<std::string> servers;
  for (const auto& entry : node) {
    Result<std::string> value = reader.scalar(entry, what);
    if (!value.ok()) {
      return value.status();
    }
    Result<Nameserver> parsed = parseNameserver(*value);
    if (!parsed.ok()) {
      return reader.error(entry, what + ": " + parsed.status().message());
    }
    servers.push_back(*value);
  }
  return servers;
}

const char* const kAliasHint =
    " (write the alias's own name: for _acme-challenge.alias.example.com, alias.example.com)";

Result<StageConfig> readStage(const PipelineReader& reader,
                              const std::string& key,
                              const YAML::Node& node) {
  if (!node.IsMap()) {
    return reader.error(node, "stage '" + key + "' must be a map with at least 'plugin'");
  }
  Status keys = reader.checkKeys(node, kStageBlockKeys, "stage '" + key + "'");
  if (!keys.ok()) {
    return keys;
  }
  StageConfig stage;
  stage.key = key;
  stage.location = reader.where(node);
  if (!node["plugin"]) {
    return reader.error(node, "stage '" + key + "' names no plugin");
  }
  Result<std::string> plugin = reader.scalar(node["plugin"], "plugin");
  if (!plugin.ok()) {
    return plugin.status();
  }
  stage.plugin = *plugin;
  if (node["ca_bundle"]) {
    Result<std::string> bundle = reader.scalar(node["ca_bundle"], "ca_bundle");
    if (!bundle.ok()) {
      return bundle.status();
    }
    stage.ca_bundle = *bundle;
  }
  stage.settings = Settings(key + "." + stage.plugin, stage.location);
  if (node["settings"]) {
    if (!node["settings"].IsMap()) {
      return reader.error(node["settings"], "settings of stage '" + key + "' must be a map");
    }
    Status flattened = reader.flatten(node["settings"], "", stage.settings);
    if (!flattened.ok()) {
      return flattened;
    }
  }
  return stage;
}

Result<HostConfig> readHost(const PipelineReader& reader,
                            const YAML::Node& name_node,
                            const YAML::Node& node,
                            const std::vector<StageConfig>& stages) {
  HostConfig host;
  host.target.name = name_node.as<std::string>();
  host.location = reader.where(name_node);
  if (!validHostName(host.target.name)) {
    return reader.error(name_node, "host name '" + host.target.name +
                                       "' may use letters, digits, '-', '_' and '.' only");
  }
  std::string label = "host '" + host.target.name + "'";
  if (!node.IsMap()) {
    return reader.error(node, label + " must be a map");
  }
  Status keys = reader.checkKeys(node, kHostKeys, label);
  if (!keys.ok()) {
    return keys;
  }

  if (!node["address"]) {
    return reader.error(node, label + " has no 'address'");
  }
  Result<std::string> address = reader.scalar(node["address"], "address");
  if (!address.ok()) {
    return address.status();
  }
  host.target.address = *address;

  if (node["port"]) {
    Result<std::string> port = reader.scalar(node["port"], "port");
    if (!port.ok()) {
      return port.status();
    }
    char* end = nullptr;
    long value = std::strtol(port->c_str(), &end, 10);
    if (port->empty() || *end != '\0' || value < 1 || value > 65535) {
      return reader.error(node["port"], label + ": port must be 1-65535, got '" + *port + "'");
    }
    host.target.port = static_cast<std::uint16_t>(value);
  }

  if (!node["user"]) {
    return reader.error(node, label + " has no 'user'");
  }
  Result<std::string> user = reader.scalar(node["user"], "user");
  if (!user.ok()) {
    return user.status();
  }
  host.target.user = *user;

  const YAML::Node& names = node["names"];
  if (!names || !names.IsSequence() || names.size() == 0) {
    return reader.error(names ? names : node, label + " needs a non-empty list of 'names'");
  }
  for (const auto& name_entry : names) {
    Result<std::string> name = reader.scalar(name_entry, "name");
    if (!name.ok()) {
      return name.status();
    }
    std::string lowered = *name;
    std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (!validDnsName(lowered)) {
      return reader.error(name_entry, label + ": '" + *name + "' is not a DNS name");
    }
    if (std::find(host.target.names.begin(), host.target.names.end(), lowered) !=
        host.target.names.end()) {
      return reader.error(name_entry, label + ": name '" + lowered + "' is listed twice");
    }
    host.target.names.push_back(lowered);
  }

  if (node["challenge_alias"]) {
    // An empty value opts the host out of the pipeline's default alias.
    Result<std::string> alias =
        node["challenge_alias"].IsScalar() && node["challenge_alias"].Scalar().empty()
            ? Result<std::string>(std::string())
            : readDomain(reader, node["challenge_alias"], label + ": challenge_alias", kAliasHint);
    if (!alias.ok()) {
      return alias.status();
    }
    host.challenge_alias = *alias;
  }

  if (node["key_type"]) {
    Result<std::string> type = reader.scalar(node["key_type"], "key_type");
    if (!type.ok()) {
      return type.status();
    }
    std::optional<KeyType> parsed = parseKeyType(*type);
    if (!parsed) {
      return reader.error(node["key_type"], label + ": key_type '" + *type +
                                                "' is not one of ec-256, ec-384, rsa-2048, "
                                                "rsa-3072, rsa-4096");
    }
    host.key_type = *parsed;
  }

  if (const YAML::Node& overrides = node["stages"]) {
    if (!overrides.IsMap()) {
      return reader.error(overrides, label + ": 'stages' must map stage names to settings");
    }
    for (const auto& item : overrides) {
      std::string key = item.first.as<std::string>();
      auto stage = std::find_if(stages.begin(), stages.end(),
                                [&](const StageConfig& s) { return s.key == key; });
      if (stage == stages.end()) {
        return reader.error(
            item.first, label + ": overrides stage '" + key + "' that the pipeline does not have");
      }
      if (!item.second.IsMap()) {
        return reader.error(item.second, label + ": overrides of '" + key + "' must be a map");
      }
      Settings settings(stage->settings.prefix(), reader.where(item.second));
      Status flattened = reader.flatten(item.second, "", settings);
      if (!flattened.ok()) {
        return flattened;
      }
      host.stage_overrides[key] = std::move(settings);
    }
  }
  return host;
}

Result<Pipeline> readPipeline(PipelineReader& reader,
                              const YAML::Node& root,
                              const fs::path& file,
                              const std::string& environment) {
  Pipeline pipeline;
  pipeline.file = file;
  pipeline.environment = environment;

  if (!root.IsMap()) {
    return reader.error(root, "a pipeline must be a map with 'stages' and 'hosts'");
  }
  Status keys = reader.checkKeys(root, kTopLevelKeys, "the pipeline");
  if (!keys.ok()) {
    return keys;
  }
  if (root["version"]) {
    Result<std::string> version = reader.scalar(root["version"], "version");
    if (!version.ok()) {
      return version.status();
    }
    if (*version != "1") {
      return reader.error(root["version"], "pipeline format version '" + *version +
                                               "' is not supported (this certfleet reads 1)");
    }
  }

  if (const YAML::Node& variables = root["variables"]) {
    if (!variables.IsMap()) {
      return reader.error(variables, "'variables' must be a map");
    }
    std::map<std::string, std::string> values;
    for (const auto& item : variables) {
      Result<std::string> value = reader.scalar(item.second, "variable");
      if (!value.ok()) {
        return value.status();
      }
      values[item.first.as<std::string>()] = *value;
    }
    reader.setVariables(std::move(values));
  }

  pipeline.name = file.stem().string();
  if (root["name"]) {
    Result<std::string> name = reader.scalar(root["name"], "name");
    if (!name.ok()) {
      return name.status();
    }
    pipeline.name = *name;
  }

  fs::path state = fs::path("/var/lib/certfleet") / pipeline.name;
  if (root["state_dir"]) {
    Result<std::string> value = reader.scalar(root["state_dir"], "state_dir");
    if (!value.ok()) {
      return value.status();
    }
    state = fs::path(*value).is_absolute() ? fs::path(*value) : file.parent_path() / *value;
  }
  // Each environment keeps its own state: a staging run never touches production's.
  pipeline.state_directory = state / (environment.empty() ? "default" : environment);

  if (root["metrics_file"]) {
    Result<std::string> value = reader.scalar(root["metrics_file"], "metrics_file");
    if (!value.ok()) {
      return value.status();
    }
    pipeline.metrics_file =
        fs::path(*value).is_absolute() ? fs::path(*value) : file.parent_path() / *value;
  }

  const YAML::Node& stages = root["stages"];
  if (!stages || !stages.IsMap()) {
    return reader.error(stages ? stages : root, "the pipeline needs a 'stages' map");
  }
  for (const auto& item : stages) {
    std::string key = item.first.as<std::string>();
    if (std::find(std::begin(kStageKeys), std::end(kStageKeys), key) == std::end(kStageKeys)) {
      return reader.error(
          item.first, "unknown stage '" + key + "' (stages: key, dns, ca, deploy, reload, verify)");
    }
  }
  for (const char* key : kStageKeys) {
    const YAML::Node& node = stages[key];
    if (!node) {
      continue;
    }
    Result<StageConfig> stage = readStage(reader, key, node);
    if (!stage.ok()) {
      return stage.status();
    }
    pipeline.stages.push_back(std::move(*stage));
  }
  for (const char* required : {"key", "dns", "ca", "deploy"}) {
    if (pipeline.stage(required) == nullptr) {
      return reader.error(stages, std::string("stage '") + required + "' is missing");
    }
  }
  // The CA's CAA identity is a core key of the ca stage, not a plugin setting: the core
  // checks CAA before it asks the plugin for an order.
  for (const auto& item : stages) {
    const YAML::Node& identity = item.second["caa_identity"];
    if (!identity) {
      continue;
    }
    if (item.first.as<std::string>() != "ca") {
      return reader.error(identity, "caa_identity belongs in stage 'ca'");
    }
    Result<std::string> value =
        readDomain(reader, identity, "caa_identity", " (the CA's issuer domain name)");
    if (!value.ok()) {
      return value.status();
    }
    pipeline.caa_identity = *value;
  }

  std::string default_alias;
  if (const YAML::Node& alias = root["challenge_alias"]) {
    Result<std::string> value = readDomain(reader, alias, "challenge_alias", kAliasHint);
    if (!value.ok()) {
      return value.status();
    }
    default_alias = *value;
  }

  if (const YAML::Node& propagation = root["propagation"]) {
    if (!propagation.IsMap()) {
      return reader.error(propagation, "'propagation' must be a map");
    }
    Status allowed = reader.checkKeys(propagation, kPropagationKeys, "'propagation'");
    if (!allowed.ok()) {
      return allowed;
    }
    if (const YAML::Node& servers = propagation["nameservers"]) {
      Result<std::vector<std::string>> value = readNameservers(reader, servers, "nameservers");
      if (!value.ok()) {
        return value.status();
      }
      pipeline.propagation.nameservers = *value;
    }
    if (const YAML::Node& servers = propagation["resolvers"]) {
      Result<std::vector<std::string>> value = readNameservers(reader, servers, "resolvers");
      if (!value.ok()) {
        return value.status();
      }
      pipeline.propagation.resolvers = *value;
    }
    if (const YAML::Node& port = propagation["nameserver_port"]) {
      Result<std::string> value = reader.scalar(port, "nameserver_port");
      if (!value.ok()) {
        return value.status();
      }
      char* end = nullptr;
      long number = std::strtol(value->c_str(), &end, 10);
      if (value->empty() || *end != '\0' || number < 1 || number > 65535) {
        return reader.error(port, "nameserver_port must be 1-65535, got '" + *value + "'");
      }
      pipeline.propagation.nameserver_port = static_cast<std::uint16_t>(number);
    }
    if (const YAML::Node& settle = propagation["settle"]) {
      Result<std::string> value = reader.scalar(settle, "settle");
      if (!value.ok()) {
        return value.status();
      }
      auto parsed = Settings::parseDuration(*value);
      if (!parsed) {
        return reader.error(settle, "settle must be a duration such as 2s");
      }
      pipeline.propagation.settle = *parsed;
    }
    if (const YAML::Node& timeout = propagation["timeout"]) {
      Result<std::string> value = reader.scalar(timeout, "timeout");
      if (!value.ok()) {
        return value.status();
      }
      auto parsed = Settings::parseDuration(*value);
      if (!parsed) {
        return reader.error(timeout, "timeout must be a duration such as 60s");
      }
      pipeline.propagation.timeout = *parsed;
    }
  }

  if (const YAML::Node& run = root["run"]) {
    if (!run.IsMap()) {
      return reader.error(run, "'run' must be a map");
    }
    Status allowed = reader.checkKeys(run, {"timeout", "parallel", "check_in_place"}, "'run'");
    if (!allowed.ok()) {
      return allowed;
    }
    if (run["timeout"]) {
      Result<std::string> value = reader.scalar(run["timeout"], "timeout");
      if (!value.ok()) {
        return value.status();
      }
      auto parsed = Settings::parseDuration(*value);
      if (!parsed) {
        return reader.error(run["timeout"], "timeout must be a duration such as 30m");
      }
      pipeline.run_timeout = *parsed;
    }
    if (run["check_in_place"]) {
      Result<std::string> value = reader.scalar(run["check_in_place"], "check_in_place");
      if (!value.ok()) {
        return value.status();
      }
      if (*value != "true" && *value != "false") {
        return reader.error(run["check_in_place"], "check_in_place must be true or false");
      }
      pipeline.check_in_place = *value == "true";
    }
    if (run["parallel"]) {
      Result<std::string> value = reader.scalar(run["parallel"], "parallel");
      if (!value.ok()) {
        return value.status();
      }
      long parallel = std::strtol(value->c_str(), nullptr, 10);
      if (parallel < 1 || parallel > 256) {
        return reader.error(run["parallel"], "parallel must be 1-256");
      }
      pipeline.parallel = static_cast<std::size_t>(parallel);
    }
  }

  const YAML::Node& hosts = root["hosts"];
  if (!hosts || !hosts.IsMap() || hosts.size() == 0) {
    return reader.error(hosts ? hosts : root, "the pipeline needs a non-empty 'hosts' map");
  }
  for (const auto& item : hosts) {
    std::string name = item.first.as<std::string>();
    if (pipeline.host(name) != nullptr) {
      return reader.error(item.first, "host '" + name + "' is defined twice");
    }
    Result<HostConfig> host = readHost(reader, item.first, item.second, pipeline.stages);
    if (!host.ok()) {
      return host.status();
    }
    if (!item.second["challenge_alias"]) {
      host->challenge_alias = default_alias;
    }
    pipeline.hosts.push_back(std::move(*host));
  }
  return pipeline;
}

}  // namespace

const StageConfig* Pipeline::stage(const std::string& key) const {
  for (const StageConfig& candidate : stages) {
    if (candidate.key == key) {
      return &candidate;
    }
  }
  return nullptr;
}

const HostConfig* Pipeline::host(const std::string& host_name) const {
  for (const HostConfig& candidate : hosts) {
    if (candidate.target.name == host_name) {
      return &candidate;
    }
  }
  return nullptr;
}

Settings Pipeline::settingsFor(const StageConfig& stage_config,
                               const HostConfig& host_config) const {
  auto found = host_config.stage_overrides.find(stage_config.key);
  if (found == host_config.stage_overrides.end()) {
    return stage_config.settings;
  }
  return stage_config.settings.mergedWith(found->second);
}

Result<Pipeline> loadPipeline(const fs::path& file, const std::string& environment) {
  PipelineReader reader(file);
  YAML::Node root;
  try {
    root = YAML::LoadFile(file.string());
  } catch (const YAML::BadFile&) {
    return invalidArgument(file.string() + ": cannot read the pipeline file");
  } catch (const YAML::ParserException& exception) {
    return invalidArgument(file.string() + ":" + std::to_string(exception.mark.line + 1) + ":" +
                           std::to_string(exception.mark.column + 1) + ": " + exception.msg);
  }

  try {
    if (!environment.empty()) {
      const YAML::Node& environments = root.IsMap() ? root["environments"] : YAML::Node();
      if (!environments || !environments[environment]) {
        return invalidArgument(file.string() + ": environment '" + environment +
                               "' is not defined under 'environments'");
      }
      const YAML::Node& chosen = environments[environment];
      if (!chosen.IsMap()) {
        return reader.error(chosen, "environment '" + environment + "' must be a map");
      }
      Status keys = reader.checkKeys(chosen, kTopLevelKeys, "environment '" + environment + "'");
      if (!keys.ok()) {
        return keys;
      }
      root = overlay(root, chosen);
    }
    return readPipeline(reader, root, file, environment);
  } catch (const YAML::Exception& exception) {
    return invalidArgument(file.string() + ":" + std::to_string(exception.mark.line + 1) + ":" +
                           std::to_string(exception.mark.column + 1) + ": " + exception.msg);
  }
}

std::optional<KeyType> parseKeyType(const std::string& text) {
  static const std::map<std::string, KeyType> kTypes = {{"ec-256", KeyType::kEcP256},
                                                        {"ec-384", KeyType::kEcP384},
                                                        {"rsa-2048", KeyType::kRsa2048},
                                                        {"rsa-3072", KeyType::kRsa3072},
                                                        {"rsa-4096", KeyType::kRsa4096}};
  auto found = kTypes.find(text);
  if (found == kTypes.end()) {
    return std::nullopt;
  }
  return found->second;
}

std::string keyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kEcP256:
      return "ec-256";
    case KeyType::kEcP384:
      return "ec-384";
    case KeyType::kRsa2048:
      return "rsa-2048";
    case KeyType::kRsa3072:
      return "rsa-3072";
    case KeyType::kRsa4096:
      return "rsa-4096";
  }
  return "unknown";
}

}  // namespace certfleet
