// The key/openssl plugin, loaded as the runner loads it.
#include <memory>

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certificate.hpp"
#include "plugin_loader.hpp"
#include "services.hpp"

namespace certfleet {
namespace {

class KeyPluginTest : public ::testing::TestWithParam<std::pair<KeyType, std::string>> {
 protected:
  void SetUp() override {
    auto loaded = PluginLoader({CERTFLEET_PLUGIN_BUILD_DIR}).load(Stage::kKey, "openssl");
    ASSERT_TRUE(loaded.ok()) << loaded.status().message();
    plugin_ = std::move(*loaded);
    services_ = std::make_unique<CoreServices>("key", "openssl", "", "/nonexistent",
                                               std::chrono::steady_clock::now());
    ASSERT_TRUE(plugin_->instance().configure(Settings(), *services_).ok());
  }
  KeyPlugin& key() { return *plugin_->as<KeyPlugin>(); }

  std::unique_ptr<CoreServices> services_;
  std::unique_ptr<LoadedPlugin> plugin_;
};

TEST_P(KeyPluginTest, GeneratesTheAskedTypeAndASignedCsrWithAllNames) {
  auto [type, expected] = GetParam();
  auto pem = key().generateKey(type);
  ASSERT_TRUE(pem.ok()) << pem.status().message();

  std::unique_ptr<BIO, decltype(&BIO_free)> in(
      BIO_new_mem_buf(pem->reveal().data(), static_cast<int>(pem->reveal().size())), &BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> parsed(
      PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  ASSERT_TRUE(parsed);
  std::string description = EVP_PKEY_get0_type_name(parsed.get());
  description += "-" + std::to_string(EVP_PKEY_get_bits(parsed.get()));
  EXPECT_EQ(description, expected);

  std::vector<std::string> names = {"web1.example.test", "*.web1.example.test"};
  auto csr = key().makeCsr(*pem, names);
  ASSERT_TRUE(csr.ok()) << csr.status().message();
  std::unique_ptr<BIO, decltype(&BIO_free)> csr_in(
      BIO_new_mem_buf(csr->data(), static_cast<int>(csr->size())), &BIO_free);
  std::unique_ptr<X509_REQ, decltype(&X509_REQ_free)> request(
      PEM_read_bio_X509_REQ(csr_in.get(), nullptr, nullptr, nullptr), &X509_REQ_free);
  ASSERT_TRUE(request);
  EXPECT_EQ(X509_REQ_verify(request.get(), parsed.get()), 1);
  STACK_OF(X509_EXTENSION)* extensions = X509_REQ_get_extensions(request.get());
  ASSERT_NE(extensions, nullptr);
  std::unique_ptr<BIO, decltype(&BIO_free)> text(BIO_new(BIO_s_mem()), &BIO_free);
  for (int i = 0; i < sk_X509_EXTENSION_num(extensions); ++i) {
    X509V3_EXT_print(text.get(), sk_X509_EXTENSION_value(extensions, i), 0, 0);
  }
  sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
  char* data = nullptr;
  long length = BIO_get_mem_data(text.get(), &data);
  std::string printed(data, static_cast<std::size_t>(length));
  EXPECT_EQ(printed, "DNS:web1.example.test, DNS:*.web1.example.test");
}

INSTANTIATE_TEST_SUITE_P(AllTypes,
                         KeyPluginTest,
                         ::testing::Values(std::make_pair(KeyType::kEcP256, "EC-256"),
                                           std::make_pair(KeyType::kEcP384, "EC-384"),
                                           std::make_pair(KeyType::kRsa2048, "RSA-2048"),
                                           std::make_pair(KeyType::kRsa3072, "RSA-3072")));

TEST(KeyPluginSettings, RefusesSettingsItDoesNotTake) {
  auto loaded = PluginLoader({CERTFLEET_PLUGIN_BUILD_DIR}).load(Stage::kKey, "openssl");
  ASSERT_TRUE(loaded.ok());
  CoreServices services("key", "openssl", "", "/nonexistent", std::chrono::steady_clock::now());
  Settings settings("key.openssl", "p.yaml:3:5");
  settings.set("bits", {"4096", "p.yaml:4:11", false});
  Status status = (*loaded)->instance().configure(settings, services);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.message().rfind("p.yaml:4:11: key.openssl:", 0), 0u) << status.message();
}

}  // namespace
}  // namespace certfleet
