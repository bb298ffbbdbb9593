// The checks of geokv-nemesis on histories made by hand: each kind of
// violation is found, and what the contract allows is not reported.

#include "tools/nemesis_history.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace geokv::nemesis {
namespace {

using std::chrono::milliseconds;

const Clock::time_point kOrigin = Clock::now();

Clock::time_point At(int ms) { return kOrigin + milliseconds(ms); }

Write MakeWrite(OpType type, const std::string& key, const std::string& value, int start,
                int end, WriteResult result = WriteResult::kAcked, int region = 0) {
  Write w;
  w.type = type;
  w.key = key;
  w.value = value;
  w.delta = type == OpType::kIncrement ? std::stoll(value) : 0;
  w.node = "r0-0";
  w.region = region;
  w.start = At(start);
  w.end = At(end);
  w.result = result;
  return w;
}

Read MakeRead(OpType type, const std::string& key, int start, int end) {
  Read r;
  r.type = type;
  r.key = key;
  r.node = "r0-1";
  r.written_through = "r0-0";
  r.start = At(start);
  r.end = At(end);
  return r;
}

NodeState State(const std::string& node, uint64_t digest = 7) {
  NodeState s;
  s.node = node;
  s.digest = digest;
  return s;
}

TEST(NemesisHistory, ASetReadLackingTheAcknowledgedElementIsAViolation) {
  History h(kOrigin);
  h.AddWrite(MakeWrite(OpType::kSetAdd, "set-0", "c0-1", 0, 10));
  Read r = MakeRead(OpType::kSetAdd, "set-0", 11, 12);
  r.element = "c0-1";
  r.present = true;
  h.CheckRead(r);
  EXPECT_TRUE(h.violations().empty());
  r.present = false;
  h.CheckRead(r);
  ASSERT_EQ(h.violations().size(), 1u);
  EXPECT_NE(h.violations()[0].find("lacks element c0-1"), std::string::npos)
      << h.violations()[0];
}

TEST(NemesisHistory, ACounterReadCountsOnlyIncrementsAcknowledgedInItsRegionBeforeIt) {
  History h(kOrigin);
  h.AddWrite(MakeWrite(OpType::kIncrement, "ctr-0", "2", 0, 10));
  h.AddWrite(MakeWrite(OpType::kIncrement, "ctr-0", "3", 0, 20));
  // Another region's, and one whose outcome is unknown: not owed.
  h.AddWrite(MakeWrite(OpType::kIncrement, "ctr-0", "100", 0, 5, WriteResult::kAcked, 1));
  h.AddWrite(MakeWrite(OpType::kIncrement, "ctr-0", "50", 0, 5, WriteResult::kUnknown));
  Read r = MakeRead(OpType::kIncrement, "ctr-0", 15, 30);
  r.count = 2;  // the second increment ended after the read began
  h.CheckRead(r);
  r = MakeRead(OpType::kIncrement, "ctr-0", 21, 30);
  r.count = 5;
  h.CheckRead(r);
  EXPECT_TRUE(h.violations().empty());
  r.count = 4;
  h.CheckRead(r);
  ASSERT_EQ(h.violations().size(), 1u);
  EXPECT_NE(h.violations()[0].find("answered 4, but increments of 5"), std::string::npos)
      << h.violations()[0];
}

TEST(NemesisHistory, ARegisterReadMustSeeTheLatestAcknowledgedValueOrAnUnknownOne) {
  History h(kOrigin);
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c0-0", "a", 0, 10));
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c0-0", "b", 11, 20, WriteResult::kUnknown));
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c0-0", "c", 21, 30, WriteResult::kFailed));
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c0-0", "d", 31, 40));
  Read r = MakeRead(OpType::kRegisterSet, "reg-c0-0", 41, 42);
  for (const char* fine : {"d", "b"}) {
    r.value = fine;
    h.CheckRead(r);
  }
  EXPECT_TRUE(h.violations().empty());
  r.value = "a";
  h.CheckRead(r);
  r.value = "c";  // refused: nothing of it was applied
  h.CheckRead(r);
  r.value.reset();
  h.CheckRead(r);
  std::vector<std::string> v = h.violations();
  ASSERT_EQ(v.size(), 3u);
  EXPECT_NE(v[0].find("saw an overwritten value"), std::string::npos) << v[0];
  EXPECT_NE(v[1].find("answered \"c\", not \"d\""), std::string::npos) << v[1];
  EXPECT_NE(v[2].find("answered absent, not \"d\""), std::string::npos) << v[2];
}

TEST(NemesisHistory, FinalStatesThatKeepEveryAcknowledgedWritePass) {
  History h(kOrigin);
  h.AddWrite(MakeWrite(OpType::kSetAdd, "set-0", "c0-1", 0, 10));
  h.AddWrite(MakeWrite(OpType::kSetAdd, "set-0", "c0-2", 0, 10, WriteResult::kUnknown));
  h.AddWrite(MakeWrite(OpType::kIncrement, "ctr-0", "2", 0, 10));
  h.AddWrite(MakeWrite(OpType::kIncrement, "ctr-0", "3", 0, 10, WriteResult::kUnknown));
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c0-0", "a", 0, 10));
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c0-0", "b", 11, 20, WriteResult::kUnknown));
  std::vector<NodeState> nodes;
  for (const char* name : {"r0-0", "r1-0"}) {
    NodeState s = State(name);
    s.sets["set-0"] = {"c0-1", "c0-2"};
    s.counters["ctr-0"] = 5;
    s.registers["reg-c0-0"] = "b";
    nodes.push_back(s);
  }
  nodes[1].sets["set-0"] = {"c0-1"};  // the unknown add may be missing
  nodes[1].counters["ctr-0"] = 2;     // and so may the unknown increment
  h.CheckFinal(nodes);
  EXPECT_TRUE(h.violations().empty()) << h.violations()[0];
}

TEST(NemesisHistory, FinalStatesLosingOrInventingWritesAreViolations) {
  History h(kOrigin);
  h.AddWrite(MakeWrite(OpType::kSetAdd, "set-0", "c0-1", 0, 10));
  h.AddWrite(MakeWrite(OpType::kIncrement, "ctr-0", "2", 0, 10));
  h.AddWrite(MakeWrite(OpType::kIncrement, "ctr-0", "4", 0, 10, WriteResult::kFailed));
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c0-0", "a", 0, 10));
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c0-0", "b", 11, 20));
  h.AddWrite(MakeWrite(OpType::kRegisterSet, "reg-c1-0", "x", 0, 10));
  NodeState a = State("r0-0", 1), b = State("r1-0", 2);
  a.sets["set-0"] = {"c0-1", "zz"};  // an element nobody added
  b.sets["set-0"] = {};              // the acknowledged add lost
  a.counters["ctr-0"] = 2;
  b.counters["ctr-0"] = 6;  // counts the refused increment
  a.registers["reg-c0-0"] = b.registers["reg-c0-0"] = "a";  // overwritten value won
  a.registers["reg-c1-0"] = "x";
  b.registers["reg-c1-0"] = std::nullopt;
  h.CheckFinal({a, b});
  std::vector<std::string> v = h.violations();
  auto found = [&](const std::string& what) {
    for (const std::string& s : v) {
      if (s.find(what) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(found("state digests differ"));
  EXPECT_TRUE(found("set set-0 on r0-0 holds element zz"));
  EXPECT_TRUE(found("set set-0 on r1-0 lacks element c0-1"));
  EXPECT_TRUE(found("counter ctr-0 on r1-0 is 6, outside [2, 2]"));
  EXPECT_TRUE(found("register reg-c0-0 is \"a\" everywhere"));
  EXPECT_TRUE(found("register reg-c1-0 differs between nodes"));
  EXPECT_EQ(v.size(), 6u);
}

}  // namespace
}  // namespace geokv::nemesis
