#include "caa.hpp"

#include <algorithm>
#include <cctype>

namespace certfleet {
namespace {

// RFC 8659 section 4.1: bit 0 (the most significant) of the flags octet.
constexpr std::uint8_t kCriticalFlag = 0x80;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string trim(const std::string& text) {
  std::size_t first = text.find_first_not_of(" \t");
  if (first == std::string::npos) {
    return "";
  }
  std::size_t last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

// The issuer domain name of an issue or issuewild value: what comes before the first ';',
// without the blanks around it. Empty means no CA at all (RFC 8659 4.2: `issue ";"`).
std::string issuerOf(const std::string& value) {
  return normalizeName(trim(value.substr(0, value.find(';'))));
}

bool knownTag(const std::string& tag) {
  return tag == "issue" || tag == "issuewild" || tag == "iodef";
}

std::string joinRecords(const std::vector<CaaRecord>& records) {
  std::string text;
  for (const CaaRecord& record : records) {
    text += (text.empty() ? "CAA " : ", CAA ") + formatCaa(record);
  }
  return text;
}

}  // namespace

std::string formatCaa(const CaaRecord& record) {
  std::string value;
  for (char c : record.value) {
    if (c == '"' || c == '\\') {
      value += '\\';
    }
    value += c;
  }
  return std::to_string(record.flags) + " " + record.tag + " \"" + value + "\"";
}

CaaDecision evaluateCaa(const std::vector<CaaRecord>& records,
                        const std::string& identity,
                        bool wildcard) {
  CaaDecision decision;
  for (const CaaRecord& record : records) {
    if ((record.flags & kCriticalFlag) != 0 && !knownTag(lower(record.tag))) {
      decision.allowed = false;
      decision.deciding = {record};
      decision.reason = "is critical and not understood, so no CA may issue";
      return decision;
    }
  }

  std::vector<CaaRecord> issue;
  std::vector<CaaRecord> issuewild;
  for (const CaaRecord& record : records) {
    std::string tag = lower(record.tag);
    if (tag == "issue") {
      issue.push_back(record);
    } else if (tag == "issuewild") {
      issuewild.push_back(record);
    }
  }
  // issuewild speaks for wildcards only, and only when present; otherwise issue does.
  const std::vector<CaaRecord>& deciding = wildcard && !issuewild.empty() ? issuewild : issue;
  if (deciding.empty()) {
    return decision;
  }
  std::string wanted = normalizeName(identity);
  bool named = std::any_of(deciding.begin(), deciding.end(), [&](const CaaRecord& record) {
    std::string issuer = issuerOf(record.value);
    return !issuer.empty() && issuer == wanted;
  });
  if (!named) {
    decision.allowed = false;
    decision.deciding = deciding;
    decision.reason = "does not allow " + wanted;
  }
  return decision;
}

Result<RelevantCaa> findRelevantCaa(const DnsLookup& lookup, const std::string& name) {
  std::string base = normalizeName(name);
  if (base.rfind("*.", 0) == 0) {
    base = base.substr(2);
  }
  bool answered = false;
  for (std::string current = base; !current.empty();) {
    Result<std::vector<CaaRecord>> records = lookup.caaRecords(current);
    if (!records.ok()) {
      // A resolver that is really an authoritative server refuses the names above its
      // zones. Once it has answered for a name below, those hold nothing it could tell.
      if (answered && records.status().code() == StatusCode::kPermissionDenied) {
        break;
      }
      return records.status();
    }
    answered = true;
    if (!records->empty()) {
      return RelevantCaa{current, std::move(*records)};
    }
    std::size_t dot = current.find('.');
    current = dot == std::string::npos ? "" : current.substr(dot + 1);
  }
  return RelevantCaa{};
}

Status checkCaa(const DnsLookup& lookup, const std::string& name, const std::string& identity) {
  Result<RelevantCaa> relevant = findRelevantCaa(lookup, name);
  if (!relevant.ok()) {
    return relevant.status().withContext(name + ": CAA check");
  }
  bool wildcard = name.rfind("*.", 0) == 0;
  CaaDecision decision = evaluateCaa(relevant->records, identity, wildcard);
  if (decision.allowed) {
    return {};
  }
  return failedPrecondition(name + ": " + joinRecords(decision.deciding) + " at " +
                            relevant->owner + " " + decision.reason);
}

}  // namespace certfleet
