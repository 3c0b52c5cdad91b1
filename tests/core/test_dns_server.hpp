// A BIND9 server a test owns: its own zones (with the NS, CNAME and CAA records the local
// environment's TSIG key may not add), on a loopback address of its choosing. Two servers
// on 127.0.0.2 and 127.0.0.3 can share a port, as the authoritative servers of one zone do
// on port 53. named only listens on addresses an interface holds, and lo holds 127.0.0.1
// alone; enterPrivateLoopback() gives the test a network of its own where lo holds more.
//
//   ASSERT_EQ(TestDnsServer::enterPrivateLoopback({"127.0.0.2", "127.0.0.3"}), "");
//   TestDnsServer::Zones zones = {{"lab.test", "@ SOA ...\n@ NS ns1.lab.test.\n..."}};
//   std::uint16_t port = TestDnsServer::freePort({"127.0.0.2", "127.0.0.3"});
//   TestDnsServer first("127.0.0.2", port, zones);
//   ASSERT_TRUE(first.start()) << first.log();
//   first.update({"add _acme-challenge.web1.lab.test 60 TXT \"v\""}, "lab.test");
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <sys/types.h>

namespace certfleet::testing {

class TestDnsServer {
 public:
  // Zone name -> the zone file's records ($TTL is added). Every zone takes TSIG-signed
  // updates of TXT records from key() only.
  using Zones = std::map<std::string, std::string>;

  TestDnsServer(std::string address, std::uint16_t port, Zones zones);
  ~TestDnsServer();  // stops the server by its pid and removes its folder
  TestDnsServer(const TestDnsServer&) = delete;
  TestDnsServer& operator=(const TestDnsServer&) = delete;

  // The named binary (the local environment's copy when it made one), or "" without BIND.
  static std::string namedBinary();

  // Moves this process into a network namespace of its own (which the servers it starts
  // inherit) whose lo holds `addresses` too. Nothing there can reach any other network, the
  // local environment included. Returns why it could not (it needs CAP_SYS_ADMIN), or "".
  static std::string enterPrivateLoopback(const std::vector<std::string>& addresses);

  // A port free for UDP and TCP on every one of `addresses`.
  static std::uint16_t freePort(const std::vector<std::string>& addresses);

  // Writes the configuration, starts named in the foreground and waits until every zone
  // answers its SOA. False when it does not within 10 s; log() then says why.
  bool start();

  // Sends one nsupdate script (`lines` between "zone" and "send") signed with the key.
  // Returns nsupdate's output; empty on success.
  std::string update(const std::vector<std::string>& lines, const std::string& zone) const;

  // The TXT strings served at `name`, asked without recursion.
  std::vector<std::string> txt(const std::string& name) const;

  std::string endpoint() const;  // "127.0.0.2:5300"
  const std::string& address() const { return address_; }
  std::uint16_t port() const { return port_; }
  std::string log() const;

 private:
  std::string address_;
  std::uint16_t port_;
  Zones zones_;
  std::string directory_;
  std::string secret_;
  pid_t pid_ = -1;
};

// Runs a shell command, returning its exit status and output (stdout and stderr).
int runCommand(const std::string& command, std::string* output);

}  // namespace certfleet::testing
