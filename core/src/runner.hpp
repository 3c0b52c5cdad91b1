// The choreography of a run: decide what is due, issue for the due hosts together (one
// batch of DNS-01 records), deploy, reload and verify per host, and record every outcome.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pipeline.hpp"
#include "plugin_loader.hpp"
#include "services.hpp"
#include "state_store.hpp"

namespace certfleet {

class Progress;

struct RunOptions {
  bool force = false;
  std::vector<std::string> only_hosts;  // empty: every host
};

struct HostOutcome {
  enum class Result { kUpToDate, kIssued, kDeployed, kFailed };
  std::string host;
  Result result = Result::kUpToDate;
  std::string detail;  // the reason it was due, or the failure
  std::string serial;
  std::int64_t not_after = 0;
};

struct RunReport {
  std::vector<HostOutcome> hosts;
  bool anyFailed() const;
};

const char* outcomeName(HostOutcome::Result result);

class Runner {
 public:
  // Loads and configures every plugin the pipeline names. Touches no network.
  static Result<std::unique_ptr<Runner>> create(Pipeline pipeline, const PluginLoader& loader);

  // Everything `certfleet check` verifies beyond parsing: each host's effective settings.
  Status checkHosts() const;

  Result<RunReport> run(const RunOptions& options);

  // Revokes the host's current certificate; the next run issues a new one.
  Status revokeHost(const std::string& host, RevocationReason reason);

  // "rollover" replaces the account key (RFC 8555 7.3.5); "deactivate" ends the account.
  Status accountAction(const std::string& action);

  const Pipeline& pipeline() const { return pipeline_; }

  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

 private:
  struct HostWork;
  explicit Runner(Pipeline pipeline);

  void issue(std::vector<HostWork*>& work);
  void removeLeftoverRecords();
  // Asks the CA for the certificate's renewal window (RFC 9773) and records the moment.
  void refreshRenewalWindow(HostWork& work, std::int64_t now);
  // True when the host holds its current pair (or, for a host not due, when it cannot be
  // told); false when it must be deployed.
  bool inPlaceVerdict(HostWork& work);
  void deploy(HostWork& work);
  Status deployAndConfirm(const HostWork& work, const CertificateBundle& bundle);
  // The run lock and the state store, for every command that changes the state.
  Status openState();
  void adoptKeyStorePair(HostWork& work, const CertificateBundle& current);

  Pipeline pipeline_;
  std::chrono::steady_clock::time_point deadline_;
  // Services outlive the plugins that hold pointers to them: keep this order.
  std::vector<std::unique_ptr<CoreServices>> services_;
  std::vector<std::unique_ptr<LoadedPlugin>> plugins_;
  KeyPlugin* key_ = nullptr;
  DnsPlugin* dns_ = nullptr;
  CaPlugin* ca_ = nullptr;
  DeployPlugin* deploy_ = nullptr;
  HookPlugin* reload_ = nullptr;
  HookPlugin* verify_ = nullptr;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<Progress> progress_;
  std::unique_ptr<class RunLock> lock_;
};

}  // namespace certfleet
