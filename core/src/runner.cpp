#include "runner.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "caa.hpp"
#include "certificate.hpp"
#include "dns_lookup.hpp"
#include "interrupt.hpp"
#include "key_store.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "propagation.hpp"
#include "renewal.hpp"
#include <sys/file.h>

namespace certfleet {
namespace {

// Ten minutes after the first failed issuance, doubling up to a day.
std::int64_t issuanceBackoff(std::int64_t failures) {
  constexpr std::int64_t kFirst = 600;
  constexpr std::int64_t kLongest = 86400;
  std::int64_t delay = kFirst;
  for (std::int64_t i = 1; i < failures && delay < kLongest; ++i) {
    delay *= 2;
  }
  return std::min(delay, kLongest);
}

// Runs work(0..count-1) on up to `parallel` threads.
void forEachParallel(std::size_t count,
                     std::size_t parallel,
                     const std::function<void(std::size_t)>& work) {
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t index = next++; index < count; index = next++) {
      work(index);
    }
  };
  std::size_t threads = std::min(count, std::max<std::size_t>(parallel, 1));
  std::vector<std::thread> pool;
  for (std::size_t i = 1; i < threads; ++i) {
    pool.emplace_back(worker);
  }
  worker();
  for (std::thread& thread : pool) {
    thread.join();
  }
}

void logCore(LogLevel level, const std::string& message) {
  logging::write(level, "", "", message);
}

// Points each pending authorization's record at the name that really holds it. With a
// challenge alias, _acme-challenge.<name> must lead by CNAME to _acme-challenge.<alias>:
// a missing delegation is caught here, not later as a puzzling failure at the CA. Without
// one, a CNAME found at the challenge name is followed, as RFC 8555 validators do.
Status routeChallenges(const DnsLookup* lookup,
                       bool follow_cnames,
                       const std::string& alias,
                       Order& order) {
  for (Authorization& authorization : order.authorizations) {
    if (authorization.already_valid || lookup == nullptr || (alias.empty() && !follow_cnames)) {
      continue;
    }
    TxtRecord& record = authorization.record;
    Result<std::vector<std::string>> chain = lookup->cnameChain(record.fqdn);
    if (!chain.ok()) {
      return chain.status();
    }
    if (!alias.empty()) {
      std::string delegated = "_acme-challenge." + alias;
      if (std::find(chain->begin() + 1, chain->end(), delegated) == chain->end()) {
        return failedPrecondition(
            "challenge_alias: " + chain->front() + " must be a CNAME to " + delegated + ", but " +
            (chain->size() == 1 ? "it has no CNAME" : "it leads to " + chain->back()));
      }
    }
    if (chain->back() != normalizeName(record.fqdn)) {
      logCore(LogLevel::kDebug,
              record.fqdn + " is a CNAME to " + chain->back() + ": the record is written there");
      record.fqdn = chain->back();
    }
  }
  return {};
}

}  // namespace

// Holds an exclusive lock on the state directory for the whole run. The kernel drops it
// when the process dies, however it dies, so a crashed run never blocks the next one.
class RunLock {
 public:
  static Result<std::unique_ptr<RunLock>> acquire(const std::filesystem::path& directory) {
    std::filesystem::path file = directory / "run.lock";
    int descriptor = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (descriptor < 0) {
      return failedPrecondition("state_dir: cannot open " + file.string() + ": " +
                                std::strerror(errno));
    }
    if (::flock(descriptor, LOCK_EX | LOCK_NB) != 0) {
      char holder[32] = {};
      ssize_t length = ::pread(descriptor, holder, sizeof(holder) - 1, 0);
      ::close(descriptor);
      std::string pid = length > 0 ? std::string(holder, static_cast<std::size_t>(length)) : "?";
      return unavailable("another run (pid " + pid + ") holds " + file.string() +
                         "; try again when it has finished");
    }
    std::string pid = std::to_string(::getpid());
    if (::ftruncate(descriptor, 0) == 0) {
      [[maybe_unused]] ssize_t written = ::pwrite(descriptor, pid.data(), pid.size(), 0);
    }
    return std::unique_ptr<RunLock>(new RunLock(descriptor));
  }
  ~RunLock() { ::close(descriptor_); }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  explicit RunLock(int descriptor) : descriptor_(descriptor) {}
  int descriptor_;
};

// The live line on a terminal: hosts done, failed, and the stage of each in flight.
class Progress {
 public:
  explicit Progress(std::size_t total) : total_(total) {}

  void stage(const std::string& host, const char* stage) {
    if (!logging::statusLineEnabled()) {
      return;
    }
    std::lock_guard lock(mutex_);
    in_flight_[host] = stage;
    redraw();
  }

  void finish(const std::string& host, bool ok) {
    std::lock_guard lock(mutex_);
    if (!finished_.insert(host).second) {
      return;
    }
    in_flight_.erase(host);
    ok ? ++done_ : ++failed_;
    if (logging::statusLineEnabled()) {
      redraw();
    }
  }

  void close() {
    if (logging::statusLineEnabled()) {
      logging::setStatusLine("");
    }
  }

 private:
  void redraw() {
    std::string line = "[certfleet] " + std::to_string(done_) + "/" + std::to_string(total_) +
                       " done, " + std::to_string(failed_) + " failed, " +
                       std::to_string(in_flight_.size()) + " in flight";
    std::size_t shown = 0;
    for (const auto& [host, stage] : in_flight_) {
      std::string entry = (shown == 0 ? ": " : ", ") + host + " " + stage;
      if (line.size() + entry.size() > 90) {
        line += ", ...";
        break;
      }
      line += entry;
      ++shown;
    }
    logging::setStatusLine(line);
  }

  std::mutex mutex_;
  std::size_t total_;
  std::size_t done_ = 0;
  std::size_t failed_ = 0;
  std::map<std::string, std::string> in_flight_;
  std::set<std::string> finished_;
};

struct Runner::HostWork {
  const HostConfig* host = nullptr;
  RenewalDecision decision;
  std::optional<HostRecord> record;
  HostOutcome outcome;
  bool failed = false;
  bool issued = false;
  bool has_current_pair = false;
  std::string current_leaf_pem;  // the certificate a new order replaces
  // Issuance
  std::string csr_pem;
  Order order;

  Progress* progress = nullptr;

  void stage(const char* name) const { progress->stage(host->target.name, name); }

  void fail(const Status& status) {
    progress->finish(host->target.name, false);
    failed = true;
    outcome.result = HostOutcome::Result::kFailed;
    outcome.detail = logging::redact(status.message());
    logging::HostScope scope(host->target.name);
    logCore(LogLevel::kError, outcome.detail);
  }

  std::vector<TxtRecord> pendingRecords() const {
    std::vector<TxtRecord> records;
    for (const Authorization& authorization : order.authorizations) {
      if (!authorization.already_valid) {
        records.push_back(authorization.record);
      }
    }
    return records;
  }
};

const char* outcomeName(HostOutcome::Result result) {
  switch (result) {
    case HostOutcome::Result::kUpToDate:
      return "up-to-date";
    case HostOutcome::Result::kIssued:
      return "issued";
    case HostOutcome::Result::kDeployed:
      return "deployed";
    case HostOutcome::Result::kFailed:
      return "failed";
  }
  return "unknown";
}

bool RunReport::anyFailed() const {
  return std::any_of(hosts.begin(), hosts.end(), [](const HostOutcome& outcome) {
    return outcome.result == HostOutcome::Result::kFailed;
  });
}

Runner::Runner(Pipeline pipeline)
    : pipeline_(std::move(pipeline)),
      deadline_(std::chrono::steady_clock::now() + pipeline_.run_timeout) {}

Runner::~Runner() {
  // Instances first, while their services and libraries still exist.
  plugins_.clear();
  services_.clear();
}

Result<std::unique_ptr<Runner>> Runner::create(Pipeline pipeline, const PluginLoader& loader) {
  std::unique_ptr<Runner> runner(new Runner(std::move(pipeline)));
  for (const StageConfig& stage : runner->pipeline_.stages) {
    bool is_hook = stage.key == "reload" || stage.key == "verify";
    Stage kind = is_hook              ? Stage::kHook
                 : stage.key == "key" ? Stage::kKey
                 : stage.key == "dns" ? Stage::kDns
                 : stage.key == "ca"  ? Stage::kCa
                                      : Stage::kDeploy;
    Result<std::unique_ptr<LoadedPlugin>> loaded = loader.load(kind, stage.plugin);
    if (!loaded.ok()) {
      return loaded.status().withContext(stage.location + ": stage " + stage.key);
    }
    auto services = std::make_unique<CoreServices>(
        stage.key, stage.plugin, stage.ca_bundle,
        runner->pipeline_.state_directory / "plugins" / (stage.key + "-" + stage.plugin),
        runner->deadline_);
    LoadedPlugin& plugin = **loaded;
    void* typed = nullptr;
    switch (kind) {
      case Stage::kKey:
        typed = runner->key_ = plugin.as<KeyPlugin>();
        break;
      case Stage::kDns:
        typed = runner->dns_ = plugin.as<DnsPlugin>();
        break;
      case Stage::kCa:
        typed = runner->ca_ = plugin.as<CaPlugin>();
        break;
      case Stage::kDeploy:
        typed = runner->deploy_ = plugin.as<DeployPlugin>();
        break;
      case Stage::kHook:
        typed = (stage.key == "reload" ? runner->reload_ : runner->verify_) =
            plugin.as<HookPlugin>();
        break;
    }
    if (typed == nullptr) {
      return failedPrecondition(stage.location + ": stage " + stage.key + ": plugin " +
                                plugin.path().string() + " does not implement the " +
                                stageName(kind) + " interface");
    }
    Status configured = plugin.instance().configure(stage.settings, *services);
    if (!configured.ok()) {
      return configured;
    }
    runner->services_.push_back(std::move(services));
    runner->plugins_.push_back(std::move(*loaded));
  }
  return runner;
}

Status Runner::checkHosts() const {
  for (const HostConfig& host : pipeline_.hosts) {
    for (std::size_t i = 0; i < pipeline_.stages.size(); ++i) {
      const StageConfig& stage = pipeline_.stages[i];
      Status checked =
          plugins_[i]->instance().checkHost(host.target, pipeline_.settingsFor(stage, host));
      if (!checked.ok()) {
        return checked.withContext("host " + host.target.name);
      }
    }
  }
  return {};
}

Result<RunReport> Runner::run(const RunOptions& options) {
  Status opened = openState();
  if (!opened.ok()) {
    return opened;
  }
  KeyStore keys(pipeline_.state_directory);
  removeLeftoverRecords();
  std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));

  for (const std::string& wanted : options.only_hosts) {
    if (pipeline_.host(wanted) == nullptr) {
      return invalidArgument("host '" + wanted + "' is not in " + pipeline_.file.string());
    }
  }

  // Decide per host.
  progress_ = std::make_unique<Progress>(options.only_hosts.empty() ? pipeline_.hosts.size()
                                                                    : options.only_hosts.size());
  std::vector<std::unique_ptr<HostWork>> all_work;
  for (const HostConfig& host : pipeline_.hosts) {
    if (!options.only_hosts.empty() &&
        std::find(options.only_hosts.begin(), options.only_hosts.end(), host.target.name) ==
            options.only_hosts.end()) {
      continue;
    }
    auto work = std::make_unique<HostWork>();
    work->host = &host;
    work->progress = progress_.get();
    work->outcome.host = host.target.name;
    Status recovered = keys.recover(host.target.name);
    Result<std::optional<HostRecord>> record = state_->find(host.target.name);
    Result<std::optional<CertificateBundle>> current = keys.current(host.target.name);
    if (!recovered.ok() || !record.ok() || !current.ok()) {
      work->fail(!recovered.ok() ? recovered : !record.ok() ? record.status() : current.status());
      all_work.push_back(std::move(work));
      continue;
    }
    work->record = *record;
    work->has_current_pair = current->has_value();
    if (work->has_current_pair) {
      work->current_leaf_pem = (*current)->leaf_pem;
      adoptKeyStorePair(*work, **current);
    }
    all_work.push_back(std::move(work));
  }

  // The CA's renewal window (ARI) for every current certificate whose last answer is due
  // for a refresh, asked in parallel before anything is decided.
  std::vector<HostWork*> to_ask;
  for (auto& work : all_work) {
    if (!work->failed && work->record && !work->current_leaf_pem.empty() &&
        now >= work->record->ari_next_check) {
      to_ask.push_back(work.get());
    }
  }
  forEachParallel(to_ask.size(), pipeline_.parallel,
                  [&](std::size_t index) { refreshRenewalWindow(*to_ask[index], now); });

  for (auto& work : all_work) {
    if (work->failed) {
      continue;
    }
    const HostConfig& host = *work->host;
    work->decision = decideRenewal(host, work->record, work->has_current_pair, now, options.force);
    work->outcome.detail = work->decision.reason;
    if (work->record) {
      work->outcome.serial = work->record->serial;
      work->outcome.not_after = work->record->not_after;
    }
    logging::HostScope scope(host.target.name);
    logCore(LogLevel::kInfo, work->decision.issue    ? "due: " + work->decision.reason
                             : work->decision.deploy ? "deploy due: " + work->decision.reason
                                                     : "not due: " + work->decision.reason);
    if (!work->decision.issue && !work->decision.deploy) {
      progress_->finish(host.target.name, true);
    }
  }

  std::vector<HostWork*> to_issue;
  std::vector<HostWork*> to_deploy;
  for (auto& work : all_work) {
    if (work->failed) {
      continue;
    }
    if (work->decision.issue) {
      to_issue.push_back(work.get());
    } else if (work->decision.deploy) {
      to_deploy.push_back(work.get());
    }
  }
  if (to_issue.empty() && to_deploy.empty()) {
    logCore(LogLevel::kInfo,
            "nothing due: no order to place for " + std::to_string(all_work.size()) + " host(s)");
  }

  if (!to_issue.empty()) {
    issue(to_issue);
  }

  // Hosts with nothing to issue are compared with what they hold: a rebuilt server gets
  // its current pair back, and a host already holding it is not touched.
  std::vector<HostWork*> to_compare;
  for (auto& work : all_work) {
    if (!work->failed && !work->decision.issue && work->has_current_pair &&
        pipeline_.check_in_place) {
      to_compare.push_back(work.get());
    }
  }
  std::vector<char> needs_deploy(to_compare.size(), 0);
  forEachParallel(to_compare.size(), pipeline_.parallel, [&](std::size_t index) {
    needs_deploy[index] = inPlaceVerdict(*to_compare[index]) ? 0 : 1;
  });
  for (std::size_t i = 0; i < to_compare.size(); ++i) {
    bool listed = std::find(to_deploy.begin(), to_deploy.end(), to_compare[i]) != to_deploy.end();
    if (needs_deploy[i] != 0 && !listed) {
      to_compare[i]->decision.deploy = true;
      to_deploy.push_back(to_compare[i]);
    } else if (needs_deploy[i] == 0 && listed) {
      to_deploy.erase(std::find(to_deploy.begin(), to_deploy.end(), to_compare[i]));
    }
  }

  forEachParallel(to_deploy.size(), pipeline_.parallel, [&](std::size_t index) {
    if (interrupted()) {
      to_deploy[index]->fail(deadlineExceeded("interrupted before the deploy started"));
      return;
    }
    deploy(*to_deploy[index]);
  });

  progress_->close();
  RunReport report;
  for (auto& work : all_work) {
    if (work->decision.issue || work->decision.deploy || work->failed) {
      HostRecord record = work->record.value_or(HostRecord{});
      record.host = work->host->target.name;
      if (record.names.empty()) {
        record.names = joinNames(work->host->target.names);
        record.key_type = keyTypeName(work->host->key_type);
      }
      record.last_result = work->failed ? work->outcome.detail : "ok";
      record.last_attempt = now;
      if (work->decision.issue && !work->issued) {
        record.failures += 1;
        record.next_attempt = now + issuanceBackoff(record.failures);
      }
      Status saved = state_->save(record);
      if (!saved.ok()) {
        work->fail(saved);
      }
    }
    report.hosts.push_back(work->outcome);
  }

  Result<std::vector<HostRecord>> records = state_->all();
  if (records.ok()) {
    std::string text =
        renderMetrics(pipeline_.name,
                      pipeline_.environment.empty() ? "default" : pipeline_.environment, *records);
    Status written =
        writeMetrics(pipeline_.metrics_file.empty() ? pipeline_.state_directory / "metrics.prom"
                                                    : pipeline_.metrics_file,
                     text);
    if (!written.ok()) {
      logCore(LogLevel::kWarn, written.message());
    }
  }
  return report;
}

void Runner::issue(std::vector<HostWork*>& work) {
  KeyStore keys(pipeline_.state_directory);
  Status account = ca_->prepareAccount();
  if (!account.ok()) {
    for (HostWork* host : work) {
      host->fail(account);
    }
    return;
  }

  // Lookups, for CAA, challenge aliases, CNAMEs at challenge names and zone discovery.
  // A pipeline that needs none of them never reads /etc/resolv.conf.
  const PropagationConfig& propagation = pipeline_.propagation;
  bool any_alias = std::any_of(work.begin(), work.end(), [](const HostWork* host) {
    return !host->host->challenge_alias.empty();
  });
  std::unique_ptr<DnsLookup> lookup;
  if (followsCnames(propagation) || any_alias || !pipeline_.caa_identity.empty()) {
    Result<std::unique_ptr<DnsLookup>> made = makeDnsLookup(propagation);
    if (!made.ok()) {
      for (HostWork* host : work) {
        host->fail(made.status().withContext("dns lookups"));
      }
      return;
    }
    lookup = std::move(*made);
  }

  // A key and an order per host. The key is stored before it is used, so no key the CA
  // certifies can be lost.
  forEachParallel(work.size(), pipeline_.parallel, [&](std::size_t index) {
    HostWork& host = *work[index];
    logging::HostScope scope(host.host->target.name);
    if (interrupted()) {
      host.fail(deadlineExceeded("interrupted before the order was placed"));
      return;
    }
    host.stage("order");
    if (!pipeline_.caa_identity.empty()) {
      for (const std::string& name : host.host->target.names) {
        Status allowed = checkCaa(*lookup, name, pipeline_.caa_identity);
        if (!allowed.ok()) {
          host.fail(allowed);
          return;
        }
      }
    }
    Result<Secret> key = key_->generateKey(host.host->key_type);
    if (!key.ok()) {
      host.fail(key.status());
      return;
    }
    Status saved = keys.savePendingKey(host.host->target.name, *key);
    if (!saved.ok()) {
      host.fail(saved);
      return;
    }
    Result<std::string> csr = key_->makeCsr(*key, host.host->target.names);
    if (!csr.ok()) {
      host.fail(csr.status());
      return;
    }
    host.csr_pem = std::move(*csr);
    Result<Order> order = ca_->newOrder(host.host->target.names, host.current_leaf_pem);
    if (!order.ok()) {
      host.fail(order.status());
      return;
    }
    host.order = std::move(*order);
    Status routed = routeChallenges(lookup.get(), followsCnames(propagation),
                                    host.host->challenge_alias, host.order);
    if (!routed.ok()) {
      host.fail(routed);
    }
  });

  // One batch of TXT records for every host. Each is written down in the state before it
  // is presented and removed whatever happens next, also when a failed request may have
  // added part of it; a run killed in between leaves the list for the next run.
  std::vector<TxtRecord> batch;
  for (HostWork* host : work) {
    if (!host->failed) {
      std::vector<TxtRecord> records = host->pendingRecords();
      batch.insert(batch.end(), records.begin(), records.end());
    }
  }
  if (!batch.empty()) {
    Status remembered = state_->rememberRecords(batch);
    if (!remembered.ok()) {
      for (HostWork* host : work) {
        host->fail(remembered);
      }
      return;
    }
  }
  struct Cleanup {
    DnsPlugin* dns;
    StateStore* state;
    const std::vector<TxtRecord>& records;
    bool done = false;
    ~Cleanup() { run(); }
    void run() {
      if (done || records.empty()) {
        return;
      }
      done = true;
      Status removed = dns->cleanup(records);
      if (!removed.ok()) {
        logCore(LogLevel::kError, "dns cleanup, the next run retries: " + removed.message());
        return;
      }
      Status forgotten = state->forgetRecords(records);
      if (!forgotten.ok()) {
        logCore(LogLevel::kWarn, forgotten.message());
      }
    }
  } cleanup{dns_, state_.get(), batch};

  std::vector<TxtRecord> presented;
  if (!batch.empty() && interrupted()) {
    for (HostWork* host : work) {
      host->fail(deadlineExceeded("interrupted before the challenges were presented"));
    }
    return;
  }
  if (!batch.empty()) {
    Status added = dns_->present(batch);
    if (added.ok()) {
      presented = batch;
    } else {
      // One host's bad zone must not sink the others: retry host by host.
      logCore(LogLevel::kWarn, "dns batch failed, retrying per host: " + added.message());
      for (HostWork* host : work) {
        std::vector<TxtRecord> records =
            host->failed ? std::vector<TxtRecord>{} : host->pendingRecords();
        if (records.empty()) {
          continue;
        }
        Status single = dns_->present(records);
        if (!single.ok()) {
          host->fail(single);
          continue;
        }
        presented.insert(presented.end(), records.begin(), records.end());
      }
    }
  }

  // One wait for the whole batch; only the hosts whose records are missing fail.
  if (!presented.empty()) {
    auto propagation_deadline =
        std::min(deadline_, std::chrono::steady_clock::now() + propagation.timeout);
    ConfirmOutcome confirmed = confirmRecords(propagation, lookup.get(), presented,
                                              propagation_deadline, [] { return interrupted(); });
    for (const std::string& step : confirmed.plan) {
      logCore(LogLevel::kDebug, step);
    }
    for (const std::string& warning : confirmed.warnings) {
      logCore(LogLevel::kWarn, warning);
    }
    if (interrupted()) {
      for (HostWork* host : work) {
        if (!host->failed) {
          host->fail(deadlineExceeded("interrupted before the challenges were answered"));
        }
      }
      return;
    }
    logCore(LogLevel::kInfo, confirmed.summary);
    for (HostWork* host : work) {
      if (host->failed) {
        continue;
      }
      for (const TxtRecord& record : host->pendingRecords()) {
        auto failure =
            std::find_if(confirmed.failed.begin(), confirmed.failed.end(), [&](const auto& entry) {
              return entry.first.fqdn == record.fqdn && entry.first.value == record.value;
            });
        if (failure != confirmed.failed.end()) {
          host->fail(failure->second);
          break;
        }
      }
    }
  }

  if (interrupted()) {
    for (HostWork* host : work) {
      if (!host->failed) {
        host->fail(deadlineExceeded("interrupted before the challenges were answered"));
      }
    }
    return;
  }

  forEachParallel(work.size(), pipeline_.parallel, [&](std::size_t index) {
    HostWork& host = *work[index];
    if (host.failed) {
      return;
    }
    logging::HostScope scope(host.host->target.name);
    host.stage("challenge");
    for (const Authorization& authorization : host.order.authorizations) {
      if (authorization.already_valid) {
        continue;
      }
      Status answered = ca_->answerChallenge(authorization);
      if (!answered.ok()) {
        host.fail(answered);
        return;
      }
    }
    for (const Authorization& authorization : host.order.authorizations) {
      if (authorization.already_valid) {
        continue;
      }
      Status valid = ca_->awaitAuthorization(authorization);
      if (!valid.ok()) {
        host.fail(valid);
        return;
      }
    }
  });

  // Every authorization is decided: the records have done their work.
  cleanup.run();

  // Finalize and deploy each host as soon as its certificate arrives, so that one host's
  // SSH work overlaps the others' issuance.
  forEachParallel(work.size(), pipeline_.parallel, [&](std::size_t index) {
    HostWork& host = *work[index];
    if (host.failed) {
      return;
    }
    logging::HostScope scope(host.host->target.name);
    host.stage("finalize");
    Result<std::string> chain = ca_->finalize(host.order, host.csr_pem);
    if (!chain.ok()) {
      host.fail(chain.status());
      return;
    }
    Result<CertificateInfo> info = inspectChain(*chain);
    Result<Secret> key = keys.pendingKey(host.host->target.name);
    if (!info.ok() || !key.ok()) {
      host.fail(!info.ok() ? info.status().withContext("ca") : key.status());
      return;
    }
    Status matches = checkKeyMatches(*key, info->leaf_pem);
    if (!matches.ok()) {
      host.fail(matches.withContext("ca returned a certificate for another key"));
      return;
    }
    Status promoted = keys.promote(host.host->target.name, *chain);
    if (!promoted.ok()) {
      host.fail(promoted);
      return;
    }
    HostRecord record = host.record.value_or(HostRecord{});
    record.host = host.host->target.name;
    record.names = joinNames(host.host->target.names);
    record.key_type = keyTypeName(host.host->key_type);
    record.serial = info->serial;
    record.not_before = info->not_before;
    record.not_after = info->not_after;
    record.fingerprint = info->fingerprint;
    record.last_result = "issued";
    record.last_attempt = static_cast<std::int64_t>(std::time(nullptr));
    // A new certificate: no backoff, no revocation, and its ARI window is still unknown.
    record.failures = 0;
    record.next_attempt = 0;
    record.revoked = false;
    record.ari_renew_at = 0;
    record.ari_next_check = 0;
    Status saved = state_->save(record);
    if (!saved.ok()) {
      host.fail(saved);
      return;
    }
    host.record = record;
    host.outcome.result = HostOutcome::Result::kIssued;
    host.issued = true;
    host.outcome.serial = info->serial;
    host.outcome.not_after = info->not_after;
    logCore(LogLevel::kInfo, "issued serial " + info->serial);
    if (interrupted()) {
      host.fail(deadlineExceeded("interrupted before the deploy started"));
      return;
    }
    deploy(host);
  });
}

void Runner::adoptKeyStorePair(HostWork& work, const CertificateBundle& current) {
  // The key store is promoted before the state is saved: a run killed in between leaves a
  // current pair the state does not know yet. The pair wins; the host then gets deployed.
  Result<CertificateInfo> info = inspectChain(current.fullchain_pem);
  if (!info.ok() || (work.record && work.record->fingerprint == info->fingerprint)) {
    return;
  }
  HostRecord record = work.record.value_or(HostRecord{});
  record.host = work.host->target.name;
  record.names = joinNames(work.host->target.names);
  record.key_type = keyTypeName(work.host->key_type);
  record.serial = info->serial;
  record.not_before = info->not_before;
  record.not_after = info->not_after;
  record.fingerprint = info->fingerprint;
  record.ari_renew_at = 0;
  record.ari_next_check = 0;
  record.revoked = false;
  work.record = record;
  logging::HostScope scope(work.host->target.name);
  logCore(LogLevel::kInfo, "adopting serial " + info->serial + " from the key store");
}

Status Runner::openState() {
  Status private_state = makePrivateDirectory(pipeline_.state_directory);
  if (!private_state.ok()) {
    return private_state;
  }
  Result<std::unique_ptr<RunLock>> lock = RunLock::acquire(pipeline_.state_directory);
  if (!lock.ok()) {
    return lock.status();
  }
  lock_ = std::move(*lock);
  Result<std::unique_ptr<StateStore>> state = openSqliteStateStore(pipeline_.state_directory);
  if (!state.ok()) {
    return state.status();
  }
  state_ = std::move(*state);
  return {};
}

Status Runner::revokeHost(const std::string& host_name, RevocationReason reason) {
  if (pipeline_.host(host_name) == nullptr) {
    return invalidArgument("host '" + host_name + "' is not in " + pipeline_.file.string());
  }
  Status opened = openState();
  if (!opened.ok()) {
    return opened;
  }
  logging::HostScope scope(host_name);
  KeyStore keys(pipeline_.state_directory);
  Result<std::optional<CertificateBundle>> current = keys.current(host_name);
  Result<std::optional<HostRecord>> record = state_->find(host_name);
  if (!current.ok() || !record.ok()) {
    return !current.ok() ? current.status() : record.status();
  }
  if (!current->has_value() || !record->has_value()) {
    return notFound("host " + host_name + " has no certificate to revoke");
  }
  Status account = ca_->prepareAccount();
  if (!account.ok()) {
    return account;
  }
  Status revoked = ca_->revoke((*current)->leaf_pem, reason);
  if (!revoked.ok()) {
    return revoked.withContext("host " + host_name);
  }
  HostRecord updated = **record;
  updated.revoked = true;
  updated.last_result = "revoked";
  updated.last_attempt = static_cast<std::int64_t>(std::time(nullptr));
  logCore(LogLevel::kInfo, "revoked serial " + updated.serial + "; the next run replaces it");
  return state_->save(updated);
}

Status Runner::accountAction(const std::string& action) {
  Status opened = openState();
  if (!opened.ok()) {
    return opened;
  }
  Status account = ca_->prepareAccount();
  if (!account.ok()) {
    return account;
  }
  if (action == "rollover") {
    return ca_->rolloverAccountKey();
  }
  if (action == "deactivate") {
    return ca_->deactivateAccount();
  }
  return invalidArgument("account action must be rollover or deactivate, got '" + action + "'");
}

void Runner::refreshRenewalWindow(HostWork& work, std::int64_t now) {
  logging::HostScope scope(work.host->target.name);
  HostRecord& record = *work.record;
  Result<RenewalWindow> window = ca_->renewalInfo(work.current_leaf_pem);
  constexpr std::int64_t kDefaultRecheck = 6 * 3600;
  if (!window.ok()) {
    if (window.status().code() != StatusCode::kNotFound) {
      logCore(LogLevel::kWarn, "renewal information: " + window.status().message());
    }
    // No ARI from this CA (or no answer now): the lifetime rule decides; ask again later.
    record.ari_renew_at = 0;
    record.ari_next_check =
        now +
        (window.status().code() == StatusCode::kNotFound ? 4 * kDefaultRecheck : kDefaultRecheck);
  } else {
    // A moment picked at random inside the window spreads a fleet's renewals, as RFC 9773
    // asks; one already picked inside the same window is kept, so runs agree.
    bool keep = record.ari_renew_at >= window->start && record.ari_renew_at <= window->end &&
                record.ari_renew_at != 0;
    if (!keep) {
      std::int64_t span = std::max<std::int64_t>(window->end - window->start, 0);
      static thread_local std::mt19937_64 generator{std::random_device{}()};
      record.ari_renew_at =
          window->start +
          (span > 0 ? static_cast<std::int64_t>(generator() % static_cast<std::uint64_t>(span))
                    : 0);
    }
    record.ari_next_check = window->retry_after > now ? window->retry_after : now + kDefaultRecheck;
    logCore(LogLevel::kDebug, "renewal window " + std::to_string(window->start) + "-" +
                                  std::to_string(window->end) + ", renewing at " +
                                  std::to_string(record.ari_renew_at));
  }
  Status saved = state_->save(record);
  if (!saved.ok()) {
    logCore(LogLevel::kWarn, saved.message());
  }
}

void Runner::removeLeftoverRecords() {
  Result<std::vector<TxtRecord>> leftovers = state_->rememberedRecords();
  if (!leftovers.ok() || leftovers->empty()) {
    return;
  }
  logCore(LogLevel::kWarn, "removing " + std::to_string(leftovers->size()) +
                               " DNS-01 record(s) an earlier run could not remove");
  Status removed = dns_->cleanup(*leftovers);
  if (!removed.ok()) {
    logCore(LogLevel::kError, "dns cleanup of leftovers: " + removed.message());
    return;
  }
  Status forgotten = state_->forgetRecords(*leftovers);
  if (!forgotten.ok()) {
    logCore(LogLevel::kWarn, forgotten.message());
  }
}

bool Runner::inPlaceVerdict(HostWork& work) {
  logging::HostScope scope(work.host->target.name);
  KeyStore keys(pipeline_.state_directory);
  Result<std::optional<CertificateBundle>> current = keys.current(work.host->target.name);
  if (!current.ok() || !current->has_value()) {
    return false;
  }
  Result<bool> in_place = deploy_->isInPlace(
      work.host->target, pipeline_.settingsFor(*pipeline_.stage("deploy"), *work.host), **current);
  if (!in_place.ok()) {
    // Cannot tell: a host whose deploy is due gets it; one that is up to date is trusted.
    if (in_place.status().code() != StatusCode::kNotFound) {
      logCore(LogLevel::kWarn, "cannot compare the deployed files: " + in_place.status().message());
    }
    return !work.decision.deploy;
  }
  if (work.decision.deploy) {
    // The files may be there while the service still runs the old pair (a run killed
    // before its reload): deploy again, which reloads and verifies.
    return false;
  }
  if (!*in_place) {
    logCore(LogLevel::kInfo, "host does not hold its current pair: deploying it");
    work.outcome.detail = "host does not hold its current pair";
  }
  return *in_place;
}

Status Runner::deployAndConfirm(const HostWork& work, const CertificateBundle& bundle) {
  const HostConfig& host = *work.host;
  Status deployed =
      deploy_->deploy(host.target, pipeline_.settingsFor(*pipeline_.stage("deploy"), host), bundle);
  if (!deployed.ok()) {
    return deployed;
  }
  if (reload_ != nullptr) {
    work.stage("reload");
    Status reloaded =
        reload_->run(host.target, pipeline_.settingsFor(*pipeline_.stage("reload"), host), bundle);
    if (!reloaded.ok()) {
      return reloaded;
    }
  }
  if (verify_ != nullptr) {
    work.stage("verify");
    Status verified =
        verify_->run(host.target, pipeline_.settingsFor(*pipeline_.stage("verify"), host), bundle);
    if (!verified.ok()) {
      return verified;
    }
  }
  return {};
}

void Runner::deploy(HostWork& work) {
  logging::HostScope scope(work.host->target.name);
  KeyStore keys(pipeline_.state_directory);
  Result<std::optional<CertificateBundle>> current = keys.current(work.host->target.name);
  if (!current.ok() || !current->has_value()) {
    work.fail(current.ok() ? notFound("key store holds no current pair") : current.status());
    return;
  }
  const CertificateBundle& bundle = **current;
  // A mismatched pair would take the server down at its next reload.
  Status matches = checkKeyMatches(bundle.key_pem, bundle.leaf_pem);
  if (!matches.ok()) {
    work.fail(matches.withContext("refusing to deploy"));
    return;
  }

  Status confirmed = deployAndConfirm(work, bundle);
  if (!confirmed.ok()) {
    // Put back what the host served before, if the key store still has it.
    std::string failure = confirmed.message();
    Result<std::optional<CertificateBundle>> previous = keys.previous(work.host->target.name);
    if (previous.ok() && previous->has_value() && work.record &&
        !work.record->deployed_fingerprint.empty()) {
      Result<CertificateInfo> info = inspectChain((*previous)->fullchain_pem);
      if (info.ok() && info->fingerprint == work.record->deployed_fingerprint) {
        Status restored = deployAndConfirm(work, **previous);
        failure += restored.ok() ? "; rolled back to the previous certificate"
                                 : "; rollback failed too: " + restored.message();
      }
    }
    work.fail(Status(confirmed.code(), failure));
    return;
  }

  Result<CertificateInfo> info = inspectChain(bundle.fullchain_pem);
  if (!info.ok()) {
    work.fail(info.status());
    return;
  }
  HostRecord record = work.record.value_or(HostRecord{});
  record.deployed_fingerprint = info->fingerprint;
  work.record = record;
  if (work.outcome.result != HostOutcome::Result::kIssued) {
    work.outcome.result = HostOutcome::Result::kDeployed;
  }
  logCore(LogLevel::kInfo, "deployed serial " + info->serial + " and confirmed it is served");
  work.progress->finish(work.host->target.name, true);
}

}  // namespace certfleet
