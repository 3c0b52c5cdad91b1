// Contract tests of the hook/tls-verify plugin against a real nginx from tests/env. The
// pair nginx serves is put in place the way a run does it: deploy/sftp, then the host's
// reload command through hook/ssh-command.
// They skip unless CERTFLEET_TEST_ENV names a started environment (tests/env/start-env).
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "plugin_loader.hpp"
#include "services.hpp"
#include "test_pki.hpp"
#include <netinet/in.h>
#include <sys/socket.h>

namespace certfleet {
namespace {

namespace fs = std::filesystem;

// env.sh holds `export NAME='value'` lines, quoted for a POSIX shell.
std::map<std::string, std::string> readEnvFile(const fs::path& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const std::string prefix = "export ";
    std::size_t equals = line.find('=');
    if (line.rfind(prefix, 0) != 0 || equals == std::string::npos) {
      continue;
    }
    std::string name = line.substr(prefix.size(), equals - prefix.size());
    std::string value;
    for (std::size_t i = equals + 1; i < line.size(); ++i) {
      if (line[i] == '\'') {
        std::size_t end = line.find('\'', i + 1);
        value += line.substr(i + 1, end - i - 1);
        i = end == std::string::npos ? line.size() : end;
      } else if (line[i] == '\\' && i + 1 < line.size()) {
        value += line[++i];
      } else {
        value += line[i];
      }
    }
    values[name] = value;
  }
  return values;
}

// A loopback port with no listener (closed right after the kernel picked it).
std::uint16_t unusedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    ADD_FAILURE() << "cannot pick a free loopback port";
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// Lower-case hex SHA-256 of the certificate's DER form, as the plugin reports it.
std::string sha256Of(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> in(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(in.get(), nullptr, nullptr, nullptr), &X509_free);
  if (!cert) {
    ADD_FAILURE() << "not a certificate";
    return "";
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  X509_digest(cert.get(), EVP_sha256(), digest, &size);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < size; ++i) {
    hex += kDigits[digest[i] >> 4];
    hex += kDigits[digest[i] & 0x0f];
  }
  return hex;
}

Settings makeSettings(const std::string& prefix, const std::map<std::string, std::string>& values) {
  Settings settings(prefix, "hook_tls_verify_test");
  for (const auto& [key, value] : values) {
    settings.set(key, {value, "hook_tls_verify_test:" + key, false});
  }
  return settings;
}

CertificateBundle makeBundle(const std::string& name) {
  testing::SelfSigned pair = testing::makeSelfSigned(name, 2);
  return {Secret(pair.key_pem), pair.cert_pem, pair.cert_pem};
}

class HookTlsVerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env_dir = std::getenv("CERTFLEET_TEST_ENV");
    if (env_dir == nullptr) {
      GTEST_SKIP() << "CERTFLEET_TEST_ENV is not set (tests/env/start-env DIR, then export it)";
    }
    env_ = readEnvFile(fs::path(env_dir) / "env.sh");
    ASSERT_FALSE(env_["HOST2_TLS_PORT"].empty()) << "no HOST2_TLS_PORT in " << env_dir;

    for (const char* file : {"deploy-sftp.so", "hook-ssh-command.so", "hook-tls-verify.so"}) {
      auto loaded = PluginLoader::loadFile(fs::path(CERTFLEET_PLUGIN_BUILD_DIR) / file);
      ASSERT_TRUE(loaded.ok()) << loaded.status().message();
      plugins_[file] = std::move(*loaded);
    }
    services_ =
        std::make_unique<CoreServices>("verify", "tls-verify", "", "/nonexistent",
                                       std::chrono::steady_clock::now() + std::chrono::minutes(2));
  }

  HostTarget host() {
    HostTarget target;
    target.name = env_["HOST2_NAME"];
    target.address = "127.0.0.1";
    target.port = static_cast<std::uint16_t>(std::stoi(env_["HOST2_SSH_PORT"]));
    target.user = env_["SSH_USER"];
    target.names = {env_["HOST2_NAME"] + ".example.test"};
    return target;
  }

  // Puts `bundle` on the host and reloads its nginx, as the deploy and reload stages do.
  void deployAndReload(const CertificateBundle& bundle) {
    std::map<std::string, std::string> ssh = {{"known_hosts", env_["SSH_KNOWN_HOSTS"]},
                                              {"identity_file", env_["SSH_IDENTITY"]}};

    auto deploy_values = ssh;
    deploy_values["key_path"] = env_["HOST2_TLS_DIR"] + "/key.pem";
    deploy_values["chain_path"] = env_["HOST2_TLS_DIR"] + "/fullchain.pem";
    Settings deploy_settings = makeSettings("deploy.sftp", deploy_values);
    Plugin& deploy = plugins_["deploy-sftp.so"]->instance();
    ASSERT_TRUE(deploy.configure(deploy_settings, *services_).ok());
    Status deployed = dynamic_cast<DeployPlugin&>(deploy).deploy(host(), deploy_settings, bundle);
    ASSERT_TRUE(deployed.ok()) << deployed.message();

    auto reload_values = ssh;
    reload_values["command"] = env_["HOST2_RELOAD"];
    Settings reload_settings = makeSettings("reload.ssh-command", reload_values);
    Plugin& reload = plugins_["hook-ssh-command.so"]->instance();
    ASSERT_TRUE(reload.configure(reload_settings, *services_).ok());
    Status reloaded = dynamic_cast<HookPlugin&>(reload).run(host(), reload_settings, bundle);
    ASSERT_TRUE(reloaded.ok()) << reloaded.message();
  }

  // The stage's settings carry the timeout; the port arrives as a per-host override.
  Status verify(const CertificateBundle& expected,
                const std::string& timeout,
                const std::string& port) {
    Settings stage = makeSettings("verify.tls-verify", {{"timeout", timeout}});
    Plugin& plugin = plugins_["hook-tls-verify.so"]->instance();
    Status configured = plugin.configure(stage, *services_);
    if (!configured.ok()) {
      return configured;
    }
    Settings effective = stage.mergedWith(makeSettings("verify.tls-verify", {{"port", port}}));
    return dynamic_cast<HookPlugin&>(plugin).run(host(), effective, expected);
  }

  std::map<std::string, std::string> env_;
  std::unique_ptr<CoreServices> services_;
  std::map<std::string, std::unique_ptr<LoadedPlugin>> plugins_;
};

TEST_F(HookTlsVerifyTest, DeployedLeafIsServedAfterTheReload) {
  CertificateBundle bundle = makeBundle(env_["HOST2_NAME"] + ".example.test");
  ASSERT_NO_FATAL_FAILURE(deployAndReload(bundle));

  // Straight after the reload command: the plugin's polling must absorb nginx's delay.
  Status status = verify(bundle, "15s", env_["HOST2_TLS_PORT"]);

  EXPECT_TRUE(status.ok()) << status.message();
}

TEST_F(HookTlsVerifyTest, AnotherLeafIsReportedWithBothFingerprints) {
  CertificateBundle served = makeBundle(env_["HOST2_NAME"] + ".example.test");
  CertificateBundle other = makeBundle(env_["HOST2_NAME"] + ".example.test");
  ASSERT_NO_FATAL_FAILURE(deployAndReload(served));
  // Wait until nginx serves the new pair, so the failure below is about the leaf alone.
  ASSERT_TRUE(verify(served, "15s", env_["HOST2_TLS_PORT"]).ok());
  auto started = std::chrono::steady_clock::now();

  Status status = verify(other, "400ms", env_["HOST2_TLS_PORT"]);

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("served certificate sha256 " + sha256Of(served.leaf_pem)),
            std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("is not the deployed one sha256 " + sha256Of(other.leaf_pem)),
            std::string::npos)
      << status.message();
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
}

TEST_F(HookTlsVerifyTest, NothingListeningIsUnavailableAndNamesAddressAndPort) {
  std::string port = std::to_string(unusedPort());

  Status status = verify(makeBundle("web2.example.test"), "300ms", port);

  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_NE(status.message().find("127.0.0.1:" + port), std::string::npos) << status.message();
}

}  // namespace
}  // namespace certfleet
