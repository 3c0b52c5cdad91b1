// A TEST DOUBLE of Cloudflare's published v4 API - not Cloudflare, and no substitute for
// trying a plugin against the real service.
//
// It serves, over plain HTTP/1.1 on 127.0.0.1, exactly the endpoints the dns/cloudflare
// plugin calls, shaped as Cloudflare documents them at
// https://developers.cloudflare.com/api/ (envelope {success, errors, messages, result,
// result_info}):
//
//   GET  /client/v4/zones?name=&account.id=&page=&per_page=
//   GET  /client/v4/zones/{zone_id}/dns_records?type=&name=&page=&per_page=
//   POST /client/v4/zones/{zone_id}/dns_records
//   POST /client/v4/zones/{zone_id}/dns_records/batch   (`deletes` only)
//
// Where it differs on purpose: pages hold at most `page_size` entries (2 by default, far
// below Cloudflare's minimum) so that a few zones or records already span several pages,
// and it answers 429 with Retry-After on demand. Every request must carry
// `Authorization: Bearer <token>`; anything else gets 403 with error 10000.
//
//   CloudflareApiDouble api("test-token");
//   ASSERT_TRUE(api.start());
//   api.addZone({"023e105f4ecef8ad9ca31a8372d0c353", "example.test", "active", "acct1"});
//   settings.set("base_url", api.baseUrl());
#pragma once

#include <atomic>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace certfleet::testing {

class CloudflareApiDouble {
 public:
  struct Zone {
    std::string id;
    std::string name;
    std::string status = "active";
    std::string account_id;
  };

  struct Record {
    std::string id;
    std::string zone_id;
    std::string type;
    std::string name;
    std::string content;
    long ttl = 1;
  };

  explicit CloudflareApiDouble(std::string token, std::size_t page_size = 2);
  ~CloudflareApiDouble();
  CloudflareApiDouble(const CloudflareApiDouble&) = delete;
  CloudflareApiDouble& operator=(const CloudflareApiDouble&) = delete;

  // Listens on an ephemeral port of 127.0.0.1; false when that fails.
  bool start();
  void stop();

  // "http://127.0.0.1:PORT/client/v4"
  std::string baseUrl() const;

  void addZone(Zone zone);
  // Adds a record as another client would have; returns its id.
  std::string addRecord(const std::string& zone_id,
                        const std::string& name,
                        const std::string& content);

  // The TXT records of `name` in a zone, content only, in creation order.
  std::vector<std::string> txtValues(const std::string& zone_id, const std::string& name) const;
  std::vector<Record> records() const;

  // The next `count` requests get 429 with `Retry-After: retry_after_seconds`.
  void rateLimitNext(int count, int retry_after_seconds);

  // "METHOD TARGET" of every request so far, in order, and how many got a 429.
  std::vector<std::string> requests() const;
  int rateLimitedCount() const;

 private:
  struct Response {
    int status = 200;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
  };

  void serve();
  void handleConnection(int fd);
  Response route(const std::string& method,
                 const std::string& target,
                 const std::map<std::string, std::string>& headers,
                 const std::string& body);
  Response listZones(const std::map<std::string, std::string>& query);
  Response listRecords(const std::string& zone_id, const std::map<std::string, std::string>& query);
  Response createRecord(const std::string& zone_id, const std::string& body);
  Response batch(const std::string& zone_id, const std::string& body);
  std::string newId();

  const std::string token_;
  const std::size_t page_size_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mutex_;
  std::vector<Zone> zones_;
  std::vector<Record> records_;
  std::vector<std::string> requests_;
  int rate_limit_pending_ = 0;
  int retry_after_seconds_ = 1;
  int rate_limited_ = 0;
  unsigned long next_id_ = 1;
};

}  // namespace certfleet::testing
