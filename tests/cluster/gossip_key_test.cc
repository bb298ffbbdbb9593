// The gossip key file: what parses, and the precise refusal of everything
// else, permissions included.

#include "cluster/gossip_key.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "testing/test_dir.h"

namespace geokv {
namespace {

const std::string kHex64(64, 'a');  // 32 bytes of 0xaa
// 33 bytes of 'A'.
const std::string kBase64 = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB";

// The message of a refusal of `text`.
std::string Refusal(const std::string& text) {
  auto keys = ParseGossipKeys(text);
  EXPECT_FALSE(keys.ok()) << text;
  return keys.ok() ? "" : keys.status().message();
}

TEST(GossipKey, ParsesHexAndBase64InOrderSkippingComments) {
  auto keys = ParseGossipKeys("# the newest first\n\n  new  hex:" + kHex64 +
                              "  \r\n\told.1\tbase64:" + kBase64 + "\n");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ((*keys)[0].id, "new");
  EXPECT_EQ((*keys)[0].secret, std::string(32, '\xaa'));
  EXPECT_EQ((*keys)[1].id, "old.1");
  EXPECT_EQ((*keys)[1].secret, std::string(33, 'A'));
}

TEST(GossipKey, RefusesWhatIsNotAKeyListSayingWhere) {
  EXPECT_EQ(Refusal(""), "holds no key");
  EXPECT_EQ(Refusal("# only a comment\n\n"), "holds no key");
  EXPECT_EQ(Refusal("k hex:" + std::string(62, 'a')),
            "line 1: key 'k' is 31 bytes; it must be 32 to 128");
  EXPECT_EQ(Refusal("k hex:" + std::string(258, 'a')),
            "line 1: key 'k' is 129 bytes; it must be 32 to 128");
  EXPECT_EQ(Refusal("\nk\n"), "line 2: expected 'ID hex:SECRET' or 'ID base64:SECRET'");
  EXPECT_EQ(Refusal("k " + kHex64), "line 1: key 'k': the secret must start with 'hex:' or 'base64:'");
  EXPECT_EQ(Refusal("k hex:" + kHex64 + "g"), "line 1: key 'k': not hex digits");
  EXPECT_EQ(Refusal("k base64:" + kBase64 + "="), "line 1: key 'k': not padded base64");
  EXPECT_EQ(Refusal("k base64:QUF=QUFB"), "line 1: key 'k': not padded base64");
  EXPECT_EQ(Refusal("k hex:" + kHex64 + "\nk hex:" + kHex64),
            "line 2: the key id 'k' is listed twice");
  EXPECT_NE(Refusal("k/1 hex:" + kHex64).find("the key id 'k/1' is not 1 to 32"),
            std::string::npos);
  EXPECT_NE(Refusal(std::string(33, 'k') + " hex:" + kHex64).find("is not 1 to 32"),
            std::string::npos);
  std::string nine;
  for (int i = 0; i < 9; ++i) nine += "k" + std::to_string(i) + " hex:" + kHex64 + "\n";
  EXPECT_EQ(Refusal(nine), "line 9: more than 8 keys");
}

class GossipKeyFile : public ::testing::Test {
 protected:
  std::string Write(const std::string& text, mode_t mode) {
    const std::string path = dir_.Sub("keys");
    std::ofstream(path, std::ios::trunc) << text;
    EXPECT_EQ(chmod(path.c_str(), mode), 0);
    return path;
  }

  testing::TestDir dir_;
};

TEST_F(GossipKeyFile, LoadsAFileOnlyItsOwnerMayRead) {
  const std::string path = Write("k hex:" + kHex64 + "\n", 0600);
  auto keys = LoadGossipKeys(path);
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(keys->size(), 1u);
  ASSERT_TRUE(LoadGossipKeys(Write("k hex:" + kHex64 + "\n", 0400)).ok());
}

TEST_F(GossipKeyFile, RefusesAFileOthersMayReadOrWrite) {
  for (mode_t mode : {0640, 0604, 0644}) {
    const std::string path = Write("k hex:" + kHex64 + "\n", mode);
    auto keys = LoadGossipKeys(path);
    ASSERT_FALSE(keys.ok());
    EXPECT_EQ(keys.status().code(), Status::Code::kFailedPrecondition);
    char m[8];
    std::snprintf(m, sizeof(m), "%04o", static_cast<unsigned>(mode));
    EXPECT_EQ(keys.status().message(), "gossip key file " + path + " has mode " + m +
                                           ": group or others may read it; chmod 600 it");
  }
  auto writable = LoadGossipKeys(Write("k hex:" + kHex64 + "\n", 0620));
  ASSERT_FALSE(writable.ok());
  EXPECT_NE(writable.status().message().find("may write it"), std::string::npos);
}

TEST_F(GossipKeyFile, RefusesAMissingFileADirectoryAndBadContentNamingThePath) {
  auto missing = LoadGossipKeys(dir_.Sub("none"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Status::Code::kIOError);
  EXPECT_EQ(missing.status().message(),
            "cannot read gossip key file " + dir_.Sub("none") + ": No such file or directory");

  ASSERT_EQ(mkdir(dir_.Sub("d").c_str(), 0700), 0);
  auto directory = LoadGossipKeys(dir_.Sub("d"));
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().message(),
            "gossip key file " + dir_.Sub("d") + " is not a regular file");

  const std::string empty = Write("", 0600);
  auto none = LoadGossipKeys(empty);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().message(), "gossip key file " + empty + ": holds no key");

  const std::string short_key = Write("k hex:abcd\n", 0600);
  auto too_short = LoadGossipKeys(short_key);
  ASSERT_FALSE(too_short.ok());
  EXPECT_EQ(too_short.status().message(), "gossip key file " + short_key +
                                              ": line 1: key 'k' is 2 bytes; it must be 32 to 128");
}

}  // namespace
}  // namespace geokv
