#include "acme_client.hpp"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <thread>
#include <utility>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "certificate_info.hpp"

namespace certfleet::acme {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr std::string_view kErrorPrefix = "urn:ietf:params:acme:error:";

// Pebble refuses 5% of nonces by default, and tests make it refuse half of them; twenty
// refusals in a row (one in a million at 50%) mean something else is wrong.
constexpr int kMaxNonceAttempts = 20;

// Transport failures, 5xx answers and serverInternal are tried this often in all, with a
// pause that starts here and doubles: enough to ride out a restarting CA or a lost
// connection, short enough that a CA that is really down fails the run quickly.
constexpr int kTransientAttempts = 3;
constexpr milliseconds kFirstBackoff{250};

// A CA that keeps answering "come back later" is waited for at most this many times per
// request, each wait as long as it asks for.
constexpr int kMaxThrottleWaits = 3;

// Enough for a burst of parallel requests; older nonces are the likeliest to have expired.
constexpr std::size_t kMaxPooledNonces = 32;

constexpr milliseconds kFirstPollInterval{50};
constexpr milliseconds kMaxPollInterval{2000};
constexpr milliseconds kMaxRequestTimeout{30000};
constexpr milliseconds kMinRequestTimeout{1000};

struct Problem {
  std::string type;  // short name for ACME's own types, the full URI otherwise
  std::string detail;
  std::string identifier;                // when the CA names one
  std::string see;                       // a page a human must visit (userActionRequired)
  std::vector<std::string> subproblems;  // "identifier: type: detail"
};

std::string stringAt(const Json& object, const char* key) {
  if (!object.is_object()) {
    return {};
  }
  auto found = object.find(key);
  if (found == object.end() || !found->is_string()) {
    return {};
  }
  return found->get<std::string>();
}

// CA texts often end with a period; ours never do.
std::string withoutFinalPeriod(std::string text) {
  while (!text.empty() && (text.back() == '.' || text.back() == ' ' || text.back() == '\n')) {
    text.pop_back();
  }
  return text;
}

std::optional<Problem> problemFrom(const Json& document) {
  std::string type = stringAt(document, "type");
  if (type.empty()) {
    return std::nullopt;
  }
  Problem problem;
  problem.type = type.rfind(kErrorPrefix, 0) == 0 ? type.substr(kErrorPrefix.size()) : type;
  problem.detail = withoutFinalPeriod(stringAt(document, "detail"));
  if (document.contains("identifier")) {
    problem.identifier = stringAt(document["identifier"], "value");
  }
  problem.see = stringAt(document, "instance");
  auto subproblems = document.find("subproblems");
  if (subproblems != document.end() && subproblems->is_array()) {
    for (const Json& sub : *subproblems) {
      std::optional<Problem> inner = problemFrom(sub);
      if (!inner) {
        continue;
      }
      std::string identifier =
          sub.contains("identifier") ? stringAt(sub["identifier"], "value") : std::string();
      problem.subproblems.push_back((identifier.empty() ? "" : identifier + ": ") + inner->type +
                                    ": " + inner->detail);
    }
  }
  return problem;
}

// A problem document answers a request that failed. The check looks at the media type and
// the status, not at the body alone: a challenge object has a "type" member too.
std::optional<Problem> problemOf(const HttpResponse& http, const Json& body) {
  std::string media_type = http.header("content-type").value_or("");
  if (http.status < 400 && media_type.find("problem+json") == std::string::npos) {
    return std::nullopt;
  }
  std::optional<Problem> problem = problemFrom(body);
  // RFC 8555 section 7.3.3: the terms a user must agree to may come as a Link instead.
  if (problem && problem->see.empty()) {
    std::vector<std::string> terms = linkTargets(http.headerValues("link"), "terms-of-service");
    if (!terms.empty()) {
      problem->see = terms.front();
    }
  }
  return problem;
}

// How a caller should treat a problem, following the retry rules of status.hpp.
StatusCode codeFor(const std::string& type, long http_status) {
  if (type == "rateLimited" || type == "serverInternal" || type == "badNonce" || type == "dns" ||
      type == "connection" || http_status >= 500) {
    return StatusCode::kUnavailable;
  }
  if (type == "malformed" || type == "badCSR" || type == "rejectedIdentifier" ||
      type == "unsupportedIdentifier" || type == "invalidContact" || type == "unsupportedContact" ||
      type == "badSignatureAlgorithm" || type == "badPublicKey" || type == "compound") {
    return StatusCode::kInvalidArgument;
  }
  if (type == "unauthorized" || type == "caa" || type == "accountDoesNotExist" ||
      type == "externalAccountRequired" || type == "userActionRequired" ||
      type == "incorrectResponse" || type == "tls") {
    return StatusCode::kPermissionDenied;
  }
  return StatusCode::kFailedPrecondition;
}

// "type: detail; sub-identifier: type: detail; see URL", without the caller's context.
std::string describe(const Problem& problem) {
  std::string message = problem.type;
  if (!problem.identifier.empty()) {
    message += ": " + problem.identifier;
  }
  if (!problem.detail.empty()) {
    message += ": " + problem.detail;
  }
  for (const std::string& sub : problem.subproblems) {
    message += "; " + sub;
  }
  if (!problem.see.empty()) {
    message += "; see " + problem.see;
  }
  return message;
}

Status problemStatus(const Problem& problem, long http_status, const std::string& what) {
  return {codeFor(problem.type, http_status), what + ": " + describe(problem)};
}

bool isValidNonce(const std::string& nonce) {
  return !nonce.empty() && std::all_of(nonce.begin(), nonce.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

// Retry-After as delay-seconds or an HTTP date (RFC 9110 section 10.2.3).
std::optional<milliseconds> retryAfter(const HttpResponse& response) {
  std::optional<std::string> value = response.header("retry-after");
  if (!value || value->empty()) {
    return std::nullopt;
  }
  if (std::all_of(value->begin(), value->end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (value->size() > 7) {
      return std::chrono::hours(24 * 365);
    }
    return std::chrono::seconds(std::stol(*value));
  }
  std::tm when{};
  const char* end = ::strptime(value->c_str(), "%a, %d %b %Y %H:%M:%S GMT", &when);
  if (end == nullptr || *end != '\0') {
    return std::nullopt;
  }
  auto at = std::chrono::system_clock::from_time_t(::timegm(&when));
  auto delay = std::chrono::duration_cast<milliseconds>(at - std::chrono::system_clock::now());
  return std::max(delay, milliseconds(0));
}

std::int64_t unixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string seconds(milliseconds duration) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1fs", static_cast<double>(duration.count()) / 1000.0);
  return text;
}

std::string joined(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& name : names) {
    text += (text.empty() ? "" : ",") + name;
  }
  return text;
}

// The SDK's view of one authorization object fetched from `url`.
Result<Authorization> authorizationFrom(const Json& object,
                                        const std::string& url,
                                        const std::string& thumbprint) {
  Authorization authorization;
  std::string value =
      object.contains("identifier") ? stringAt(object["identifier"], "value") : std::string();
  if (value.empty()) {
    return internalError("authorization " + url + " has no identifier");
  }
  bool wildcard = object.contains("wildcard") && object["wildcard"].is_boolean() &&
                  object["wildcard"].get<bool>();
  authorization.identifier = (wildcard ? "*." : "") + value;
  authorization.url = url;
  authorization.already_valid = stringAt(object, "status") == "valid";

  std::string token;
  auto challenges = object.find("challenges");
  if (challenges != object.end() && challenges->is_array()) {
    for (const Json& challenge : *challenges) {
      if (stringAt(challenge, "type") == "dns-01") {
        authorization.challenge_url = stringAt(challenge, "url");
        token = stringAt(challenge, "token");
        break;
      }
    }
  }
  // A reused valid authorization may list only the challenge that once proved it.
  if ((authorization.challenge_url.empty() || token.empty()) && !authorization.already_valid) {
    return failedPrecondition("authorization " + authorization.identifier +
                              ": the CA offers no dns-01 challenge");
  }
  authorization.record.fqdn = "_acme-challenge." + value;
  if (!token.empty()) {
    authorization.record.value = dns01Value(token, thumbprint);
  }
  return authorization;
}

Result<std::string> csrDer(const std::string& csr_pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(csr_pem.data(), static_cast<int>(csr_pem.size())), &BIO_free);
  if (!bio) {
    return internalError("read csr: out of memory");
  }
  std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> request(
      PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr), &X509_REQ_free);
  if (!request) {
    return invalidArgument("csr is not a PEM certificate request");
  }
  unsigned char* der = nullptr;
  int length = i2d_X509_REQ(request.get(), &der);
  if (length <= 0) {
    return internalError("csr cannot be encoded as DER");
  }
  std::string bytes(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
  OPENSSL_free(der);
  return bytes;
}

// The certificates of a PEM chain with LF line endings, in the order served (leaf first,
// RFC 8555 section 7.4.2), without anything around or between them.
Result<std::string> normalizedChain(const std::string& body) {
  std::string text;
  text.reserve(body.size());
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\r') {
      if (i + 1 < body.size() && body[i + 1] == '\n') {
        continue;
      }
      text += '\n';
      continue;
    }
    text += body[i];
  }

  static constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  static constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  std::string chain;
  std::size_t position = 0;
  for (;;) {
    std::size_t begin = text.find(kBegin, position);
    if (begin == std::string::npos) {
      break;
    }
    std::size_t end = text.find(kEnd, begin);
    if (end == std::string::npos) {
      return internalError("certificate chain: unterminated certificate");
    }
    position = end + kEnd.size();
    chain.append(text, begin, position - begin);
    chain += '\n';
  }
  if (chain.empty()) {
    return internalError("certificate chain: no certificate in the response");
  }
  return chain;
}

}  // namespace

AcmeClient::AcmeClient(ClientConfig config, Services& services)
    : config_(std::move(config)), services_(services) {}

// Asked for when needed, not at construction: the core creates the folder on first use,
// and configure(), which builds this client, must leave no trace.
AccountStore AcmeClient::accountStore() {
  return AccountStore(services_.stateDirectory());
}

void AcmeClient::log(LogLevel level, const std::string& message) {
  services_.log(level, message);
}

milliseconds AcmeClient::requestTimeout() {
  auto left = std::chrono::duration_cast<milliseconds>(services_.deadline() - steady_clock::now());
  return std::clamp(left, kMinRequestTimeout, kMaxRequestTimeout);
}

bool AcmeClient::pauseBeforeDeadline(milliseconds wait, LogLevel level, const std::string& why) {
  if (steady_clock::now() + wait >= services_.deadline()) {
    return false;
  }
  log(level, why + ", trying again in " + seconds(wait));
  std::this_thread::sleep_for(wait);
  return true;
}

Result<AcmeClient::Reply> AcmeClient::exchange(const RequestBuilder& build) {
  int nonce_refusals = 0;
  int transient_failures = 0;
  int throttle_waits = 0;
  milliseconds backoff = kFirstBackoff;
  for (;;) {
    Result<HttpRequest> request = build();
    if (!request.ok()) {
      return request.status();
    }
    request->timeout = requestTimeout();
    const std::string what = request->method + " " + request->url;
    Result<HttpResponse> response = services_.http(*request);
    if (!response.ok()) {
      if (response.status().code() == StatusCode::kUnavailable &&
          ++transient_failures < kTransientAttempts &&
          pauseBeforeDeadline(backoff, LogLevel::kWarn, response.status().message())) {
        backoff *= 2;
        continue;
      }
      return response.status();
    }
    keepNonce(*response);

    Reply reply{std::move(*response), Json()};
    std::string type = reply.http.header("content-type").value_or("");
    if (type.find("json") != std::string::npos) {
      reply.json = Json::parse(reply.http.body, nullptr, false);
      if (reply.json.is_discarded()) {
        reply.json = Json();
      }
    }
    const long status = reply.http.status;
    log(LogLevel::kDebug, what + ": " + std::to_string(status));

    std::optional<Problem> problem = problemOf(reply.http, reply.json);
    const std::string problem_type = problem ? problem->type : std::string();
    const std::string reason =
        problem ? describe(*problem) : "HTTP status " + std::to_string(status);
    if (problem_type == "badNonce") {
      if (++nonce_refusals < kMaxNonceAttempts) {
        log(LogLevel::kDebug, what + ": the CA refused the nonce, retrying with its new one");
        continue;
      }
      return unavailable(what + ": the CA refused " + std::to_string(kMaxNonceAttempts) +
                         " nonces in a row (badNonce)");
    }

    // "Come back later": waited for when the CA says how long and that fits in the run;
    // otherwise the caller learns when a later run can succeed, without a request more.
    bool throttled = problem_type == "rateLimited" || status == 429 || status == 503;
    std::optional<milliseconds> after = retryAfter(reply.http);
    if (throttled && after) {
      // A zero or tiny Retry-After must not turn into a tight loop.
      milliseconds wait = std::max(*after, backoff);
      if (++throttle_waits <= kMaxThrottleWaits &&
          pauseBeforeDeadline(wait, LogLevel::kInfo, what + ": " + reason)) {
        backoff *= 2;
        continue;
      }
      auto retry_at = unixNow() + std::chrono::duration_cast<std::chrono::seconds>(*after).count();
      return unavailable(reason + "; retry after " + formatRfc3339(retry_at));
    }
    if (problem_type == "rateLimited" || status == 429) {
      return reply;  // without Retry-After nobody knows when; the caller reports it
    }
    if ((problem_type == "serverInternal" || status >= 500) &&
        ++transient_failures < kTransientAttempts &&
        pauseBeforeDeadline(backoff, LogLevel::kWarn, what + ": " + reason)) {
      backoff *= 2;
      continue;
    }
    return reply;
  }
}

Result<AcmeClient::Directory> AcmeClient::directory() {
  std::lock_guard<std::mutex> lock(directory_mutex_);
  if (directory_) {
    return *directory_;
  }

  const std::string what = "directory " + config_.directory_url;
  Result<Reply> reply = exchange([this]() -> Result<HttpRequest> {
    HttpRequest request;
    request.method = "GET";
    request.url = config_.directory_url;
    return request;
  });
  if (!reply.ok()) {
    return reply.status().withContext(what);
  }
  const long status = reply->http.status;
  if (status != 200) {
    std::string message = what + ": HTTP status " + std::to_string(status);
    return status >= 500 || status == 429 ? unavailable(message) : failedPrecondition(message);
  }
  Json document = Json::parse(reply->http.body, nullptr, false);
  Directory found;
  found.new_nonce = stringAt(document, "newNonce");
  found.new_account = stringAt(document, "newAccount");
  found.new_order = stringAt(document, "newOrder");
  found.revoke_cert = stringAt(document, "revokeCert");
  found.key_change = stringAt(document, "keyChange");
  found.renewal_info = stringAt(document, "renewalInfo");
  if (found.new_nonce.empty() || found.new_account.empty() || found.new_order.empty()) {
    return failedPrecondition(what + ": not an ACME directory");
  }
  if (document.contains("meta") && document["meta"].is_object()) {
    const Json& meta = document["meta"];
    auto required = meta.find("externalAccountRequired");
    found.external_account_required =
        required != meta.end() && required->is_boolean() && required->get<bool>();
    auto profiles = meta.find("profiles");
    if (profiles != meta.end() && profiles->is_object()) {
      std::vector<std::string> names;
      for (const auto& [name, description] : profiles->items()) {
        names.push_back(name);
      }
      found.profiles = std::move(names);
    }
  }
  directory_ = found;
  return found;
}

Result<std::string> AcmeClient::takeNonce(const Directory& directory) {
  {
    std::lock_guard<std::mutex> lock(nonce_mutex_);
    if (!nonces_.empty()) {
      std::string nonce = std::move(nonces_.back());
      nonces_.pop_back();
      return nonce;
    }
  }

  Result<Reply> reply = exchange([&directory]() -> Result<HttpRequest> {
    HttpRequest request;
    request.method = "HEAD";
    request.url = directory.new_nonce;
    return request;
  });
  if (!reply.ok()) {
    return reply.status().withContext("new nonce");
  }
  // exchange() pooled the nonce of the answer; take it back out.
  std::string nonce = reply->http.header("replay-nonce").value_or("");
  if (reply->http.status >= 500) {
    return unavailable("new nonce: HTTP status " + std::to_string(reply->http.status));
  }
  if (!isValidNonce(nonce)) {
    return internalError("new nonce: no usable Replay-Nonce header");
  }
  std::lock_guard<std::mutex> lock(nonce_mutex_);
  auto pooled = std::find(nonces_.begin(), nonces_.end(), nonce);
  if (pooled != nonces_.end()) {
    nonces_.erase(pooled);
  }
  return nonce;
}

void AcmeClient::keepNonce(const HttpResponse& response) {
  std::optional<std::string> nonce = response.header("replay-nonce");
  if (!nonce || !isValidNonce(*nonce)) {
    return;
  }
  std::lock_guard<std::mutex> lock(nonce_mutex_);
  nonces_.push_back(std::move(*nonce));
  if (nonces_.size() > kMaxPooledNonces) {
    nonces_.erase(nonces_.begin());
  }
}

Result<AcmeClient::Reply> AcmeClient::post(const std::string& url,
                                           const std::optional<std::string>& payload,
                                           const Account& account,
                                           const std::string& accept) {
  Result<Directory> found = directory();
  if (!found.ok()) {
    return found.status();
  }
  return exchange([&]() -> Result<HttpRequest> {
    Result<std::string> nonce = takeNonce(*found);
    if (!nonce.ok()) {
      return nonce.status();
    }
    Result<std::string> jws = signJws(*account.key, url, *nonce, account.url, payload);
    if (!jws.ok()) {
      return jws.status();
    }
    HttpRequest request;
    request.method = "POST";
    request.url = url;
    request.headers.emplace_back("Content-Type", "application/jose+json");
    if (!accept.empty()) {
      request.headers.emplace_back("Accept", accept);
    }
    request.body = std::move(*jws);
    return request;
  });
}

Result<AcmeClient::Reply> AcmeClient::accountPost(const std::string& url,
                                                  const std::optional<std::string>& payload,
                                                  const std::string& what,
                                                  const std::string& accept,
                                                  const std::string& tolerated) {
  Result<Account> signer = account();
  if (!signer.ok()) {
    return signer.status();
  }

  for (int attempt = 0;; ++attempt) {
    Result<Reply> reply = post(url, payload, *signer, accept);
    if (!reply.ok()) {
      return reply.status().withContext(what);
    }

    std::optional<Problem> problem = problemOf(reply->http, reply->json);
    bool refused =
        problem && (problem->type == "accountDoesNotExist" || problem->type == "unauthorized");
    if (refused && attempt == 0) {
      Result<bool> renewed = renewStoredAccount(signer->url, problem->type);
      if (!renewed.ok()) {
        return renewed.status().withContext(what);
      }
      if (*renewed) {
        signer = account();
        if (!signer.ok()) {
          return signer.status();
        }
        continue;
      }
    }

    if (problem && !tolerated.empty() && problem->type == tolerated) {
      return reply;
    }
    if (problem) {
      return problemStatus(*problem, reply->http.status, what);
    }
    long status = reply->http.status;
    if (status < 200 || status >= 300) {
      std::string message = what + ": HTTP status " + std::to_string(status);
      return status >= 500 || status == 429 ? unavailable(message) : internalError(message);
    }

    std::lock_guard<std::mutex> lock(account_mutex_);
    if (account_url_ == signer->url) {
      account_from_store_ = false;
    }
    return reply;
  }
}

Result<bool> AcmeClient::renewStoredAccount(const std::string& refused_url,
                                            const std::string& reason) {
  std::lock_guard<std::mutex> lock(account_mutex_);
  if (!deactivated_url_.empty()) {
    return deactivatedError(deactivated_url_);
  }
  if (account_url_ != refused_url) {
    return true;  // another thread registered again or rolled the key over meanwhile
  }
  // Only an account URL read from disk and not yet used may be stale; a refusal of an
  // account that worked in this run is the CA's answer about the request.
  if (!account_from_store_ || registered_again_) {
    return false;
  }

  // A CA that was reset (Pebble keeps accounts in memory only) no longer knows the stored
  // account; registering the same key again gives a working one.
  log(LogLevel::kWarn, "the CA refused the stored account " + refused_url + " (" + reason +
                           "), registering the account key again");
  registered_again_ = true;
  Result<Directory> found = directory();
  if (!found.ok()) {
    return found.status();
  }
  Status registered = registerAccount(*found);
  if (!registered.ok()) {
    return registered;
  }
  return true;
}

Status AcmeClient::deactivatedError(const std::string& account_url) {
  return failedPrecondition("account " + account_url + " is deactivated; remove " +
                            accountStore().accountsPath().string() + " to register a new one");
}

Result<AcmeClient::Account> AcmeClient::account() {
  {
    std::lock_guard<std::mutex> lock(account_mutex_);
    if (!deactivated_url_.empty()) {
      return deactivatedError(deactivated_url_);
    }
    if (key_ && !account_url_.empty()) {
      return Account{key_, account_url_};
    }
  }
  Status prepared = prepareAccount();
  if (!prepared.ok()) {
    return prepared;
  }
  std::lock_guard<std::mutex> lock(account_mutex_);
  return Account{key_, account_url_};
}

Result<std::shared_ptr<const AccountKey>> AcmeClient::loadOrCreateKey() {
  AccountStore store = accountStore();
  const std::string path = store.keyPath().string();
  if (std::filesystem::exists(store.nextKeyPath())) {
    // TODO: find out from the CA which key it holds (newAccount with onlyReturnExisting)
    // and finish or undo the rollover; until then a human has to decide.
    log(LogLevel::kWarn,
        "an account key rollover was interrupted: if the CA accepted it, "
        "the account's key is now " +
            store.nextKeyPath().string() + ", not " + path);
  }
  Result<std::optional<Secret>> stored = store.readKey();
  if (!stored.ok()) {
    return stored.status().withContext("account key");
  }
  if (stored->has_value()) {
    Result<AccountKey> loaded = AccountKey::fromPem(**stored);
    if (!loaded.ok()) {
      return loaded.status().withContext(path);
    }
    if (loaded->kind() != config_.key_kind) {
      log(LogLevel::kWarn, "keeping the existing account key " + path + " (" + loaded->algorithm() +
                               "): account_key_type applies to a new key or a rollover only");
    }
    return std::make_shared<const AccountKey>(std::move(*loaded));
  }

  Result<AccountKey> generated = AccountKey::generate(config_.key_kind);
  if (!generated.ok()) {
    return generated.status();
  }
  Result<Secret> pem = generated->toPem();
  if (!pem.ok()) {
    return pem.status();
  }
  // Another process may have stored its key first; then that one is the account's.
  Result<Secret> on_disk = store.createKey(*pem);
  if (!on_disk.ok()) {
    return on_disk.status().withContext("account key");
  }
  Result<AccountKey> loaded = AccountKey::fromPem(*on_disk);
  if (!loaded.ok()) {
    return loaded.status().withContext(path);
  }
  log(LogLevel::kInfo, "created account key " + path);
  return std::make_shared<const AccountKey>(std::move(*loaded));
}

Status AcmeClient::prepareAccount() {
  Result<Directory> found = directory();
  if (!found.ok()) {
    return found.status();
  }

  // Held across registration on purpose: every other request needs the account anyway.
  std::lock_guard<std::mutex> lock(account_mutex_);
  if (!deactivated_url_.empty()) {
    return deactivatedError(deactivated_url_);
  }
  if (key_ && !account_url_.empty()) {
    return {};
  }

  // Checked before any key is made: a deactivated account cannot be used again, and
  // registering silently would hide that someone ended it on purpose.
  Result<std::optional<std::string>> deactivated =
      accountStore().deactivatedAccount(config_.directory_url);
  if (deactivated.ok() && deactivated->has_value()) {
    deactivated_url_ = **deactivated;
    return deactivatedError(deactivated_url_);
  }

  if (!key_) {
    Result<std::shared_ptr<const AccountKey>> key = loadOrCreateKey();
    if (!key.ok()) {
      return key.status();
    }
    key_ = std::move(*key);
  }

  Result<std::optional<std::string>> stored_url = accountStore().accountUrl(config_.directory_url);
  if (!stored_url.ok()) {
    log(LogLevel::kWarn, stored_url.status().message() + ", registering the account again");
  } else if (stored_url->has_value()) {
    account_url_ = **stored_url;
    account_from_store_ = true;
    log(LogLevel::kDebug, "using account " + account_url_);
    return {};
  }
  return registerAccount(*found);
}

Status AcmeClient::registerAccount(const Directory& directory) {
  const bool binding = !config_.eab_kid.empty();
  if (directory.external_account_required && !binding) {
    return failedPrecondition(
        "new account: the CA requires external account binding: set eab_kid and eab_hmac_key "
        "to the key ID and MAC key the CA issued for this account");
  }

  Json payload = {{"termsOfServiceAgreed", config_.terms_agreed}};
  if (!config_.email.empty()) {
    payload["contact"] = Json::array({"mailto:" + config_.email});
  }
  if (binding) {
    Result<std::string> eab = signExternalAccountBinding(config_.eab_kid, config_.eab_hmac_key,
                                                         directory.new_account, *key_);
    if (!eab.ok()) {
      return eab.status().withContext("new account");
    }
    payload["externalAccountBinding"] = Json::parse(*eab);
  }
  Result<Reply> reply = post(directory.new_account, payload.dump(), Account{key_, ""}, "");
  if (!reply.ok()) {
    return reply.status().withContext("new account");
  }
  std::optional<Problem> problem = problemOf(reply->http, reply->json);
  if (problem) {
    return problemStatus(*problem, reply->http.status, "new account");
  }
  long status = reply->http.status;
  std::string url = reply->http.header("location").value_or("");
  if (status != 200 && status != 201) {
    return internalError("new account: HTTP status " + std::to_string(status));
  }
  if (url.empty()) {
    return internalError("new account: no Location header");
  }
  if (stringAt(reply->json, "status") == "deactivated") {
    deactivated_url_ = url;
    return deactivatedError(url);
  }

  account_url_ = url;
  account_from_store_ = false;
  log(LogLevel::kInfo, (status == 201 ? "registered account " : "found account ") + url +
                           (binding ? " bound to external account " + config_.eab_kid : ""));
  Status saved = accountStore().saveAccountUrl(config_.directory_url, url);
  if (!saved.ok()) {
    // The CA finds the account by its key next time; only one request is lost.
    log(LogLevel::kWarn, "cannot remember the account: " + saved.message());
  }
  return {};
}

Result<Order> AcmeClient::newOrder(const std::vector<std::string>& names,
                                   const std::string& replaces_certificate_pem) {
  if (names.empty()) {
    return invalidArgument("new order: no names");
  }
  Result<Directory> found = directory();
  if (!found.ok()) {
    return found.status();
  }
  const std::string what = "new order for " + joined(names);

  // Checked here, not in configure(), which must stay offline.
  if (!config_.profile.empty()) {
    const std::vector<std::string> offered = found->profiles.value_or(std::vector<std::string>());
    if (std::find(offered.begin(), offered.end(), config_.profile) == offered.end()) {
      return invalidArgument(what + ": the CA does not offer the profile '" + config_.profile +
                             "' (" +
                             (offered.empty() ? std::string("it offers no profiles")
                                              : "it offers: " + joined(offered)) +
                             ")");
    }
  }

  Result<Account> signer = account();
  if (!signer.ok()) {
    return signer.status();
  }

  Json identifiers = Json::array();
  for (const std::string& name : names) {
    identifiers.push_back({{"type", "dns"}, {"value", name}});
  }
  Json payload = {{"identifiers", identifiers}};
  if (!config_.profile.empty()) {
    payload["profile"] = config_.profile;
  }
  if (!replaces_certificate_pem.empty() && !found->renewal_info.empty()) {
    Result<std::string> id = certificateId(replaces_certificate_pem);
    if (id.ok()) {
      payload["replaces"] = *id;
    } else {
      // Renewing without the hint only costs the CA's renewal bookkeeping.
      log(LogLevel::kWarn,
          what + ": not naming the replaced certificate: " + id.status().message());
    }
  }

  Result<Reply> reply = accountPost(found->new_order, payload.dump(), what, "", "alreadyReplaced");
  if (reply.ok() && payload.contains("replaces") && problemOf(reply->http, reply->json)) {
    // The old certificate was already renewed once (a run that failed after its order):
    // this order is a plain new one.
    log(LogLevel::kWarn, what +
                             ": the CA says the certificate was already replaced, "
                             "ordering without naming it");
    payload.erase("replaces");
    reply = accountPost(found->new_order, payload.dump(), what);
  }
  if (!reply.ok()) {
    return reply.status();
  }

  Order order;
  order.url = reply->http.header("location").value_or("");
  order.finalize_url = stringAt(reply->json, "finalize");
  order.names = names;
  if (order.url.empty() || order.finalize_url.empty()) {
    return internalError(what + ": the CA sent no order URL or finalize URL");
  }
  // A CA may hand back an existing order for the same names; an invalid one can never
  // become valid, so it is not used.
  if (stringAt(reply->json, "status") == "invalid") {
    std::optional<Problem> problem =
        reply->json.contains("error") ? problemFrom(reply->json["error"]) : std::nullopt;
    return failedPrecondition(what + ": the CA returned the invalid order " + order.url +
                              (problem ? " (" + describe(*problem) + ")" : std::string()) +
                              "; a later run places a new one");
  }
  auto authorizations = reply->json.find("authorizations");
  if (authorizations == reply->json.end() || !authorizations->is_array() ||
      authorizations->empty()) {
    return internalError(what + ": the CA sent no authorizations");
  }

  for (const Json& entry : *authorizations) {
    if (!entry.is_string()) {
      return internalError(what + ": an authorization URL is not a string");
    }
    const std::string url = entry.get<std::string>();
    Result<Reply> fetched = accountPost(url, std::nullopt, "authorization " + url);
    if (!fetched.ok()) {
      return fetched.status().withContext(what);
    }
    Result<Authorization> authorization =
        authorizationFrom(fetched->json, url, signer->key->thumbprint());
    if (!authorization.ok()) {
      return authorization.status().withContext(what);
    }
    order.authorizations.push_back(std::move(*authorization));
  }

  log(LogLevel::kInfo,
      "order " + order.url + " for " + joined(names) +
          (payload.contains("replaces") ? " replacing " + payload["replaces"].get<std::string>()
                                        : std::string()));
  return order;
}

Status AcmeClient::answerChallenge(const Authorization& authorization) {
  if (authorization.already_valid) {
    return {};
  }
  Result<Reply> reply = accountPost(authorization.challenge_url, std::string("{}"),
                                    "challenge for " + authorization.identifier);
  return reply.ok() ? Status() : reply.status();
}

Status AcmeClient::awaitAuthorization(const Authorization& authorization) {
  if (authorization.already_valid) {
    return {};
  }
  const std::string what = "authorization " + authorization.identifier;
  Result<Json> object = poll(authorization.url, what, [](const Json& current) {
    std::string status = stringAt(current, "status");
    return status != "pending" && status != "processing";
  });
  if (!object.ok()) {
    return object.status();
  }

  std::string status = stringAt(*object, "status");
  if (status == "valid") {
    log(LogLevel::kDebug, what + " is valid");
    return {};
  }
  // The reason sits on the challenge that failed, preferably ours.
  std::optional<Problem> reason;
  auto challenges = object->find("challenges");
  if (challenges != object->end() && challenges->is_array()) {
    for (const Json& challenge : *challenges) {
      if (!challenge.contains("error")) {
        continue;
      }
      std::optional<Problem> problem = problemFrom(challenge["error"]);
      if (problem && (!reason || stringAt(challenge, "type") == "dns-01")) {
        reason = problem;
      }
    }
  }
  if (reason) {
    return problemStatus(*reason, 0, what + ": " + status);
  }
  if (status == "invalid") {
    return permissionDenied(what + ": invalid, without a reason from the CA");
  }
  return failedPrecondition(what + ": " + (status.empty() ? "no status" : status));
}

Result<std::string> AcmeClient::finalize(const Order& order, const std::string& csr_pem) {
  const std::string what = "finalize order for " + joined(order.names);
  Result<std::string> der = csrDer(csr_pem);
  if (!der.ok()) {
    return der.status().withContext(what);
  }

  Json payload = {{"csr", base64url(*der)}};
  Result<Reply> reply = accountPost(order.finalize_url, payload.dump(), what, "", "orderNotReady");
  if (!reply.ok()) {
    return reply.status();
  }
  Json object = reply->json;
  std::string status = stringAt(object, "status");
  if (problemOf(reply->http, reply->json)) {
    // orderNotReady: a finalize sent again after a lost answer finds the order already
    // processing or valid; its current state decides.
    Result<Reply> current = accountPost(order.url, std::nullopt, what);
    if (!current.ok()) {
      return current.status();
    }
    object = current->json;
    status = stringAt(object, "status");
    if (status != "processing" && status != "valid") {
      return failedPrecondition(what + ": orderNotReady: the order is " +
                                (status.empty() ? "without status" : status));
    }
  }
  if (status == "processing" || status == "ready") {
    Result<Json> polled = poll(
        order.url, what,
        [](const Json& current) {
          std::string current_status = stringAt(current, "status");
          return current_status != "processing" && current_status != "ready";
        },
        retryAfter(reply->http));
    if (!polled.ok()) {
      return polled.status();
    }
    object = std::move(*polled);
    status = stringAt(object, "status");
  }

  if (status != "valid") {
    std::optional<Problem> problem =
        object.contains("error") ? problemFrom(object["error"]) : std::nullopt;
    if (problem) {
      return problemStatus(*problem, 0, what + ": order " + status);
    }
    return failedPrecondition(what + ": order is " + (status.empty() ? "without status" : status));
  }
  std::string certificate_url = stringAt(object, "certificate");
  if (certificate_url.empty()) {
    return internalError(what + ": valid order without a certificate URL");
  }

  const std::string download_what = "download certificate " + certificate_url;
  Result<Reply> download = accountPost(certificate_url, std::nullopt, download_what,
                                       "application/pem-certificate-chain");
  if (!download.ok()) {
    return download.status();
  }
  Result<std::string> chain = chooseChain(*download, download_what);
  if (!chain.ok()) {
    return chain.status();
  }
  log(LogLevel::kInfo, "certificate for " + joined(order.names) + " from " + certificate_url);
  return chain;
}

Result<std::string> AcmeClient::chooseChain(const Reply& download, const std::string& what) {
  Result<std::string> chain = normalizedChain(download.http.body);
  if (!chain.ok()) {
    return chain.status().withContext(what);
  }
  if (config_.preferred_chain.empty()) {
    return chain;
  }
  const std::string default_top = topIssuerCommonName(*chain);
  if (default_top == config_.preferred_chain) {
    return chain;
  }

  // RFC 8555 section 7.4.2: each alternate chain is a Link with rel="alternate".
  for (const std::string& url : linkTargets(download.http.headerValues("link"), "alternate")) {
    Result<Reply> alternate = accountPost(url, std::nullopt, "download alternate chain " + url,
                                          "application/pem-certificate-chain");
    if (!alternate.ok()) {
      return alternate.status();
    }
    Result<std::string> candidate = normalizedChain(alternate->http.body);
    if (!candidate.ok()) {
      return candidate.status().withContext("download alternate chain " + url);
    }
    if (topIssuerCommonName(*candidate) == config_.preferred_chain) {
      log(LogLevel::kInfo,
          "using the alternate chain " + url + " up to " + config_.preferred_chain);
      return candidate;
    }
  }
  log(LogLevel::kInfo, "no chain leads up to '" + config_.preferred_chain +
                           "', using the default one up to '" + default_top + "'");
  return chain;
}

Result<RenewalWindow> AcmeClient::renewalInfo(const std::string& certificate_pem) {
  Result<Directory> found = directory();
  if (!found.ok()) {
    return found.status();
  }
  if (found->renewal_info.empty()) {
    return notFound("renewal information: the CA offers none (no renewalInfo in " +
                    config_.directory_url + ")");
  }
  Result<std::string> id = certificateId(certificate_pem);
  if (!id.ok()) {
    return id.status().withContext("renewal information");
  }
  std::string url = found->renewal_info;
  if (url.back() != '/') {
    url += '/';
  }
  url += *id;
  const std::string what = "renewal information " + *id;

  Result<Reply> reply = exchange([&url]() -> Result<HttpRequest> {
    HttpRequest request;
    request.method = "GET";
    request.url = url;
    return request;
  });
  if (!reply.ok()) {
    return reply.status().withContext(what);
  }
  std::optional<Problem> problem = problemOf(reply->http, reply->json);
  if (problem) {
    return problemStatus(*problem, reply->http.status, what);
  }
  if (reply->http.status == 404) {
    return notFound(what + ": the CA does not know the certificate");
  }
  if (reply->http.status != 200) {
    return internalError(what + ": HTTP status " + std::to_string(reply->http.status));
  }

  RenewalWindow window;
  const Json& suggested = reply->json.is_object() && reply->json.contains("suggestedWindow")
                              ? reply->json["suggestedWindow"]
                              : Json();
  std::optional<std::int64_t> start = parseRfc3339(stringAt(suggested, "start"));
  std::optional<std::int64_t> end = parseRfc3339(stringAt(suggested, "end"));
  if (!start || !end) {
    return internalError(what + ": no suggestedWindow with RFC 3339 start and end");
  }
  if (*end < *start) {
    return internalError(what + ": the suggested window ends before it starts");
  }
  window.start = *start;
  window.end = *end;
  window.explanation_url = stringAt(reply->json, "explanationURL");
  std::optional<milliseconds> after = retryAfter(reply->http);
  if (after) {
    window.retry_after =
        unixNow() + std::chrono::duration_cast<std::chrono::seconds>(*after).count();
  }
  log(LogLevel::kDebug, what + ": renew between " + formatRfc3339(window.start) + " and " +
                            formatRfc3339(window.end));
  return window;
}

Status AcmeClient::revoke(const std::string& certificate_pem, RevocationReason reason) {
  Result<Directory> found = directory();
  if (!found.ok()) {
    return found.status();
  }
  if (found->revoke_cert.empty()) {
    return failedPrecondition("revoke: the CA's directory has no revokeCert");
  }
  Result<std::string> der = certificateDer(certificate_pem);
  if (!der.ok()) {
    return der.status().withContext("revoke");
  }
  Result<std::string> id = certificateId(certificate_pem);
  const std::string what = "revoke certificate " + (id.ok() ? *id : std::string("(no id)"));

  Json payload = {{"certificate", base64url(*der)}, {"reason", static_cast<std::uint32_t>(reason)}};
  Result<Reply> reply = accountPost(found->revoke_cert, payload.dump(), what, "", "alreadyRevoked");
  if (!reply.ok()) {
    return reply.status();
  }
  if (problemOf(reply->http, reply->json)) {
    log(LogLevel::kInfo, what + ": already revoked");
    return {};
  }
  log(LogLevel::kInfo, what + ": revoked");
  return {};
}

Status AcmeClient::rolloverAccountKey() {
  Result<Directory> found = directory();
  if (!found.ok()) {
    return found.status();
  }
  if (found->key_change.empty()) {
    return failedPrecondition("key rollover: the CA's directory has no keyChange");
  }
  Status prepared = prepareAccount();
  if (!prepared.ok()) {
    return prepared;
  }

  // Held throughout: no request may be signed with a key that is about to stop working.
  std::lock_guard<std::mutex> lock(account_mutex_);
  const std::string what = "key rollover of account " + account_url_;
  const std::shared_ptr<const AccountKey> old_key = key_;
  Result<AccountKey> generated = AccountKey::generate(config_.key_kind);
  if (!generated.ok()) {
    return generated.status().withContext(what);
  }
  auto new_key = std::make_shared<const AccountKey>(std::move(*generated));
  Result<Secret> new_pem = new_key->toPem();
  Result<Secret> old_pem = old_key->toPem();
  if (!new_pem.ok() || !old_pem.ok()) {
    return (new_pem.ok() ? old_pem.status() : new_pem.status()).withContext(what);
  }

  // The new key reaches the disk before the CA hears of it: once the CA switches, it is the
  // only key that works, and losing it to a crash would lose the account.
  AccountStore store = accountStore();
  Status saved = store.writeKeyFile(store.previousKeyPath(), *old_pem);
  if (saved.ok()) {
    saved = store.writeKeyFile(store.nextKeyPath(), *new_pem);
  }
  auto clean = [&store] {
    store.removeFile(store.nextKeyPath());
    store.removeFile(store.previousKeyPath());
  };
  if (!saved.ok()) {
    clean();
    return saved.withContext(what);
  }

  Result<std::string> inner = signKeyChange(*new_key, found->key_change, account_url_, *old_key);
  if (!inner.ok()) {
    clean();
    return inner.status().withContext(what);
  }
  Result<Reply> reply = post(found->key_change, *inner, Account{old_key, account_url_}, "");
  if (!reply.ok()) {
    clean();
    return reply.status().withContext(what);
  }
  std::optional<Problem> problem = problemOf(reply->http, reply->json);
  if (problem || reply->http.status < 200 || reply->http.status >= 300) {
    clean();
    return problem ? problemStatus(*problem, reply->http.status, what)
                   : internalError(what + ": HTTP status " + std::to_string(reply->http.status));
  }

  Status moved = store.moveFile(store.nextKeyPath(), store.keyPath());
  if (!moved.ok()) {
    return failedPrecondition(what + ": the CA now holds the new key, but " + moved.message() +
                              ": move it into place by hand");
  }
  store.removeFile(store.previousKeyPath());
  key_ = new_key;
  log(LogLevel::kInfo,
      "rolled over the key of account " + account_url_ + " (now " + new_key->algorithm() + ")");
  return {};
}

Status AcmeClient::deactivateAccount() {
  Result<Account> signer = account();
  if (!signer.ok()) {
    return signer.status();
  }
  const std::string what = "deactivate account " + signer->url;
  Json payload = {{"status", "deactivated"}};
  Result<Reply> reply = accountPost(signer->url, payload.dump(), what);
  if (!reply.ok()) {
    return reply.status();
  }

  std::lock_guard<std::mutex> lock(account_mutex_);
  deactivated_url_ = signer->url;
  AccountStore store = accountStore();
  Status saved = store.saveDeactivated(config_.directory_url, signer->url);
  // The CA refuses this key for good: keep it aside so that a new account gets a new key.
  Status retired = store.moveFile(store.keyPath(), store.retiredKeyPath());
  key_.reset();
  account_url_.clear();
  log(LogLevel::kInfo, "deactivated account " + signer->url);
  if (!saved.ok()) {
    return saved.withContext(what + " (done at the CA)");
  }
  return retired.ok() ? Status() : retired.withContext(what + " (done at the CA)");
}

Result<Json> AcmeClient::poll(const std::string& url,
                              const std::string& what,
                              const std::function<bool(const Json&)>& settled,
                              std::optional<milliseconds> first_wait) {
  const auto start = steady_clock::now();
  const auto stop = std::min(start + config_.poll_timeout, services_.deadline());
  milliseconds interval = kFirstPollInterval;
  if (first_wait) {
    if (start + *first_wait > stop) {
      return deadlineExceeded(what + ": the CA asks to poll after " + seconds(*first_wait) +
                              ", past the poll timeout or the run's deadline");
    }
    std::this_thread::sleep_for(*first_wait);
  }
  for (;;) {
    Result<Reply> reply = accountPost(url, std::nullopt, what);
    if (!reply.ok()) {
      return reply.status();
    }
    if (settled(reply->json)) {
      return std::move(reply->json);
    }

    auto now = steady_clock::now();
    std::string status = stringAt(reply->json, "status");
    auto still = [&] {
      return what + ": still " + (status.empty() ? "unsettled" : status) + " after " +
             seconds(std::chrono::duration_cast<milliseconds>(now - start));
    };
    if (now >= stop) {
      return deadlineExceeded(still());
    }
    std::optional<milliseconds> after = retryAfter(reply->http);
    milliseconds wait = after ? std::max(*after, kFirstPollInterval) : interval;
    if (after && now + wait > stop) {
      // Polling earlier than the CA asks is impolite, and waiting past the limit useless.
      return deadlineExceeded(still() + "; the CA asks to poll again after " + seconds(wait) +
                              ", past the poll timeout or the run's deadline");
    }
    std::this_thread::sleep_for(std::min<steady_clock::duration>(wait, stop - now));
    interval = std::min(interval * 3 / 2, kMaxPollInterval);
  }
}

}  // namespace certfleet::acme
