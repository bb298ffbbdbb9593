// The RESP parser and reply encoders (server/resp_protocol.h): commands in
// both forms, pipelines split anywhere, every limit, and garbage.

#include "server/resp_protocol.h"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace geokv {
namespace {

using Commands = std::vector<std::vector<std::string>>;

std::string Multibulk(const std::vector<std::string>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
  return out;
}

// Feeds `pieces` one at a time, taking every command after each; stops at
// an error (*error gets it).
Commands ParseAll(RespParser& parser, const std::vector<std::string>& pieces,
                  std::string* error = nullptr) {
  Commands out;
  for (const auto& piece : pieces) {
    parser.Feed(piece);
    std::vector<std::string> args;
    RespParser::State state;
    while ((state = parser.Next(&args)) == RespParser::State::kCommand) out.push_back(args);
    if (state == RespParser::State::kError) {
      if (error != nullptr) *error = parser.error();
      return out;
    }
  }
  return out;
}

Commands ParseAll(const std::string& bytes, std::string* error = nullptr,
                  RespLimits limits = RespLimits()) {
  RespParser parser(limits);
  return ParseAll(parser, {bytes}, error);
}

TEST(RespParser, ReadsMultibulkCommands) {
  std::string error;
  Commands c = ParseAll(Multibulk({"SET", "k", std::string("a\r\nb\0c", 6)}) +
                            Multibulk({"GET", "k"}),
                        &error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0], (std::vector<std::string>{"SET", "k", std::string("a\r\nb\0c", 6)}));
  EXPECT_EQ(c[1], (std::vector<std::string>{"GET", "k"}));
}

TEST(RespParser, ReadsInlineCommandsWithQuotes) {
  std::string error;
  Commands c = ParseAll("PING\r\nSET k \"a b\\x41\\n\" 'c d'\n\r\n  \nGET  k\n", &error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0], (std::vector<std::string>{"PING"}));
  EXPECT_EQ(c[1], (std::vector<std::string>{"SET", "k", "a bA\n", "c d"}));
  EXPECT_EQ(c[2], (std::vector<std::string>{"GET", "k"}));
}

TEST(RespParser, SkipsEmptyMultibulks) {
  Commands c = ParseAll("*0\r\n*-1\r\n" + Multibulk({"PING"}));
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0][0], "PING");
}

TEST(RespParser, WaitsForTheRestOfACommand) {
  RespParser parser;
  std::vector<std::string> args;
  parser.Feed("*2\r\n$3\r\nGET\r\n$5\r\nab");
  EXPECT_EQ(parser.Next(&args), RespParser::State::kNeedMore);
  parser.Feed("cde\r");
  EXPECT_EQ(parser.Next(&args), RespParser::State::kNeedMore);
  parser.Feed("\n");
  ASSERT_EQ(parser.Next(&args), RespParser::State::kCommand);
  EXPECT_EQ(args, (std::vector<std::string>{"GET", "abcde"}));
  EXPECT_EQ(parser.Next(&args), RespParser::State::kNeedMore);
  EXPECT_EQ(parser.buffered(), 0u);
}

TEST(RespParser, RefusesWhatBreaksTheStreamForGood) {
  struct Case {
    std::string bytes, error;
  };
  const Case cases[] = {
      {"*x\r\n", "Protocol error: invalid multibulk length"},
      {"*2\r\n+GET\r\n", "Protocol error: expected '$', got '+'"},
      {"*1\r\n$-3\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n$3\r\nGETX\r\n", "Protocol error: expected CRLF after a bulk string"},
      {"SET k \"open\n", "Protocol error: unbalanced quotes in request"},
      {"SET k \"a\"b\n", "Protocol error: unbalanced quotes in request"},
  };
  for (const Case& c : cases) {
    RespParser parser;
    std::string error;
    Commands got = ParseAll(parser, {c.bytes + Multibulk({"PING"})}, &error);
    EXPECT_TRUE(got.empty()) << c.bytes;
    EXPECT_EQ(error, c.error) << c.bytes;
    // The error is final: nothing after it is read.
    std::vector<std::string> args;
    parser.Feed(Multibulk({"PING"}));
    EXPECT_EQ(parser.Next(&args), RespParser::State::kError);
  }
}

TEST(RespParser, EnforcesEveryLimitBeforeBuffering) {
  RespLimits limits;
  limits.max_bulk_bytes = 10;
  limits.max_args = 3;
  limits.max_inline_bytes = 64;
  limits.max_command_bytes = 15;
  std::string error;
  EXPECT_TRUE(ParseAll("*1\r\n$11\r\n", &error, limits).empty());
  EXPECT_EQ(error, "Protocol error: invalid bulk length");
  EXPECT_EQ(ParseAll(Multibulk({"SET", "k", "0123456789"}), &error, limits).size(), 1u);
  EXPECT_TRUE(ParseAll("*4\r\n", &error, limits).empty());
  EXPECT_EQ(error, "Protocol error: invalid multibulk length");
  EXPECT_TRUE(ParseAll(Multibulk({"SET", "0123456789", "0123456789"}), &error, limits).empty());
  EXPECT_EQ(error, "Protocol error: command larger than 15 bytes");
  // A line that never ends is refused once it passes the limit.
  EXPECT_TRUE(ParseAll(std::string(65, 'a'), &error, limits).empty());
  EXPECT_EQ(error, "Protocol error: too big inline request");
  EXPECT_TRUE(ParseAll("*" + std::string(70, '1'), &error, limits).empty());
  EXPECT_EQ(error, "Protocol error: too big mbulk count string");
  EXPECT_TRUE(ParseAll("*1\r\n$" + std::string(70, '1'), &error, limits).empty());
  EXPECT_EQ(error, "Protocol error: too big bulk count string");
}

TEST(RespParser, ManyBlankLinesDoNotRecurse) {
  Commands c = ParseAll(std::string(1 << 20, '\n') + "PING\n");
  ASSERT_EQ(c.size(), 1u);
}

TEST(GlobMatch, MatchesAsRedis) {
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("user:*", "user:42"));
  EXPECT_FALSE(GlobMatch("user:*", "users"));
  EXPECT_TRUE(GlobMatch("h?llo", "hallo"));
  EXPECT_TRUE(GlobMatch("h[ae]llo", "hello"));
  EXPECT_FALSE(GlobMatch("h[^e]llo", "hello"));
  EXPECT_TRUE(GlobMatch("h[a-c]llo", "hbllo"));
  EXPECT_TRUE(GlobMatch("a\\*b", "a*b"));
  EXPECT_FALSE(GlobMatch("a\\*b", "axb"));
  EXPECT_TRUE(GlobMatch("*a*b*c*", "xxaxxbxxcxx"));
  // Backtracking stays linear in the stars: this returns at once.
  EXPECT_FALSE(GlobMatch(std::string(50, '*') + "b", std::string(10000, 'a')));
}

TEST(RespReply, EncodesRedisTypesInBothProtocols) {
  std::string out;
  AppendNull(out, false);
  AppendNull(out, true);
  AppendMap(out, 2, false);
  AppendMap(out, 2, true);
  AppendSet(out, 1, true);
  AppendBool(out, true, false);
  AppendBool(out, false, true);
  AppendError(out, "ERR a\r\nb");
  AppendVerbatim(out, "x", true);
  EXPECT_EQ(out, "$-1\r\n_\r\n*4\r\n%2\r\n~1\r\n:1\r\n#f\r\n-ERR a  b\r\n=5\r\ntxt:x\r\n");
}

// A command of a few arguments, of any bytes.
rc::Gen<std::vector<std::string>> GenCommand() {
  return rc::gen::nonEmpty(rc::gen::container<std::vector<std::string>>(
      rc::gen::container<std::string>(rc::gen::arbitrary<char>())));
}

std::string Encode(const Commands& commands, const std::vector<bool>& inline_form) {
  std::string out;
  for (size_t i = 0; i < commands.size(); ++i) {
    // Inline only for words it can carry as they are.
    bool can_inline = inline_form[i];
    for (const auto& a : commands[i]) {
      can_inline &= !a.empty() && a.find_first_of(" \t\r\n\v\f\"'\\") == std::string::npos;
    }
    if (can_inline && commands[i][0][0] != '*') {
      for (size_t j = 0; j < commands[i].size(); ++j) out += (j ? " " : "") + commands[i][j];
      out += "\r\n";
    } else {
      out += Multibulk(commands[i]);
    }
  }
  return out;
}

RC_GTEST_PROP(RespParser, AnySplitOfAPipelineGivesTheSameCommands, ()) {
  const auto commands = *rc::gen::container<Commands>(GenCommand());
  const auto inline_form = *rc::gen::container<std::vector<bool>>(commands.size(),
                                                                 rc::gen::arbitrary<bool>());
  const std::string bytes = Encode(commands, inline_form);
  auto cuts = *rc::gen::container<std::vector<size_t>>(rc::gen::inRange<size_t>(0, bytes.size() + 1));
  std::sort(cuts.begin(), cuts.end());
  std::vector<std::string> pieces;
  size_t at = 0;
  for (size_t cut : cuts) {
    pieces.push_back(bytes.substr(at, cut - at));
    at = cut;
  }
  pieces.push_back(bytes.substr(at));
  RespParser parser;
  std::string error;
  RC_ASSERT(ParseAll(parser, pieces, &error) == commands);
  RC_ASSERT(error.empty());
  RC_ASSERT(parser.buffered() == 0u);
}

RC_GTEST_PROP(RespParser, APrefixGivesOnlyTheCommandsItHoldsWhole, ()) {
  const auto commands = *rc::gen::nonEmpty(rc::gen::container<Commands>(GenCommand()));
  const std::string bytes = Encode(commands, std::vector<bool>(commands.size(), false));
  const size_t cut = *rc::gen::inRange<size_t>(0, bytes.size());
  // The commands whose last byte is in the prefix.
  size_t whole = 0, end = 0;
  for (const auto& c : commands) {
    end += Multibulk(c).size();
    if (end <= cut) ++whole;
  }
  Commands got = ParseAll(bytes.substr(0, cut));
  RC_ASSERT(got == Commands(commands.begin(), commands.begin() + whole));
}

RC_GTEST_PROP(RespParser, GarbageNeverCrashesNorGrowsPastTheLimits, ()) {
  RespLimits limits;
  limits.max_bulk_bytes = 64;
  limits.max_args = 8;
  limits.max_inline_bytes = 128;
  limits.max_command_bytes = 256;
  const auto commands = *rc::gen::container<Commands>(GenCommand());
  std::string bytes = Encode(commands, std::vector<bool>(commands.size(), true));
  // Mutations of a valid stream reach deeper than random bytes alone.
  const auto flips = *rc::gen::container<std::vector<std::pair<size_t, char>>>(
      rc::gen::pair(rc::gen::arbitrary<size_t>(), rc::gen::arbitrary<char>()));
  for (const auto& [at, c] : flips) {
    if (!bytes.empty()) bytes[at % bytes.size()] = c;
  }
  bytes += *rc::gen::container<std::string>(rc::gen::arbitrary<char>());
  RespParser parser(limits);
  std::vector<std::string> args;
  for (size_t i = 0; i < bytes.size(); i += 7) {
    parser.Feed(bytes.substr(i, 7));
    RespParser::State state;
    while ((state = parser.Next(&args)) == RespParser::State::kCommand) {
      RC_ASSERT(!args.empty());
      RC_ASSERT(args.size() <= limits.max_args || args.size() * 2 <= limits.max_inline_bytes);
    }
    if (state == RespParser::State::kError) {
      RC_ASSERT(parser.error().rfind("Protocol error: ", 0) == 0u);
      break;
    }
    // What is held is at most one command's worth and one feed.
    RC_ASSERT(parser.buffered() <= limits.max_command_bytes + limits.max_inline_bytes + 16);
  }
}

}  // namespace
}  // namespace geokv
