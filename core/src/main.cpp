// certfleet: issue and deploy one TLS certificate per server, centrally.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "interrupt.hpp"
#include "key_store.hpp"
#include "logging.hpp"
#include "pipeline.hpp"
#include "plugin_loader.hpp"
#include "renewal.hpp"
#include "runner.hpp"
#include "state_store.hpp"

namespace po = boost::program_options;
using certfleet::LogLevel;

namespace {

// Exit codes a scheduler or a script can act on.
enum ExitCode : int {
  kExitOk = 0,
  kExitHostFailed = 1,
  kExitConfigError = 2,
  kExitBusy = 3,  // another run holds the state: nothing was attempted, try later
};

constexpr const char* kUsage = R"(usage: certfleet COMMAND [options]

commands:
  run PIPELINE      issue what is due and deploy it to every host
  check PIPELINE    validate the pipeline and its plugins' settings, offline
  status PIPELINE   show each host's certificate, renewal moment and last result
  plugins           list the plugins found and whether they load
  revoke PIPELINE --host H [--reason keyCompromise|superseded|cessationOfOperation|...]
                    revoke a host's current certificate; the next run replaces it
  account rollover PIPELINE     replace the ACME account key, keeping the account
  account deactivate PIPELINE   deactivate the ACME account

options)";

std::string formatTime(std::int64_t seconds) {
  if (seconds == 0) {
    return "-";
  }
  std::time_t time = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&time, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M", &utc);
  return text;
}

int fail(int code, const std::string& message) {
  std::cerr << "certfleet: " << certfleet::logging::redact(message) << "\n";
  return code;
}

int listPlugins(const certfleet::PluginLoader& loader) {
  std::vector<certfleet::PluginListing> listings = loader.list();
  for (const auto& directory : loader.directories()) {
    std::cout << "# " << directory.string() << "\n";
  }
  if (listings.empty()) {
    std::cout << "no plugins found\n";
    return kExitConfigError;
  }
  bool any_error = false;
  for (const auto& listing : listings) {
    if (!listing.error.empty()) {
      any_error = true;
      std::cout << "error   " << listing.path.string() << ": " << listing.error << "\n";
      continue;
    }
    std::printf("%-7s %-12s %-8s abi %u  %s\n", listing.stage.c_str(), listing.name.c_str(),
                listing.version.c_str(), listing.abi_version, listing.path.c_str());
  }
  return any_error ? kExitHostFailed : kExitOk;
}

int printReport(const certfleet::RunReport& report, bool json) {
  if (json) {
    nlohmann::json hosts = nlohmann::json::array();
    for (const auto& host : report.hosts) {
      hosts.push_back({{"host", host.host},
                       {"result", certfleet::outcomeName(host.result)},
                       {"detail", host.detail},
                       {"serial", host.serial},
                       {"not_after", host.not_after}});
    }
    std::cout << nlohmann::json{{"hosts", hosts}, {"failed", report.anyFailed()}}.dump(2) << "\n";
  } else {
    std::printf("%-16s %-11s %-17s %s\n", "HOST", "RESULT", "NOT AFTER", "WHY (DUE, OR THE ERROR)");
    for (const auto& host : report.hosts) {
      std::printf("%-16s %-11s %-17s %s\n", host.host.c_str(), certfleet::outcomeName(host.result),
                  formatTime(host.not_after).c_str(), host.detail.c_str());
    }
  }
  return report.anyFailed() ? kExitHostFailed : kExitOk;
}

int showStatus(const certfleet::Pipeline& pipeline, bool json) {
  std::error_code error;
  if (!std::filesystem::exists(pipeline.state_directory / "state.db", error)) {
    if (json) {
      std::cout << nlohmann::json{{"hosts", nlohmann::json::array()}}.dump(2) << "\n";
      return kExitOk;
    }
    return fail(kExitOk, "no state yet in " + pipeline.state_directory.string());
  }
  auto store = certfleet::openSqliteStateStore(pipeline.state_directory);
  if (!store.ok()) {
    return fail(kExitConfigError, store.status().message());
  }
  nlohmann::json rows = nlohmann::json::array();
  if (!json) {
    std::printf("%-12s %-28s %-17s %-28s %-9s %s\n", "HOST", "NAMES", "NOT AFTER", "RENEWS AT",
                "DEPLOYED", "LAST RESULT");
  }
  for (const auto& host : pipeline.hosts) {
    auto record = (*store)->find(host.target.name);
    if (!record.ok()) {
      return fail(kExitConfigError, record.status().message());
    }
    certfleet::HostRecord row = record->value_or(certfleet::HostRecord{});
    std::int64_t renew_at = certfleet::renewalAt(row);
    bool deployed = !row.fingerprint.empty() && row.fingerprint == row.deployed_fingerprint;
    if (json) {
      rows.push_back({{"host", host.target.name},
                      {"names", host.target.names},
                      {"serial", row.serial},
                      {"not_after", row.not_after},
                      {"renew_at", renew_at},
                      {"renew_basis", certfleet::renewalBasis(row)},
                      {"revoked", row.revoked},
                      {"failures", row.failures},
                      {"next_attempt", row.next_attempt},
                      {"deployed", deployed},
                      {"last_result", row.last_result},
                      {"last_attempt", row.last_attempt}});
      continue;
    }
    std::string names = certfleet::joinNames(host.target.names);
    if (names.size() > 28) {
      names = names.substr(0, 25) + "...";
    }
    std::string last =
        row.last_result.empty() ? "-" : row.last_result + " (" + formatTime(row.last_attempt) + ")";
    std::string renews = formatTime(renew_at);
    if (renew_at != 0) {
      renews += " (" + certfleet::renewalBasis(row) + ")";
    }
    std::printf("%-12s %-28s %-17s %-28s %-9s %s\n", host.target.name.c_str(), names.c_str(),
                formatTime(row.not_after).c_str(), renews.c_str(), deployed ? "yes" : "no",
                last.c_str());
  }
  if (json) {
    std::cout << nlohmann::json{{"hosts", rows}}.dump(2) << "\n";
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  // A peer that resets a connection must fail that host's step, not kill the whole run.
  std::signal(SIGPIPE, SIG_IGN);
  certfleet::installInterruptHandlers();

  std::string command;
  std::string pipeline_file;
  std::string environment;
  std::string output;
  std::string log_level;
  std::vector<std::string> plugin_dirs;
  std::vector<std::string> only_hosts;
  bool force = false;
  std::size_t parallel = 0;
  std::string reason = "unspecified";
  std::vector<std::string> positional_arguments;

  po::options_description options(kUsage);
  options.add_options()("help,h", "show this help")("version", "print the version")(
      "env,e", po::value(&environment), "environment of the pipeline to apply")(
      "force", po::bool_switch(&force), "renew every selected host now")(
      "host", po::value(&only_hosts), "only this host (repeatable)")(
      "parallel", po::value(&parallel),
      "hosts in flight at once (default: the pipeline's run.parallel, 8)")(
      "plugin-dir", po::value(&plugin_dirs), "also look for plugins here (repeatable)")(
      "output,o", po::value(&output)->default_value("text"), "text or json")(
      "reason", po::value(&reason), "revocation reason (revoke)")(
      "log-level", po::value(&log_level)->default_value("info"),
      "trace, debug, info, warn or error");
  po::options_description hidden;
  hidden.add_options()("arguments", po::value(&positional_arguments));
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("arguments", -1);

  po::variables_map arguments;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(),
              arguments);
    po::notify(arguments);
  } catch (const po::error& error) {
    return fail(kExitConfigError, std::string(error.what()) + " (see certfleet --help)");
  }
  // "account ACTION PIPELINE"; every other command is "COMMAND [PIPELINE]".
  std::string account_action;
  std::size_t next = 0;
  if (next < positional_arguments.size()) {
    command = positional_arguments[next++];
  }
  if (command == "account" && next < positional_arguments.size()) {
    account_action = positional_arguments[next++];
  }
  if (next < positional_arguments.size()) {
    pipeline_file = positional_arguments[next++];
  }
  if (next < positional_arguments.size()) {
    return fail(kExitConfigError, "unexpected argument '" + positional_arguments[next] + "'");
  }
  if (arguments.count("help") != 0 || (command.empty() && arguments.count("version") == 0)) {
    std::cout << options << "\n";
    return command.empty() && arguments.count("help") == 0 ? kExitConfigError : kExitOk;
  }
  if (arguments.count("version") != 0) {
    std::cout << "certfleet " << CERTFLEET_VERSION << " (plugin ABI " << certfleet::kAbiVersion
              << ")\n";
    return kExitOk;
  }
  if (output != "text" && output != "json") {
    return fail(kExitConfigError, "--output must be text or json");
  }
  const std::map<std::string, LogLevel> levels = {{"trace", LogLevel::kTrace},
                                                  {"debug", LogLevel::kDebug},
                                                  {"info", LogLevel::kInfo},
                                                  {"warn", LogLevel::kWarn},
                                                  {"error", LogLevel::kError}};
  if (levels.count(log_level) == 0) {
    return fail(kExitConfigError, "--log-level must be trace, debug, info, warn or error");
  }
  certfleet::logging::setLevel(levels.at(log_level));

  certfleet::PluginLoader loader(certfleet::PluginLoader::defaultDirectories(plugin_dirs));
  if (command == "plugins") {
    return listPlugins(loader);
  }
  if (command != "run" && command != "check" && command != "status" && command != "revoke" &&
      command != "account") {
    return fail(kExitConfigError, "unknown command '" + command + "' (see certfleet --help)");
  }
  if (pipeline_file.empty()) {
    return fail(kExitConfigError, command + " needs a pipeline file");
  }

  certfleet::Result<certfleet::Pipeline> pipeline =
      certfleet::loadPipeline(pipeline_file, environment);
  if (!pipeline.ok()) {
    return fail(kExitConfigError, pipeline.status().message());
  }
  if (command == "status") {
    return showStatus(*pipeline, output == "json");
  }
  if (arguments.count("parallel") != 0) {
    if (parallel < 1 || parallel > 256) {
      return fail(kExitConfigError, "--parallel must be 1-256");
    }
    pipeline->parallel = parallel;
  }

  auto runner = certfleet::Runner::create(std::move(*pipeline), loader);
  if (!runner.ok()) {
    return fail(kExitConfigError, runner.status().message());
  }
  if (command == "check") {
    certfleet::Status checked = (*runner)->checkHosts();
    if (!checked.ok()) {
      return fail(kExitConfigError, checked.message());
    }
    std::cout << pipeline_file << ": ok (" << (*runner)->pipeline().hosts.size() << " hosts, "
              << (*runner)->pipeline().stages.size() << " stages)\n";
    return kExitOk;
  }

  if (command == "revoke") {
    const std::map<std::string, certfleet::RevocationReason> reasons = {
        {"unspecified", certfleet::RevocationReason::kUnspecified},
        {"keyCompromise", certfleet::RevocationReason::kKeyCompromise},
        {"affiliationChanged", certfleet::RevocationReason::kAffiliationChanged},
        {"superseded", certfleet::RevocationReason::kSuperseded},
        {"cessationOfOperation", certfleet::RevocationReason::kCessationOfOperation}};
    if (only_hosts.size() != 1) {
      return fail(kExitConfigError, "revoke needs exactly one --host");
    }
    if (reasons.count(reason) == 0) {
      return fail(kExitConfigError,
                  "--reason must be unspecified, keyCompromise, affiliationChanged, "
                  "superseded or cessationOfOperation");
    }
    certfleet::Status revoked = (*runner)->revokeHost(only_hosts.front(), reasons.at(reason));
    if (!revoked.ok()) {
      return fail(revoked.code() == certfleet::StatusCode::kInvalidArgument ? kExitConfigError
                                                                            : kExitHostFailed,
                  revoked.message());
    }
    std::cout << only_hosts.front() << ": revoked (" << reason << ")\n";
    return kExitOk;
  }
  if (command == "account") {
    certfleet::Status done = (*runner)->accountAction(account_action);
    if (!done.ok()) {
      return fail(done.code() == certfleet::StatusCode::kInvalidArgument ? kExitConfigError
                                                                         : kExitHostFailed,
                  done.message());
    }
    std::cout << "account " << account_action << ": done\n";
    return kExitOk;
  }

  // Everything check verifies, before the first order: a typo must not cost a CA order.
  certfleet::Status checked = (*runner)->checkHosts();
  if (!checked.ok()) {
    return fail(kExitConfigError, checked.message());
  }

  certfleet::RunOptions run_options;
  run_options.force = force;
  run_options.only_hosts = only_hosts;
  certfleet::Result<certfleet::RunReport> report = (*runner)->run(run_options);
  if (!report.ok() && report.status().code() == certfleet::StatusCode::kUnavailable) {
    return fail(kExitBusy, report.status().message());
  }
  if (!report.ok()) {
    return fail(report.status().code() == certfleet::StatusCode::kInvalidArgument ? kExitConfigError
                                                                                  : kExitHostFailed,
                report.status().message());
  }
  return printReport(*report, output == "json");
}
