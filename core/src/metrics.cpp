#include "metrics.hpp"

#include "key_store.hpp"
#include "renewal.hpp"

namespace certfleet {
namespace {

std::string escapeLabel(const std::string& value) {
  std::string escaped;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      escaped += '\\';
    }
    if (c == '\n') {
      escaped += "\\n";
      continue;
    }
    escaped += c;
  }
  return escaped;
}

}  // namespace

std::string renderMetrics(const std::string& pipeline,
                          const std::string& environment,
                          const std::vector<HostRecord>& records) {
  struct Gauge {
    const char* name;
    const char* help;
    std::int64_t (*value)(const HostRecord&);
  };
  static const Gauge kGauges[] = {
      {"certfleet_certificate_not_after_timestamp_seconds",
       "Expiry of the host's current certificate.",
       [](const HostRecord& r) { return r.not_after; }},
      {"certfleet_renewal_timestamp_seconds", "When the host's certificate becomes due.",
       [](const HostRecord& r) { return renewalAt(r); }},
      {"certfleet_certificate_deployed", "1 when the host serves its current certificate.",
       [](const HostRecord& r) {
         return std::int64_t{!r.fingerprint.empty() && r.fingerprint == r.deployed_fingerprint};
       }},
      {"certfleet_last_run_success", "1 when the host's last run succeeded.",
       [](const HostRecord& r) { return std::int64_t{r.last_result == "ok"}; }},
      {"certfleet_last_run_timestamp_seconds", "When the host was last attempted.",
       [](const HostRecord& r) { return r.last_attempt; }},
  };

  std::string text;
  for (const Gauge& gauge : kGauges) {
    text += std::string("# HELP ") + gauge.name + " " + gauge.help + "\n";
    text += std::string("# TYPE ") + gauge.name + " gauge\n";
    for (const HostRecord& record : records) {
      text += std::string(gauge.name) + "{pipeline=\"" + escapeLabel(pipeline) +
              "\",environment=\"" + escapeLabel(environment) + "\",host=\"" +
              escapeLabel(record.host) + "\"} " + std::to_string(gauge.value(record)) + "\n";
    }
  }
  return text;
}

Status writeMetrics(const std::filesystem::path& file, const std::string& text) {
  return writeFileAtomically(file, text, 0644).withContext("metrics");
}

}  // namespace certfleet
