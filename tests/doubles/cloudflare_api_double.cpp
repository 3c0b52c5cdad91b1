// A test double of Cloudflare's published v4 API, not Cloudflare: see the header.
#include "cloudflare_api_double.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

namespace certfleet::testing {
namespace {

using Json = nlohmann::json;

constexpr const char* kPrefix = "/client/v4";

std::string toLower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

std::string percentDecode(const std::string& text) {
  std::string decoded;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(text[i + 1]) != 0 &&
        std::isxdigit(text[i + 2]) != 0) {
      decoded += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else if (text[i] == '+') {
      decoded += ' ';
    } else {
      decoded += text[i];
    }
  }
  return decoded;
}

std::map<std::string, std::string> parseQuery(const std::string& query) {
  std::map<std::string, std::string> values;
  std::size_t start = 0;
  while (start <= query.size() && !query.empty()) {
    std::size_t end = query.find('&', start);
    std::string pair = query.substr(start, end == std::string::npos ? end : end - start);
    std::size_t equals = pair.find('=');
    if (!pair.empty()) {
      values[percentDecode(pair.substr(0, equals))] =
          equals == std::string::npos ? "" : percentDecode(pair.substr(equals + 1));
    }
    if (end == std::string::npos) {
      break;
    }
    start = end + 1;
  }
  return values;
}

Json envelope(bool success, Json result, Json errors = Json::array()) {
  return Json{{"success", success},
              {"errors", std::move(errors)},
              {"messages", Json::array()},
              {"result", std::move(result)}};
}

Json error(long code, const std::string& message) {
  return Json::array({Json{{"code", code}, {"message", message}}});
}

std::string reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 429:
      return "Too Many Requests";
    default:
      return "Status";
  }
}

Json recordJson(const CloudflareApiDouble::Record& record, const std::string& zone_name) {
  return Json{{"id", record.id},
              {"zone_id", record.zone_id},
              {"zone_name", zone_name},
              {"name", record.name},
              {"type", record.type},
              {"content", record.content},
              {"proxiable", false},
              {"proxied", false},
              {"ttl", record.ttl},
              {"locked", false},
              {"comment", nullptr},
              {"tags", Json::array()},
              {"meta", {{"auto_added", false}, {"source", "primary"}}}};
}

// Cloudflare's page arithmetic: 1-based pages, per_page bounded by the server.
template <typename T>
std::pair<std::vector<T>, Json> paginate(const std::vector<T>& all,
                                         const std::map<std::string, std::string>& query,
                                         std::size_t page_size) {
  long page = 1;
  long per_page = static_cast<long>(page_size);
  auto found = query.find("page");
  if (found != query.end()) {
    page = std::max(1L, std::atol(found->second.c_str()));
  }
  found = query.find("per_page");
  if (found != query.end()) {
    per_page = std::clamp(std::atol(found->second.c_str()), 1L, static_cast<long>(page_size));
  }
  long total = static_cast<long>(all.size());
  long total_pages = std::max(1L, (total + per_page - 1) / per_page);
  std::vector<T> slice;
  for (long i = (page - 1) * per_page; i < std::min(total, page * per_page); ++i) {
    slice.push_back(all[static_cast<std::size_t>(i)]);
  }
  Json info = {{"page", page},
               {"per_page", per_page},
               {"count", slice.size()},
               {"total_count", total},
               {"total_pages", total_pages}};
  return {slice, info};
}

}  // namespace

CloudflareApiDouble::CloudflareApiDouble(std::string token, std::size_t page_size)
    : token_(std::move(token)), page_size_(page_size) {}

CloudflareApiDouble::~CloudflareApiDouble() {
  stop();
}

bool CloudflareApiDouble::start() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) {
    return false;
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
    return false;
  }
  port_ = ntohs(address.sin_port);
  thread_ = std::thread([this] { serve(); });
  return true;
}

void CloudflareApiDouble::stop() {
  if (listen_fd_ < 0) {
    return;
  }
  stopping_ = true;
  // Wakes the blocked accept() with an error.
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (thread_.joinable()) {
    thread_.join();
  }
  ::close(listen_fd_);
  listen_fd_ = -1;
}

std::string CloudflareApiDouble::baseUrl() const {
  return "http://127.0.0.1:" + std::to_string(port_) + kPrefix;
}

void CloudflareApiDouble::addZone(Zone zone) {
  std::lock_guard<std::mutex> lock(mutex_);
  zones_.push_back(std::move(zone));
}

std::string CloudflareApiDouble::addRecord(const std::string& zone_id,
                                           const std::string& name,
                                           const std::string& content) {
  std::lock_guard<std::mutex> lock(mutex_);
  Record record{newId(), zone_id, "TXT", name, content, 300};
  records_.push_back(record);
  return record.id;
}

std::vector<std::string> CloudflareApiDouble::txtValues(const std::string& zone_id,
                                                        const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> values;
  for (const Record& record : records_) {
    if (record.zone_id == zone_id && record.type == "TXT" && record.name == name) {
      values.push_back(record.content);
    }
  }
  return values;
}

std::vector<CloudflareApiDouble::Record> CloudflareApiDouble::records() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return records_;
}

void CloudflareApiDouble::rateLimitNext(int count, int retry_after_seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  rate_limit_pending_ = count;
  retry_after_seconds_ = retry_after_seconds;
}

std::vector<std::string> CloudflareApiDouble::requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return requests_;
}

int CloudflareApiDouble::rateLimitedCount() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return rate_limited_;
}

std::string CloudflareApiDouble::newId() {
  char buffer[33];
  std::snprintf(buffer, sizeof(buffer), "%032lx", next_id_++);
  return buffer;
}

void CloudflareApiDouble::serve() {
  while (!stopping_) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_) {
        return;
      }
      continue;
    }
    handleConnection(fd);
    ::close(fd);
  }
}

void CloudflareApiDouble::handleConnection(int fd) {
  // A client that stalls must not stall the test for long.
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));

  std::string data;
  char buffer[8192];
  std::size_t header_end = std::string::npos;
  while (header_end == std::string::npos) {
    ssize_t count = ::recv(fd, buffer, sizeof(buffer), 0);
    if (count <= 0) {
      return;
    }
    data.append(buffer, static_cast<std::size_t>(count));
    header_end = data.find("\r\n\r\n");
  }

  std::string head = data.substr(0, header_end);
  std::string body = data.substr(header_end + 4);
  std::size_t line_end = head.find("\r\n");
  std::string request_line = head.substr(0, line_end);
  std::size_t first_space = request_line.find(' ');
  std::size_t second_space = request_line.find(' ', first_space + 1);
  if (first_space == std::string::npos || second_space == std::string::npos) {
    return;
  }
  std::string method = request_line.substr(0, first_space);
  std::string target = request_line.substr(first_space + 1, second_space - first_space - 1);

  std::map<std::string, std::string> headers;
  std::size_t position = line_end == std::string::npos ? head.size() : line_end + 2;
  while (position < head.size()) {
    std::size_t end = head.find("\r\n", position);
    std::string line = head.substr(position, end == std::string::npos ? end : end - position);
    std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      headers[toLower(line.substr(0, colon))] = value;
    }
    if (end == std::string::npos) {
      break;
    }
    position = end + 2;
  }

  std::size_t content_length = 0;
  if (headers.count("content-length") != 0) {
    content_length = static_cast<std::size_t>(std::stoul(headers["content-length"]));
  }
  while (body.size() < content_length) {
    ssize_t count = ::recv(fd, buffer, sizeof(buffer), 0);
    if (count <= 0) {
      return;
    }
    body.append(buffer, static_cast<std::size_t>(count));
  }

  Response response = route(method, target, headers, body);
  std::string text =
      "HTTP/1.1 " + std::to_string(response.status) + " " + reason(response.status) + "\r\n";
  text += "Content-Type: application/json\r\n";
  text += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
  text += "Connection: close\r\n";
  for (const auto& [name, value] : response.headers) {
    text += name + ": " + value + "\r\n";
  }
  text += "\r\n" + response.body;
  std::size_t sent = 0;
  while (sent < text.size()) {
    ssize_t count = ::send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL);
    if (count <= 0) {
      return;
    }
    sent += static_cast<std::size_t>(count);
  }
}

CloudflareApiDouble::Response CloudflareApiDouble::route(
    const std::string& method,
    const std::string& target,
    const std::map<std::string, std::string>& headers,
    const std::string& body) {
  std::lock_guard<std::mutex> lock(mutex_);
  requests_.push_back(method + " " + target);

  auto authorization = headers.find("authorization");
  if (authorization == headers.end() || authorization->second != "Bearer " + token_) {
    return {403, envelope(false, nullptr, error(10000, "Authentication error")).dump(), {}};
  }
  if (rate_limit_pending_ > 0) {
    --rate_limit_pending_;
    ++rate_limited_;
    return {429,
            envelope(false, nullptr,
                     error(971, "Please wait and consider throttling your request speed"))
                .dump(),
            {{"Retry-After", std::to_string(retry_after_seconds_)}}};
  }

  std::string path = target.substr(0, target.find('?'));
  std::map<std::string, std::string> query;
  if (target.find('?') != std::string::npos) {
    query = parseQuery(target.substr(target.find('?') + 1));
  }
  if (path.rfind(kPrefix, 0) != 0) {
    return {404, envelope(false, nullptr, error(7000, "No route for that URI")).dump(), {}};
  }
  path = path.substr(std::string(kPrefix).size());

  if (method == "GET" && path == "/zones") {
    return listZones(query);
  }
  const std::string zones_prefix = "/zones/";
  if (path.rfind(zones_prefix, 0) == 0) {
    std::string rest = path.substr(zones_prefix.size());
    std::string zone_id = rest.substr(0, rest.find('/'));
    std::string tail = rest.substr(zone_id.size());
    bool known = std::any_of(zones_.begin(), zones_.end(),
                             [&](const Zone& zone) { return zone.id == zone_id; });
    if (!known) {
      return {404,
              envelope(false, nullptr,
                       error(7003, "Could not route to " + path +
                                       ", perhaps your object identifier is invalid?"))
                  .dump(),
              {}};
    }
    if (method == "GET" && tail == "/dns_records") {
      return listRecords(zone_id, query);
    }
    if (method == "POST" && tail == "/dns_records") {
      return createRecord(zone_id, body);
    }
    if (method == "POST" && tail == "/dns_records/batch") {
      return batch(zone_id, body);
    }
  }
  return {
      405, envelope(false, nullptr, error(10405, "Method not allowed for this route")).dump(), {}};
}

CloudflareApiDouble::Response CloudflareApiDouble::listZones(
    const std::map<std::string, std::string>& query) {
  std::vector<Json> matching;
  for (const Zone& zone : zones_) {
    auto name = query.find("name");
    if (name != query.end() && toLower(name->second) != zone.name) {
      continue;
    }
    auto account = query.find("account.id");
    if (account != query.end() && account->second != zone.account_id) {
      continue;
    }
    matching.push_back(Json{{"id", zone.id},
                            {"name", zone.name},
                            {"status", zone.status},
                            {"paused", false},
                            {"type", "full"},
                            {"account", {{"id", zone.account_id}, {"name", "account"}}}});
  }
  auto [slice, info] = paginate(matching, query, page_size_);
  Json result = envelope(true, Json(slice));
  result["result_info"] = info;
  return {200, result.dump(), {}};
}

CloudflareApiDouble::Response CloudflareApiDouble::listRecords(
    const std::string& zone_id, const std::map<std::string, std::string>& query) {
  std::string zone_name;
  for (const Zone& zone : zones_) {
    if (zone.id == zone_id) {
      zone_name = zone.name;
    }
  }
  std::vector<Json> matching;
  for (const Record& record : records_) {
    if (record.zone_id != zone_id) {
      continue;
    }
    auto type = query.find("type");
    if (type != query.end() && type->second != record.type) {
      continue;
    }
    auto name = query.find("name");
    if (name != query.end() && toLower(name->second) != record.name) {
      continue;
    }
    matching.push_back(recordJson(record, zone_name));
  }
  auto [slice, info] = paginate(matching, query, page_size_);
  Json result = envelope(true, Json(slice));
  result["result_info"] = info;
  return {200, result.dump(), {}};
}

CloudflareApiDouble::Response CloudflareApiDouble::createRecord(const std::string& zone_id,
                                                                const std::string& body) {
  Json request = Json::parse(body, nullptr, false);
  if (request.is_discarded() || !request.is_object() || !request.contains("type") ||
      !request["type"].is_string() || !request.contains("name") || !request["name"].is_string() ||
      !request.contains("content") || !request["content"].is_string()) {
    return {400, envelope(false, nullptr, error(9207, "Request body is invalid.")).dump(), {}};
  }
  std::string zone_name;
  for (const Zone& zone : zones_) {
    if (zone.id == zone_id) {
      zone_name = zone.name;
    }
  }
  Record record;
  record.id = "";
  record.zone_id = zone_id;
  record.type = request["type"].get<std::string>();
  record.name = toLower(request["name"].get<std::string>());
  record.content = request["content"].get<std::string>();
  record.ttl = request.contains("ttl") && request["ttl"].is_number_integer()
                   ? request["ttl"].get<long>()
                   : 1;
  if (record.name != zone_name &&
      (record.name.size() <= zone_name.size() ||
       record.name.compare(record.name.size() - zone_name.size() - 1, zone_name.size() + 1,
                           "." + zone_name) != 0)) {
    return {400,
            envelope(false, nullptr,
                     error(1004, "DNS Validation Error: record name is not in the zone"))
                .dump(),
            {}};
  }
  if (record.ttl != 1 && (record.ttl < 60 || record.ttl > 86400)) {
    return {400,
            envelope(false, nullptr,
                     error(9021, "TTL must be between 60 and 86400 seconds, or 1 for Automatic."))
                .dump(),
            {}};
  }
  for (const Record& existing : records_) {
    if (existing.zone_id == zone_id && existing.type == record.type &&
        existing.name == record.name && existing.content == record.content) {
      return {400,
              envelope(false, nullptr, error(81058, "An identical record already exists.")).dump(),
              {}};
    }
  }
  record.id = newId();
  records_.push_back(record);
  return {200, envelope(true, recordJson(record, zone_name)).dump(), {}};
}

CloudflareApiDouble::Response CloudflareApiDouble::batch(const std::string& zone_id,
                                                         const std::string& body) {
  Json request = Json::parse(body, nullptr, false);
  if (request.is_discarded() || !request.is_object()) {
    return {400, envelope(false, nullptr, error(9207, "Request body is invalid.")).dump(), {}};
  }
  for (const char* unsupported : {"patches", "puts", "posts"}) {
    if (request.contains(unsupported) && !request[unsupported].empty()) {
      return {400,
              envelope(false, nullptr,
                       error(9999, std::string("the test double does not implement batch ") +
                                       unsupported))
                  .dump(),
              {}};
    }
  }

  // One transaction: every id must exist before anything is deleted.
  std::vector<std::string> ids;
  if (request.contains("deletes") && request["deletes"].is_array()) {
    for (const Json& entry : request["deletes"]) {
      std::string id = entry.is_object() && entry.contains("id") && entry["id"].is_string()
                           ? entry["id"].get<std::string>()
                           : "";
      bool exists = std::any_of(records_.begin(), records_.end(), [&](const Record& record) {
        return record.id == id && record.zone_id == zone_id;
      });
      if (!exists) {
        return {400, envelope(false, nullptr, error(81044, "Record does not exist.")).dump(), {}};
      }
      ids.push_back(id);
    }
  }
  Json deleted = Json::array();
  for (const std::string& id : ids) {
    auto found = std::find_if(records_.begin(), records_.end(),
                              [&](const Record& record) { return record.id == id; });
    deleted.push_back(recordJson(*found, ""));
    records_.erase(found);
  }
  Json result = {{"deletes", deleted},
                 {"patches", Json::array()},
                 {"puts", Json::array()},
                 {"posts", Json::array()}};
  return {200, envelope(true, result).dump(), {}};
}

}  // namespace certfleet::testing
