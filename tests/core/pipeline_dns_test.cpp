// The pipeline keys of propagation, challenge aliases and the CAA pre-check: what they read
// as, and how a wrong value is refused offline with its file, line and column.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "pipeline.hpp"

namespace certfleet {
namespace {

constexpr const char* kStages = R"(stages:
  key: { plugin: openssl }
  dns: { plugin: rfc2136 }
  ca:
    plugin: acme
    caa_identity: LetsEncrypt.org
  deploy: { plugin: sftp }
)";

class PipelineDnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = std::filesystem::temp_directory_path() /
                 ("certfleet-pipeline-dns-" + std::to_string(::getpid()) + "-" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(directory_);
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  Result<Pipeline> load(const std::string& text, const std::string& environment = "") {
    std::filesystem::path file = directory_ / "p.yaml";
    std::ofstream(file) << text;
    return loadPipeline(file, environment);
  }

  std::filesystem::path directory_;
};

TEST_F(PipelineDnsTest, ReadsPropagationAliasAndCaaKeys) {
  auto pipeline = load(std::string(kStages) + R"(challenge_alias: Alias.Example.test
propagation:
  resolvers: ["127.0.0.1:5300", "[::1]:53"]
  nameserver_port: 5300
  timeout: 30s
  settle: 1500ms
hosts:
  web1: { address: a, user: u, names: [web1.example.test] }
  web2: { address: a, user: u, names: [web2.example.test], challenge_alias: other.example.test }
  web3: { address: a, user: u, names: [web3.example.test], challenge_alias: "" }
)");
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().message();
  EXPECT_TRUE(pipeline->propagation.nameservers.empty());
  EXPECT_EQ(pipeline->propagation.resolvers,
            (std::vector<std::string>{"127.0.0.1:5300", "[::1]:53"}));
  EXPECT_EQ(pipeline->propagation.nameserver_port, 5300);
  EXPECT_EQ(pipeline->propagation.settle, std::chrono::milliseconds(1500));
  EXPECT_EQ(pipeline->caa_identity, "letsencrypt.org");
  // The pipeline's alias is the default; a host may name another or opt out.
  EXPECT_EQ(pipeline->host("web1")->challenge_alias, "alias.example.test");
  EXPECT_EQ(pipeline->host("web2")->challenge_alias, "other.example.test");
  EXPECT_EQ(pipeline->host("web3")->challenge_alias, "");
}

TEST_F(PipelineDnsTest, DefaultsAskNothingExtra) {
  auto pipeline = load(R"(stages:
  key: { plugin: openssl }
  dns: { plugin: rfc2136 }
  ca: { plugin: acme }
  deploy: { plugin: sftp }
hosts:
  web1: { address: a, user: u, names: [web1.example.test] }
)");
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().message();
  EXPECT_EQ(pipeline->propagation.nameserver_port, 53);
  EXPECT_EQ(pipeline->propagation.settle, std::chrono::milliseconds(0));
  EXPECT_TRUE(pipeline->propagation.resolvers.empty());
  EXPECT_EQ(pipeline->caa_identity, "");
  EXPECT_EQ(pipeline->hosts[0].challenge_alias, "");
}

TEST_F(PipelineDnsTest, AnEnvironmentCanSetTheAliasAndTheResolvers) {
  auto pipeline = load(std::string(kStages) + R"(hosts:
  web1: { address: a, user: u, names: [web1.example.test] }
environments:
  lab:
    challenge_alias: lab-alias.example.test
    propagation: { resolvers: [127.0.0.2] }
)",
                       "lab");
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().message();
  EXPECT_EQ(pipeline->hosts[0].challenge_alias, "lab-alias.example.test");
  EXPECT_EQ(pipeline->propagation.resolvers, std::vector<std::string>{"127.0.0.2"});
}

struct Refusal {
  std::string yaml;      // laid after kStages
  std::string location;  // ":LINE:COLUMN:"
  std::string words;
};

TEST_F(PipelineDnsTest, RefusesBadValuesWhereTheyAreWritten) {
  const std::string hosts = "hosts:\n  web1: { address: a, user: u, names: [w.example.test] }\n";
  // kStages is 7 lines, so the first line below is line 8.
  for (const Refusal& refusal : std::vector<Refusal>{
           {"propagation: { resolvers: [ns1.example.test] }\n" + hosts,
            ":8:28:", "'ns1.example.test' must be an IPv4 or IPv6 address"},
           {"propagation: { nameservers: [\"127.0.0.1:0\"] }\n" + hosts,
            ":8:30:", "nameserver '127.0.0.1:0'"},
           {"propagation: { nameserver_port: 70000 }\n" + hosts,
            ":8:33:", "nameserver_port must be 1-65535"},
           {"propagation: { settle: soon }\n" + hosts, ":8:24:", "settle must be a duration"},
           {"propagation: { resolver: [127.0.0.1] }\n" + hosts, ":8:16:", "unknown key 'resolver'"},
           {"challenge_alias: _acme-challenge.alias.example.test\n" + hosts,
            ":8:18:", "write the alias's own name"},
           {"challenge_alias: \"*.alias.example.test\"\n" + hosts, ":8:18:", "not a DNS name"},
           {"hosts:\n  web1: { address: a, user: u, names: [w.example.test], "
            "challenge_alias: \"not a name\" }\n",
            ":9:74:", "host 'web1': challenge_alias 'not a name' is not a DNS name"},
       }) {
    auto pipeline = load(std::string(kStages) + refusal.yaml);
    ASSERT_FALSE(pipeline.ok()) << refusal.yaml;
    EXPECT_EQ(pipeline.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(pipeline.status().message().find(refusal.location), std::string::npos)
        << pipeline.status().message();
    EXPECT_NE(pipeline.status().message().find(refusal.words), std::string::npos)
        << pipeline.status().message();
  }
}

TEST_F(PipelineDnsTest, CaaIdentityBelongsToTheCaStage) {
  auto misplaced = load(R"(stages:
  key: { plugin: openssl }
  dns: { plugin: rfc2136, caa_identity: letsencrypt.org }
  ca: { plugin: acme }
  deploy: { plugin: sftp }
hosts:
  web1: { address: a, user: u, names: [web1.example.test] }
)");
  ASSERT_FALSE(misplaced.ok());
  EXPECT_NE(misplaced.status().message().find(":3:41: caa_identity belongs in stage 'ca'"),
            std::string::npos)
      << misplaced.status().message();

  auto wrong = load(R"(stages:
  key: { plugin: openssl }
  dns: { plugin: rfc2136 }
  ca: { plugin: acme, caa_identity: "letsencrypt.org; accounturi=x" }
  deploy: { plugin: sftp }
hosts:
  web1: { address: a, user: u, names: [web1.example.test] }
)");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find(":4:37: caa_identity"), std::string::npos)
      << wrong.status().message();
}

}  // namespace
}  // namespace certfleet
