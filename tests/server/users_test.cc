// Users files, secret hashes and roles: what a node accepts as its users,
// and that a secret matches only the hash made from it.

#include "server/users.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "testing/test_dir.h"
#include "util/secret_hash.h"

namespace geokv {
namespace {

std::string Hash(const std::string& secret) {
  auto h = HashSecret(secret, kMinSecretIterations);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return h.ok() ? *h : "";
}

TEST(SecretHash, MatchesOnlyTheSecretItWasMadeFrom) {
  const std::string encoded = Hash("correct horse");
  auto parsed = ParseSecretHash(encoded);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->iterations, kMinSecretIterations);
  EXPECT_TRUE(SecretMatches(*parsed, "correct horse"));
  EXPECT_FALSE(SecretMatches(*parsed, "correct horsE"));
  EXPECT_FALSE(SecretMatches(*parsed, "correct horse "));
  EXPECT_FALSE(SecretMatches(*parsed, ""));
  // A fresh salt each time: two hashes of one secret differ.
  EXPECT_NE(Hash("correct horse"), encoded);
}

TEST(SecretHash, RefusesMalformedHashesAndSecrets) {
  const std::string good = Hash("s");
  const std::string salt_and_hash = good.substr(good.find('$', good.find('$') + 1));
  for (const std::string& bad :
       {std::string("pbkdf2-sha256$1000$00"), "bcrypt$1000" + salt_and_hash,
        "pbkdf2-sha256$999" + salt_and_hash, "pbkdf2-sha256$10000001" + salt_and_hash,
        "pbkdf2-sha256$1e4" + salt_and_hash, "pbkdf2-sha256$1000$0011$" + std::string(64, 'a'),
        good + "00", good + "$x", good.substr(0, good.size() - 1) + "g"}) {
    EXPECT_FALSE(ParseSecretHash(bad).ok()) << bad;
  }
  EXPECT_FALSE(HashSecret("", kMinSecretIterations).ok());
  EXPECT_FALSE(HashSecret(std::string(kMaxSecretBytes + 1, 'x'), kMinSecretIterations).ok());
  EXPECT_FALSE(HashSecret("s", kMinSecretIterations - 1).ok());
}

TEST(Users, ParsesNamesRolesAndSecrets) {
  const std::string text = "# users of eu\n\n  alice   admin " + Hash("a") +
                           "\nbob write\t" + Hash("b") + "\r\nsvc.reports@eu read -\n";
  auto users = ParseUsers(text);
  ASSERT_TRUE(users.ok()) << users.status().ToString();
  ASSERT_EQ(users->size(), 3u);
  EXPECT_EQ(users->at("alice").role, Role::kAdmin);
  EXPECT_TRUE(SecretMatches(*users->at("alice").secret, "a"));
  EXPECT_EQ(users->at("bob").role, Role::kWrite);
  EXPECT_TRUE(SecretMatches(*users->at("bob").secret, "b"));
  EXPECT_EQ(users->at("svc.reports@eu").role, Role::kRead);
  EXPECT_FALSE(users->at("svc.reports@eu").secret.has_value());
}

TEST(Users, RefusesAMalformedFileNamingTheLine) {
  const std::string h = Hash("x");
  struct Case {
    std::string text;
    std::string says;
  } cases[] = {
      {"", "holds no user"},
      {"# only a comment\n", "holds no user"},
      {"alice admin\n", "line 1"},
      {"alice admin " + h + " extra\n", "line 1"},
      {"ok read -\nalice root " + h + "\n", "line 2: role 'root'"},
      {"al ice read -\n", "line 1"},
      {"al/ice read -\n", "line 1: user name"},
      {std::string(65, 'a') + " read -\n", "at most 64"},
      {"alice read -\nalice write -\n", "line 2: user 'alice' appears twice"},
      {"alice read pbkdf2-sha256$5$00$00\n", "line 1: iterations"},
  };
  for (const Case& c : cases) {
    auto users = ParseUsers(c.text);
    ASSERT_FALSE(users.ok()) << c.text;
    EXPECT_NE(users.status().message().find(c.says), std::string::npos)
        << c.text << " -> " << users.status().message();
  }
}

TEST(Users, LoadsOnlyAFileOthersCannotRead) {
  testing::TestDir dir;
  const std::string path = dir.Sub("users");
  std::ofstream(path) << "alice admin " << Hash("a") << "\n";
  chmod(path.c_str(), 0644);
  auto open = LoadUsers(path);
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.status().message().find("chmod 600"), std::string::npos)
      << open.status().message();
  chmod(path.c_str(), 0600);
  auto users = LoadUsers(path);
  ASSERT_TRUE(users.ok()) << users.status().ToString();
  EXPECT_EQ(users->size(), 1u);
  EXPECT_FALSE(LoadUsers(dir.Sub("missing")).ok());
}

TEST(Users, RolesAreOrdered) {
  EXPECT_TRUE(CheckRole(Role::kAdmin, Role::kWrite, "set").ok());
  EXPECT_TRUE(CheckRole(Role::kWrite, Role::kWrite, "set").ok());
  EXPECT_TRUE(CheckRole(Role::kRead, Role::kRead, "get").ok());
  Status denied = CheckRole(Role::kRead, Role::kWrite, "set");
  EXPECT_EQ(denied.code(), Status::Code::kPermissionDenied);
  EXPECT_NE(denied.message().find("set needs the write role"), std::string::npos)
      << denied.message();
  EXPECT_FALSE(CheckRole(Role::kWrite, Role::kAdmin, "leave").ok());
  for (Role r : {Role::kRead, Role::kWrite, Role::kAdmin}) {
    EXPECT_EQ(ParseRole(RoleName(r)), r);
  }
  EXPECT_FALSE(ParseRole("Admin").has_value());
}

}  // namespace
}  // namespace geokv
