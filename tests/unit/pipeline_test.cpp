#include "pipeline.hpp"

#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

#include "logging.hpp"

namespace certfleet {
namespace {

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = std::filesystem::temp_directory_path() /
                 ("certfleet-pipeline-" + std::to_string(::getpid()) + "-" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(directory_);
  }
  void TearDown() override { std::filesystem::remove_all(directory_); }

  std::filesystem::path write(const std::string& text, const std::string& name = "p.yaml") {
    std::filesystem::path file = directory_ / name;
    std::ofstream(file) << text;
    return file;
  }

  std::filesystem::path directory_;
};

constexpr const char* kValid = R"(version: 1
name: shop
state_dir: state
stages:
  key: { plugin: openssl }
  dns:
    plugin: rfc2136
    settings:
      server: 127.0.0.1:5300
      tsig_secret: ${file:tsig.secret}
      servers: [a, b]
  ca:
    plugin: acme
    ca_bundle: /etc/ssl/ca.pem
    settings: { directory: "https://ca.test/dir" }
  deploy: { plugin: sftp, settings: { key_path: /etc/tls/key.pem } }
propagation:
  nameservers: [127.0.0.1:5300]
  timeout: 45s
hosts:
  web1:
    address: 10.0.0.1
    port: 2222
    user: deploy
    names: [Web1.Example.test, "*.web1.example.test"]
    key_type: rsa-3072
    stages:
      deploy: { key_path: /srv/key.pem }
  web2:
    address: 10.0.0.2
    user: deploy
    names: [web2.example.test]
environments:
  staging:
    stages:
      ca:
        settings: { directory: "https://staging.ca.test/dir" }
)";

TEST_F(PipelineTest, ReadsStagesHostsAndOverrides) {
  std::ofstream(directory_ / "tsig.secret") << "c2VjcmV0LXZhbHVl\n";
  auto pipeline = loadPipeline(write(kValid), "");
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().message();
  EXPECT_EQ(pipeline->name, "shop");
  EXPECT_EQ(pipeline->state_directory, directory_ / "state" / "default");
  ASSERT_EQ(pipeline->hosts.size(), 2u);
  const HostConfig& web1 = pipeline->hosts[0];
  EXPECT_EQ(web1.target.port, 2222);
  EXPECT_EQ(web1.target.names[0], "web1.example.test");  // lower-cased
  EXPECT_EQ(web1.key_type, KeyType::kRsa3072);
  EXPECT_EQ(pipeline->hosts[1].target.port, 22);
  EXPECT_EQ(pipeline->hosts[1].key_type, KeyType::kEcP256);

  const StageConfig* dns = pipeline->stage("dns");
  ASSERT_NE(dns, nullptr);
  auto secret = dns->settings.requireSecret("tsig_secret");
  ASSERT_TRUE(secret.ok()) << secret.status().message();
  EXPECT_EQ(secret->reveal(), "c2VjcmV0LXZhbHVl");
  EXPECT_EQ(dns->settings.getList("servers"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(pipeline->propagation.timeout, std::chrono::seconds(45));
  EXPECT_EQ(pipeline->stage("ca")->ca_bundle, "/etc/ssl/ca.pem");

  const StageConfig* deploy = pipeline->stage("deploy");
  EXPECT_EQ(*pipeline->settingsFor(*deploy, web1).require("key_path"), "/srv/key.pem");
  EXPECT_EQ(*pipeline->settingsFor(*deploy, pipeline->hosts[1]).require("key_path"),
            "/etc/tls/key.pem");
}

TEST_F(PipelineTest, EnvironmentOverridesAndKeepsItsOwnState) {
  std::ofstream(directory_ / "tsig.secret") << "c2VjcmV0LXZhbHVl";
  auto pipeline = loadPipeline(write(kValid), "staging");
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().message();
  EXPECT_EQ(*pipeline->stage("ca")->settings.require("directory"), "https://staging.ca.test/dir");
  // Untouched siblings survive the overlay.
  EXPECT_EQ(pipeline->stage("ca")->ca_bundle, "/etc/ssl/ca.pem");
  EXPECT_EQ(pipeline->state_directory, directory_ / "state" / "staging");
  // The overriding value still knows its line (the environment block is at the end).
  EXPECT_NE(pipeline->stage("ca")->settings.where("directory").find(":37:32"), std::string::npos)
      << pipeline->stage("ca")->settings.where("directory");
}

TEST_F(PipelineTest, UnknownEnvironmentIsAnError) {
  std::ofstream(directory_ / "tsig.secret") << "x";
  auto pipeline = loadPipeline(write(kValid), "production");
  ASSERT_FALSE(pipeline.ok());
  EXPECT_NE(pipeline.status().message().find("environment 'production'"), std::string::npos);
}

TEST_F(PipelineTest, BrokenYamlNamesFileLineAndColumn) {
  auto file = write("stages:\n  key: { plugin: openssl\nhosts: {}\n");
  auto pipeline = loadPipeline(file, "");
  ASSERT_FALSE(pipeline.ok());
  EXPECT_EQ(pipeline.status().message().rfind(file.string() + ":3:", 0), 0u)
      << pipeline.status().message();
}

TEST_F(PipelineTest, UnknownKeyNamesItsPosition) {
  auto file = write("stages:\n  key: { plugin: openssl }\n  dns: { plugn: rfc2136 }\n");
  auto pipeline = loadPipeline(file, "");
  ASSERT_FALSE(pipeline.ok());
  EXPECT_EQ(pipeline.status().message(),
            file.string() + ":3:10: unknown key 'plugn' in stage 'dns'");
}

TEST_F(PipelineTest, MissingRequiredStageIsNamed) {
  auto file = write("stages:\n  key: { plugin: openssl }\nhosts: { a: {} }\n");
  auto pipeline = loadPipeline(file, "");
  ASSERT_FALSE(pipeline.ok());
  EXPECT_NE(pipeline.status().message().find(":2:3: stage 'dns' is missing"), std::string::npos)
      << pipeline.status().message();
}

TEST_F(PipelineTest, BadHostValuesAreLocated) {
  std::string base =
      "stages:\n  key: {plugin: k}\n  dns: {plugin: d}\n  ca: {plugin: c}\n"
      "  deploy: {plugin: s}\nhosts:\n  web1:\n    address: 10.0.0.1\n    user: u\n";
  auto bad_name = loadPipeline(write(base + "    names: [not_a_name!]\n"), "");
  ASSERT_FALSE(bad_name.ok());
  EXPECT_NE(bad_name.status().message().find(":10:13: host 'web1': 'not_a_name!'"),
            std::string::npos)
      << bad_name.status().message();

  auto bad_port = loadPipeline(write(base + "    names: [a.test]\n    port: 70000\n"), "");
  ASSERT_FALSE(bad_port.ok());
  EXPECT_NE(bad_port.status().message().find(":11:11:"), std::string::npos)
      << bad_port.status().message();

  auto bad_key = loadPipeline(write(base + "    names: [a.test]\n    key_type: dsa\n"), "");
  ASSERT_FALSE(bad_key.ok());
  EXPECT_NE(bad_key.status().message().find("key_type 'dsa'"), std::string::npos);
}

TEST_F(PipelineTest, MissingEnvironmentVariableIsLocated) {
  ::unsetenv("CERTFLEET_TEST_UNSET_VARIABLE");
  auto file = write(
      "stages:\n  key: {plugin: k}\n  dns:\n    plugin: d\n    settings:\n"
      "      token: ${env:CERTFLEET_TEST_UNSET_VARIABLE}\n");
  auto pipeline = loadPipeline(file, "");
  ASSERT_FALSE(pipeline.ok());
  EXPECT_EQ(pipeline.status().message(),
            file.string() + ":6:14: environment variable CERTFLEET_TEST_UNSET_VARIABLE is not set");
}

TEST_F(PipelineTest, InlineSecretsAreRefusedAndResolvedOnesRedacted) {
  ::setenv("CERTFLEET_TEST_TOKEN", "tok-4f9a1c2e", 1);
  auto file = write(
      "stages:\n  key: {plugin: k}\n  dns:\n    plugin: d\n    settings:\n"
      "      token: ${env:CERTFLEET_TEST_TOKEN}\n      inline: plain-text-secret\n"
      "  ca: {plugin: c}\n  deploy: {plugin: s}\n"
      "hosts: { w: { address: a, user: u, names: [a.test] } }\n");
  auto pipeline = loadPipeline(file, "");
  ASSERT_TRUE(pipeline.ok()) << pipeline.status().message();
  const Settings& settings = pipeline->stage("dns")->settings;
  EXPECT_TRUE(settings.requireSecret("token").ok());
  auto inline_secret = settings.requireSecret("inline");
  ASSERT_FALSE(inline_secret.ok());
  EXPECT_NE(inline_secret.status().message().find(":7:15: dns.d: secret 'inline' must come from"),
            std::string::npos)
      << inline_secret.status().message();
  EXPECT_EQ(logging::redact("sent tok-4f9a1c2e to the api"), "sent [redacted] to the api");
}

}  // namespace
}  // namespace certfleet
