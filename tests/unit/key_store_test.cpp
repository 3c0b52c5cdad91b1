#include "key_store.hpp"

#include <unistd.h>

#include <gtest/gtest.h>

#include "test_pki.hpp"
#include <sys/stat.h>

namespace certfleet {
namespace {

mode_t modeOf(const std::filesystem::path& path) {
  struct stat info {};
  EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
  return info.st_mode & 07777;
}

class KeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("certfleet-keys-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(root_);
    // A permissive umask must not loosen any key or folder.
    old_umask_ = ::umask(0);
  }
  void TearDown() override {
    ::umask(old_umask_);
    std::filesystem::remove_all(root_);
  }
  std::filesystem::path root_;
  mode_t old_umask_ = 0;
};

TEST_F(KeyStoreTest, KeysAre0600InFolders0700) {
  KeyStore store(root_);
  testing::SelfSigned pair = testing::makeSelfSigned("web1.example.test");
  ASSERT_TRUE(store.savePendingKey("web1", Secret(pair.key_pem)).ok());
  EXPECT_EQ(modeOf(store.hostDirectory("web1") / "pending" / "key.pem"), 0600);
  EXPECT_EQ(modeOf(store.hostDirectory("web1") / "pending"), 0700);
  EXPECT_EQ(modeOf(root_), 0700);

  ASSERT_TRUE(store.promote("web1", pair.cert_pem).ok());
  EXPECT_EQ(modeOf(store.hostDirectory("web1") / "current" / "key.pem"), 0600);
  auto current = store.current("web1");
  ASSERT_TRUE(current.ok() && current->has_value());
  EXPECT_EQ((*current)->key_pem.reveal(), pair.key_pem);
}

TEST_F(KeyStoreTest, PromoteKeepsThePreviousPair) {
  KeyStore store(root_);
  testing::SelfSigned first = testing::makeSelfSigned("web1.example.test");
  testing::SelfSigned second = testing::makeSelfSigned("web1.example.test");
  ASSERT_TRUE(store.savePendingKey("web1", Secret(first.key_pem)).ok());
  ASSERT_TRUE(store.promote("web1", first.cert_pem).ok());
  ASSERT_TRUE(store.savePendingKey("web1", Secret(second.key_pem)).ok());
  ASSERT_TRUE(store.promote("web1", second.cert_pem).ok());

  auto previous = store.previous("web1");
  ASSERT_TRUE(previous.ok() && previous->has_value());
  EXPECT_EQ((*previous)->key_pem.reveal(), first.key_pem);
  EXPECT_EQ((*store.current("web1"))->key_pem.reveal(), second.key_pem);
}

TEST_F(KeyStoreTest, RecoverFinishesAnInterruptedPromote) {
  KeyStore store(root_);
  testing::SelfSigned pair = testing::makeSelfSigned("web1.example.test");
  ASSERT_TRUE(store.savePendingKey("web1", Secret(pair.key_pem)).ok());
  // As if the process died after writing the chain but before the rename.
  ASSERT_TRUE(writeFileAtomically(store.hostDirectory("web1") / "pending" / "fullchain.pem",
                                  pair.cert_pem, 0644)
                  .ok());
  ASSERT_FALSE(store.current("web1")->has_value());
  ASSERT_TRUE(store.recover("web1").ok());
  auto current = store.current("web1");
  ASSERT_TRUE(current.ok() && current->has_value());
  EXPECT_EQ((*current)->key_pem.reveal(), pair.key_pem);
}

TEST_F(KeyStoreTest, AtomicWriteLeavesNoTemporaryFile) {
  ASSERT_TRUE(makePrivateDirectory(root_).ok());
  ASSERT_TRUE(writeFileAtomically(root_ / "a.pem", "one", 0600).ok());
  ASSERT_TRUE(writeFileAtomically(root_ / "a.pem", "two", 0600).ok());
  EXPECT_EQ(*readFile(root_ / "a.pem"), "two");
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(root_)) {
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

}  // namespace
}  // namespace certfleet
