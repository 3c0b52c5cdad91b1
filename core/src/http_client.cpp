#include "http_client.hpp"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include <curl/curl.h>

#ifndef CERTFLEET_VERSION
#define CERTFLEET_VERSION "unknown"
#endif

namespace certfleet {
namespace {

// A CA or a proxy answering with an endless body must not exhaust the orchestrator's memory;
// certificate chains and ACME objects are a few kilobytes.
constexpr std::size_t kMaxBodyBytes = std::size_t{16} * 1024 * 1024;

// curl_global_init is not thread-safe in every libcurl build, so it runs exactly once and
// its outcome is remembered for every later request.
CURLcode globalInit() {
  static std::once_flag once;
  static CURLcode result = CURLE_OK;
  std::call_once(once, [] { result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  return result;
}

struct EasyDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};

struct ListDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

struct Transfer {
  HttpResponse response;
  bool body_too_large = false;
};

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) {
    text.remove_prefix(1);
  }
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' ||
                           text.back() == '\n')) {
    text.remove_suffix(1);
  }
  return text;
}

std::string lowerCase(std::string_view text) {
  std::string lowered(text);
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lowered;
}

// libcurl's messages start with a capital ("Failed to connect ..."); ours do not. Acronyms
// such as "SSL" keep their case.
std::string houseCase(std::string_view message) {
  std::string text(message);
  if (text.size() >= 2 && std::isupper(static_cast<unsigned char>(text[0])) != 0 &&
      std::islower(static_cast<unsigned char>(text[1])) != 0) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

size_t onBody(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  size_t bytes = size * count;
  if (transfer->response.body.size() + bytes > kMaxBodyBytes) {
    transfer->body_too_large = true;
    return 0;
  }
  transfer->response.body.append(data, bytes);
  return bytes;
}

size_t onHeader(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  size_t bytes = size * count;
  std::string_view line(data, bytes);

  // Each status line starts a new response (an interim 1xx one, for example): only the
  // headers of the last response describe the body we return.
  if (line.rfind("HTTP/", 0) == 0) {
    transfer->response.headers.clear();
    return bytes;
  }

  // Obsolete line folding (RFC 9112 section 5.2) continues the previous header's value.
  if (!line.empty() && (line.front() == ' ' || line.front() == '\t')) {
    std::string_view continued = trim(line);
    if (!transfer->response.headers.empty() && !continued.empty()) {
      transfer->response.headers.back().second += " ";
      transfer->response.headers.back().second += continued;
    }
    return bytes;
  }

  std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    return bytes;
  }
  transfer->response.headers.emplace_back(lowerCase(trim(line.substr(0, colon))),
                                          std::string(trim(line.substr(colon + 1))));
  return bytes;
}

}  // namespace

HttpClient::HttpClient(std::string ca_bundle) : ca_bundle_(std::move(ca_bundle)) {}

Result<HttpResponse> HttpClient::send(const HttpRequest& request) const {
  const std::string what = request.method + " " + request.url;
  const bool with_body = request.method == "POST" || request.method == "PUT" ||
                         request.method == "PATCH" || request.method == "DELETE";
  if (request.method != "GET" && request.method != "HEAD" && !with_body) {
    return invalidArgument(what + ": unsupported method");
  }

  CURLcode init = globalInit();
  if (init != CURLE_OK) {
    return unavailable(what + ": " + curl_easy_strerror(init));
  }
  std::unique_ptr<CURL, EasyDeleter> handle(curl_easy_init());
  if (!handle) {
    return unavailable(what + ": cannot create a transfer handle");
  }
  CURL* curl = handle.get();

  // Most options fail only when memory runs out, which the transfer then reports; the
  // ones whose silent failure would weaken security are checked one by one.
  Transfer transfer;
  char error_buffer[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  // Signals cannot be used for timeouts in a multi-threaded process.
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "certfleet/" CERTFLEET_VERSION);
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &onBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &onHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);

  bool secured = curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
                 curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK &&
                 curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK &&
                 curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
  if (secured && !ca_bundle_.empty()) {
    secured = curl_easy_setopt(curl, CURLOPT_CAINFO, ca_bundle_.c_str()) == CURLE_OK;
  }
  if (!secured) {
    return unavailable(what + ": cannot enable peer verification");
  }

  if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (with_body) {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.data());
    // PUT, PATCH and DELETE go out as a POST transfer with another request method.
    if (request.method != "POST") {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
  } else {
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
  }

  curl_slist* raw_list = nullptr;
  for (const auto& [name, value] : request.headers) {
    // "Name;" is libcurl's spelling for a header sent with an empty value.
    std::string line = name;
    line += value.empty() ? ";" : ": ";
    line += value;
    curl_slist* appended = curl_slist_append(raw_list, line.c_str());
    if (appended == nullptr) {
      curl_slist_free_all(raw_list);
      return unavailable(what + ": out of memory for request headers");
    }
    raw_list = appended;
  }
  // A POST of more than a kilobyte would otherwise wait for "100 Continue" first.
  if (with_body) {
    curl_slist* appended = curl_slist_append(raw_list, "Expect:");
    if (appended == nullptr) {
      curl_slist_free_all(raw_list);
      return unavailable(what + ": out of memory for request headers");
    }
    raw_list = appended;
  }
  std::unique_ptr<curl_slist, ListDeleter> header_list(raw_list);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, header_list.get());

  CURLcode result = curl_easy_perform(curl);
  if (result != CURLE_OK) {
    if (transfer.body_too_large) {
      return unavailable(what + ": response body larger than " + std::to_string(kMaxBodyBytes) +
                         " bytes");
    }
    std::string reason = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(result);
    return unavailable(what + ": " + houseCase(trim(reason)));
  }

  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  transfer.response.status = status;
  return std::move(transfer.response);
}

}  // namespace certfleet
