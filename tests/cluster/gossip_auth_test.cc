// Sealing and opening gossip datagrams on a manual wall clock: what a
// node without the key cannot make a member accept, and what a recorded
// datagram sent again cannot do.

#include "cluster/gossip_auth.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace geokv {
namespace {

using namespace std::chrono_literals;
using WallTime = std::chrono::system_clock::time_point;

constexpr ReplicaId kA = 0xa1, kB = 0xb2, kC = 0xc3;
const std::string kPacket = std::string("\x01") + "a framed gossip packet";

GossipKey Key(const std::string& id, char fill) { return GossipKey{id, std::string(32, fill)}; }

class GossipAuthTest : public ::testing::Test {
 protected:
  // A node whose wall clock is `*clock`.
  std::unique_ptr<GossipAuthenticator> Node(ReplicaId self, std::vector<GossipKey> keys,
                                            WallTime* clock) {
    GossipAuthOptions o;
    o.keys = std::move(keys);
    o.wall_clock = [clock] { return *clock; };
    return Node(self, std::move(o));
  }
  std::unique_ptr<GossipAuthenticator> Node(ReplicaId self, GossipAuthOptions o) {
    return std::make_unique<GossipAuthenticator>(std::move(o), self);
  }

  // Opens `datagram` at `to`: nullopt and the packet it carried, or why not.
  std::optional<GossipRefusal> Open(GossipAuthenticator& to, const std::string& datagram,
                                    std::string* packet = nullptr) {
    std::string_view opened;
    std::string detail;
    auto refusal = to.Open(datagram, &opened, &detail);
    if (refusal) {
      EXPECT_FALSE(detail.empty());
    } else if (packet != nullptr) {
      *packet = std::string(opened);
    }
    return refusal;
  }

  WallTime now_ = WallTime(std::chrono::hours(24 * 365 * 56));
};

TEST_F(GossipAuthTest, ASealedDatagramOpensToItsPacket) {
  auto a = Node(kA, {Key("k1", 'x')}, &now_);
  auto b = Node(kB, {Key("k1", 'x')}, &now_);
  const std::string d = a->Seal(kPacket, kB);
  EXPECT_EQ(d.rfind("GKVA", 0), 0u);
  EXPECT_LE(d.size(), kPacket.size() + GossipAuthenticator::kMaxOverheadBytes);
  std::string packet;
  EXPECT_EQ(Open(*b, d, &packet), std::nullopt);
  EXPECT_EQ(packet, kPacket);
  // A datagram to an address whose member is not known yet opens anywhere.
  auto c = Node(kC, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*c, a->Seal(kPacket, 0), &packet), std::nullopt);
  EXPECT_EQ(packet, kPacket);
}

TEST_F(GossipAuthTest, ABarePacketIsRefusedWithKeysUnlessAcceptedDuringARollout) {
  auto keyed = Node(kB, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*keyed, kPacket), GossipRefusal::kUnauthenticated);
  EXPECT_EQ(Open(*keyed, ""), GossipRefusal::kUnauthenticated);

  GossipAuthOptions rollout;
  rollout.keys = {Key("k1", 'x')};
  rollout.accept_unauthenticated = true;
  auto lenient = Node(kB, rollout);
  std::string packet;
  EXPECT_EQ(Open(*lenient, kPacket, &packet), std::nullopt);
  EXPECT_EQ(packet, kPacket);

  // Without keys: bare packets as before, and sealed ones unchecked, so a
  // region can switch to keys one node at a time.
  auto plain = Node(kB, {}, &now_);
  EXPECT_EQ(plain->Seal(kPacket, kA), kPacket);
  EXPECT_EQ(Open(*plain, kPacket, &packet), std::nullopt);
  auto a = Node(kA, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*plain, a->Seal(kPacket, kB), &packet), std::nullopt);
  EXPECT_EQ(packet, kPacket);
}

TEST_F(GossipAuthTest, AnyFlippedBitOrCutIsRefused) {
  auto a = Node(kA, {Key("k1", 'x')}, &now_);
  const std::string d = a->Seal(kPacket, kB);
  for (size_t i = 0; i < d.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = d;
      flipped[i] = static_cast<char>(flipped[i] ^ (1 << bit));
      auto b = Node(kB, {Key("k1", 'x')}, &now_);
      EXPECT_NE(Open(*b, flipped), std::nullopt) << "byte " << i << " bit " << bit;
    }
  }
  for (size_t n = 0; n < d.size(); ++n) {
    auto b = Node(kB, {Key("k1", 'x')}, &now_);
    EXPECT_NE(Open(*b, d.substr(0, n)), std::nullopt) << n << " bytes";
  }
  auto b = Node(kB, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*b, d.substr(0, 10)), GossipRefusal::kMalformed);
  EXPECT_EQ(Open(*b, d), std::nullopt);
}

TEST_F(GossipAuthTest, AnotherKeyIsRefusedByIdOrByMac) {
  auto b = Node(kB, {Key("k1", 'x')}, &now_);
  auto stranger = Node(kA, {Key("k9", 'x')}, &now_);
  EXPECT_EQ(Open(*b, stranger->Seal(kPacket, kB)), GossipRefusal::kUnknownKey);
  auto forger = Node(kA, {Key("k1", 'y')}, &now_);
  EXPECT_EQ(Open(*b, forger->Seal(kPacket, kB)), GossipRefusal::kBadMac);
  // Neither left a trace: the right key's datagram of the same stamp opens.
  auto a = Node(kA, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*b, a->Seal(kPacket, kB)), std::nullopt);
}

TEST_F(GossipAuthTest, ADatagramMeantForAnotherMemberIsRefused) {
  auto a = Node(kA, {Key("k1", 'x')}, &now_);
  auto b = Node(kB, {Key("k1", 'x')}, &now_);
  auto c = Node(kC, {Key("k1", 'x')}, &now_);
  const std::string to_c = a->Seal(kPacket, kC);
  EXPECT_EQ(Open(*b, to_c), GossipRefusal::kMisdirected);
  EXPECT_EQ(Open(*c, to_c), std::nullopt);
}

TEST_F(GossipAuthTest, AReplayedDatagramIsRefusedAndReorderedOnesAreNot) {
  auto a = Node(kA, {Key("k1", 'x')}, &now_);
  auto b = Node(kB, {Key("k1", 'x')}, &now_);
  std::vector<std::string> sent;
  for (int i = 0; i < 5; ++i) sent.push_back(a->Seal(kPacket, kB));  // one clock tick: stamps +1
  for (int i : {4, 0, 2, 1, 3}) EXPECT_EQ(Open(*b, sent[i]), std::nullopt) << i;
  now_ += 10s;
  for (int i : {0, 1, 2, 3, 4}) EXPECT_EQ(Open(*b, sent[i]), GossipRefusal::kReplayed) << i;
  EXPECT_EQ(Open(*b, a->Seal(kPacket, kB)), std::nullopt);
}

TEST_F(GossipAuthTest, AStampOutsideTheWindowIsRefused) {
  WallTime a_clock = now_;
  auto a = Node(kA, {Key("k1", 'x')}, &a_clock);
  auto b = Node(kB, {Key("k1", 'x')}, &now_);
  const std::string early = a->Seal(kPacket, kB);
  now_ += 31s;
  EXPECT_EQ(Open(*b, early), GossipRefusal::kStale);
  a_clock = now_ + 31s;  // a clock running ahead
  EXPECT_EQ(Open(*b, a->Seal(kPacket, kB)), GossipRefusal::kStale);
  WallTime late_clock = now_ + 29s;
  auto late = Node(kC, {Key("k1", 'x')}, &late_clock);
  EXPECT_EQ(Open(*b, late->Seal(kPacket, kB)), std::nullopt);
}

TEST_F(GossipAuthTest, ARestartedReceiverRefusesWhatWasStampedBeforeItStarted) {
  auto a = Node(kA, {Key("k1", 'x')}, &now_);
  const std::string old = a->Seal(kPacket, kB);
  auto b = Node(kB, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*b, old), std::nullopt);
  // b restarts 5 s later: the datagram is in the window, but older than
  // its start less the slack (2 s), so it cannot bring back what it said.
  now_ += 5s;
  auto restarted = Node(kB, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*restarted, old), GossipRefusal::kReplayed);
  // What was stamped within the slack before the start is accepted.
  const std::string recent = a->Seal(kPacket, kB);
  now_ += 1s;
  auto again = Node(kB, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*again, recent), std::nullopt);
}

TEST_F(GossipAuthTest, StampsGrowWhenTheClockStepsBack) {
  WallTime a_clock = now_;
  auto a = Node(kA, {Key("k1", 'x')}, &a_clock);
  auto b = Node(kB, {Key("k1", 'x')}, &now_);
  EXPECT_EQ(Open(*b, a->Seal(kPacket, kB)), std::nullopt);
  a_clock -= 5s;
  EXPECT_EQ(Open(*b, a->Seal(kPacket, kB)), std::nullopt);
  EXPECT_EQ(Open(*b, a->Seal(kPacket, kB)), std::nullopt);
}

TEST_F(GossipAuthTest, MembersWhoseFirstKeysDifferAnswerInAKeyBothHold) {
  // A is a step ahead in a rotation: it sends under "new" and still
  // accepts "old"; B holds only "old".
  auto a = Node(kA, {Key("new", 'n'), Key("old", 'o')}, &now_);
  auto b = Node(kB, {Key("old", 'o')}, &now_);
  EXPECT_EQ(Open(*b, a->Seal(kPacket, 0)), GossipRefusal::kUnknownKey);
  EXPECT_EQ(Open(*a, b->Seal(kPacket, 0)), std::nullopt);
  // Having heard B under "old", A answers B under it.
  EXPECT_EQ(Open(*b, a->Seal(kPacket, kB)), std::nullopt);
  // A member A has not heard from still gets "new".
  auto c = Node(kC, {Key("new", 'n')}, &now_);
  EXPECT_EQ(Open(*c, a->Seal(kPacket, kC)), std::nullopt);
}

TEST_F(GossipAuthTest, NewKeysTakeOverAndAMemberKeepsTheKeyItLastUsed) {
  auto a = Node(kA, {Key("old", 'o')}, &now_);
  auto b = Node(kB, {Key("old", 'o')}, &now_);
  const std::string before = b->Seal(kPacket, kA);
  EXPECT_EQ(Open(*a, before), std::nullopt);
  // A's file gains "new" in front of "old" (a reload).
  a->SetKeys({Key("new", 'n'), Key("old", 'o')});
  // B last used "old", which now sits second: A still answers it under it.
  EXPECT_EQ(Open(*b, a->Seal(kPacket, kB)), std::nullopt);
  // A member not heard from gets the new first key.
  auto c = Node(kC, {Key("new", 'n')}, &now_);
  EXPECT_EQ(Open(*c, a->Seal(kPacket, kC)), std::nullopt);
  // The replay state stays: B's datagram accepted before is refused again.
  EXPECT_EQ(Open(*a, before), GossipRefusal::kReplayed);
  // "old" dropped: A answers B under "new", and refuses what "old" seals.
  a->SetKeys({Key("new", 'n')});
  const std::string to_b = a->Seal(kPacket, kB);
  EXPECT_EQ(Open(*b, to_b), GossipRefusal::kUnknownKey);
  EXPECT_EQ(Open(*Node(kB, {Key("new", 'n')}, &now_), to_b), std::nullopt);
  EXPECT_EQ(Open(*a, b->Seal(kPacket, kA)), GossipRefusal::kUnknownKey);
}

TEST_F(GossipAuthTest, MemoryIsBoundedAndNoDatagramIsEverAcceptedTwice) {
  GossipAuthOptions o;
  o.keys = {Key("k1", 'x')};
  o.wall_clock = [this] { return now_; };
  o.max_senders = 4;
  o.max_stamps_per_sender = 8;
  auto b = Node(kB, o);
  std::vector<std::unique_ptr<GossipAuthenticator>> senders;
  std::vector<std::string> sent;
  for (int round = 0; round < 20; ++round) {
    now_ += 100ms;
    for (int s = 0; s < 10; ++s) {
      if (senders.size() <= static_cast<size_t>(s)) {
        senders.push_back(Node(0x100 + static_cast<ReplicaId>(s), {Key("k1", 'x')}, &now_));
      }
      sent.push_back(senders[s]->Seal(kPacket, kB));
      // Within bounds, every fresh datagram is accepted except where an
      // eviction raised the floor past it.
      Open(*b, sent.back());
      EXPECT_LE(b->senders(), 4u);
    }
  }
  for (const std::string& d : sent) EXPECT_EQ(Open(*b, d), GossipRefusal::kReplayed);
  // After the window every old sender's state may go; new ones are heard.
  now_ += 31s;
  for (const std::string& d : sent) EXPECT_EQ(Open(*b, d), GossipRefusal::kStale);
  EXPECT_EQ(Open(*b, senders[0]->Seal(kPacket, kB)), std::nullopt);
}

}  // namespace
}  // namespace geokv
