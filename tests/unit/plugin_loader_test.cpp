#include "plugin_loader.hpp"

#include <gtest/gtest.h>

namespace certfleet {
namespace {

const std::filesystem::path kDirA = CERTFLEET_FIXTURE_DIR "/a";
const std::filesystem::path kDirB = CERTFLEET_FIXTURE_DIR "/b";

TEST(PluginLoader, LoadsAGoodPluginByStageAndName) {
  PluginLoader loader({kDirA});
  auto loaded = loader.load(Stage::kDns, "good");
  ASSERT_TRUE(loaded.ok()) << loaded.status().message();
  EXPECT_EQ((*loaded)->name(), "good");
  EXPECT_EQ((*loaded)->version(), "1.2.3");
  EXPECT_EQ((*loaded)->stage(), Stage::kDns);
  ASSERT_NE((*loaded)->as<DnsPlugin>(), nullptr);
  EXPECT_EQ((*loaded)->as<KeyPlugin>(), nullptr);
}

TEST(PluginLoader, RefusesAnotherAbiVersionNamingTheFile) {
  PluginLoader loader({kDirA});
  auto loaded = loader.load(Stage::kDns, "wrongabi");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("dns-wrongabi.so"), std::string::npos);
  EXPECT_NE(loaded.status().message().find("ABI " + std::to_string(kAbiVersion + 41)),
            std::string::npos)
      << loaded.status().message();
}

TEST(PluginLoader, RefusesALibraryWithoutTheEntrySymbol) {
  PluginLoader loader({kDirA});
  auto loaded = loader.load(Stage::kDns, "nosymbol");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("dns-nosymbol.so"), std::string::npos);
  EXPECT_NE(loaded.status().message().find("no entry symbol"), std::string::npos);
}

TEST(PluginLoader, RefusesAPluginDeclaringAnotherStage) {
  PluginLoader loader({kDirA});
  auto loaded = loader.load(Stage::kDns, "wrongstage");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("declares stage 'key', expected 'dns'"),
            std::string::npos)
      << loaded.status().message();
}

TEST(PluginLoader, RefusesAPluginDeclaringAnotherName) {
  PluginLoader loader({kDirA});
  auto loaded = loader.load(Stage::kDns, "misnamed");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("something-else"), std::string::npos);
}

TEST(PluginLoader, RefusesDuplicatesNamingBothFiles) {
  PluginLoader loader({kDirA, kDirB});
  auto loaded = loader.load(Stage::kDns, "dup");
  ASSERT_FALSE(loaded.ok());
  const std::string& message = loaded.status().message();
  EXPECT_NE(message.find((kDirA / "dns-dup.so").string()), std::string::npos) << message;
  EXPECT_NE(message.find((kDirB / "dns-dup.so").string()), std::string::npos) << message;
  EXPECT_NE(message.find("duplicate"), std::string::npos);
}

TEST(PluginLoader, ReportsAFactoryThatThrows) {
  PluginLoader loader({kDirA});
  auto loaded = loader.load(Stage::kDns, "throws");
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("factory"), std::string::npos);
  EXPECT_NE(loaded.status().message().find("dns-throws.so"), std::string::npos);
}

TEST(PluginLoader, ReportsAMissingPluginWithTheDirectoriesSearched) {
  PluginLoader loader({kDirA, kDirB});
  auto loaded = loader.load(Stage::kDns, "absent");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kNotFound);
  EXPECT_NE(loaded.status().message().find(kDirB.string()), std::string::npos);
}

TEST(PluginLoader, ListsEveryFileWithItsErrorsOnOneLineEach) {
  PluginLoader loader({kDirA});
  std::vector<PluginListing> listings = loader.list();
  int good = 0;
  int refused = 0;
  for (const PluginListing& listing : listings) {
    EXPECT_EQ(listing.error.find('\n'), std::string::npos);
    if (listing.error.empty()) {
      ++good;
    } else {
      ++refused;
    }
  }
  // good and dup load; wrong ABI, no symbol, throws refuse; wrong stage and misnamed load
  // but are filed under the wrong name.
  EXPECT_EQ(good, 2);
  EXPECT_EQ(refused, 5);
}

}  // namespace
}  // namespace certfleet
