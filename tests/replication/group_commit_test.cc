// The group committer's trims: they run on the writer thread after the
// writes of their group, and say why when they cannot. Its remote joins:
// encoded values decoded there, all or nothing, and refused whole when a
// stamp in them is too far ahead of this node's wall clock; and the
// members of other regions it keeps in the store.

#include "replication/group_commit.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "crdt/codec.h"
#include "crdt/hlc.h"
#include "crdt/lww_register.h"
#include "tests/storage/store_fixture.h"

namespace geokv {
namespace {

using GroupCommitTrim = testing::StoreTest;

TEST_F(GroupCommitTrim, TrimsTheLogOnTheWriterThreadAfterTheGroupsWrites) {
  auto io = kj::setupAsyncIo();
  Store* store = store_.get();
  {
    GroupCommitter committer(*store, 100);
    for (int i = 0; i < 5; ++i) {
      WriteResult r = committer.Submit("k" + std::to_string(i), LwwSet{"v"}).wait(io.waitScope);
      ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    }
    ASSERT_EQ(store->LastSeq(), 5u);
    // A write and a trim queued in the same turn: neither runs on this
    // thread, and the trim runs after the group's write is durable.
    auto write = committer.Submit("k5", LwwSet{"v"});
    auto trim = committer.SubmitTrim(3);
    EXPECT_EQ(store->TrimmedThrough(), 0u);  // nothing ran on this thread
    EXPECT_TRUE(write.wait(io.waitScope).status.ok());
    Status trimmed = trim.wait(io.waitScope);
    EXPECT_TRUE(trimmed.ok()) << trimmed.ToString();
    EXPECT_EQ(store->TrimmedThrough(), 3u);
    auto read = store->ReadLog(3, 100, 1 << 20);
    ASSERT_TRUE(read.ok()) << read.status().ToString();
    ASSERT_EQ(read->size(), 3u);
    EXPECT_EQ(read->front().seq, 4u);
    EXPECT_EQ(read->back().seq, 6u);
    // Past the last entry: refused, and nothing changes.
    Status beyond = committer.SubmitTrim(100).wait(io.waitScope);
    EXPECT_EQ(beyond.code(), Status::Code::kInvalidArgument) << beyond.ToString();
    EXPECT_EQ(store->TrimmedThrough(), 3u);
    committer.Drain().wait(io.waitScope);
  }
}

TEST_F(GroupCommitTrim, KeepsPeerMembersOnTheWriterThreadAcrossAReopen) {
  auto io = kj::setupAsyncIo();
  EXPECT_EQ(store_->PeerMembers(), "");
  {
    GroupCommitter committer(*store_, 100);
    RemoteApply apply;
    apply.peer_members = "first";
    ASSERT_TRUE(committer.SubmitRemote(std::move(apply)).wait(io.waitScope).status.ok());
    EXPECT_EQ(store_->PeerMembers(), "first");
    apply = RemoteApply();
    apply.peer_members = "second";
    ASSERT_TRUE(committer.SubmitRemote(std::move(apply)).wait(io.waitScope).status.ok());
    // An apply without members leaves them as they are.
    ASSERT_TRUE(committer.SubmitRemote(RemoteApply()).wait(io.waitScope).status.ok());
    committer.Drain().wait(io.waitScope);
  }
  EXPECT_EQ(store_->LastSeq(), 0u);  // not a logged write
  Reopen();
  EXPECT_EQ(store_->PeerMembers(), "second");
}

TEST(EncodedJoins, KeepsKeysAndValuesInOrderAndCopiesATail) {
  EncodedJoins joins;
  joins.Add("a", "1");
  joins.Add("", "");
  joins.Add("ccc", std::string("\0x", 2));
  ASSERT_EQ(joins.size(), 3u);
  EXPECT_EQ(joins.key(0), "a");
  EXPECT_EQ(joins.encoded(0), "1");
  EXPECT_EQ(joins.key(1), "");
  EXPECT_EQ(joins.encoded(1), "");
  EXPECT_EQ(joins.key(2), "ccc");
  EXPECT_EQ(joins.encoded(2), std::string("\0x", 2));
  EncodedJoins tail = joins.From(1);
  ASSERT_EQ(tail.size(), 2u);
  EXPECT_EQ(tail.key(1), "ccc");
  EXPECT_TRUE(joins.From(3).empty());
}

using GroupCommitJoins = testing::StoreTest;

TEST_F(GroupCommitJoins, AValueThatDoesNotDecodeFailsTheWholeApply) {
  auto io = kj::setupAsyncIo();
  Store* store = store_.get();
  const ReplicaId other = store->node_id() + 1;
  {
    GroupCommitter committer(*store, 100);
    RemoteApply bad;
    bad.origin = other;
    bad.first = 1;
    bad.through = 2;
    bad.joins.Add("k1", EncodeCrdt(LwwRegister(HlcTimestamp{1, 0}, other, std::string("x"))));
    bad.joins.Add("k2", "not a value");
    WriteResult r = committer.SubmitRemote(std::move(bad)).wait(io.waitScope);
    EXPECT_EQ(r.status.code(), Status::Code::kInvalidArgument) << r.status.ToString();
    EXPECT_NE(r.status.ToString().find("k2"), std::string::npos) << r.status.ToString();
    auto k1 = store->Get("k1", CrdtType::kLww);
    ASSERT_TRUE(k1.ok()) << k1.status().ToString();
    EXPECT_FALSE(k1->has_value());
    EXPECT_EQ(store->AppliedPositions().count(other), 0u);
    committer.Drain().wait(io.waitScope);
  }
}


// The live LWW value at `key`, or nullopt.
std::optional<std::string> LwwValue(Store& store, const std::string& key) {
  auto got = store.Get(key, CrdtType::kLww);
  EXPECT_TRUE(got.ok()) << got.status().ToString();
  if (!got.ok() || !got->has_value()) return std::nullopt;
  return std::get<LwwRegister>(**got).value();
}

TEST_F(GroupCommitJoins, RefusesAStampTooFarAheadUntilTheClockCatchesUp) {
  auto io = kj::setupAsyncIo();
  ManualClock wall(1'000'000);
  HybridClock clock(&wall);
  StoreOptions options;
  options.clock = &clock;
  Reopen(options);
  Store* store = store_.get();
  const ReplicaId other = store->node_id() + 1;
  {
    GroupCommitter committer(*store, 100);
    committer.SetMaxStampAhead(std::chrono::milliseconds(500));
    ASSERT_TRUE(committer.Submit("k", LwwSet{"old"}).wait(io.waitScope).status.ok());
    const HlcTimestamp before = clock.Last();
    auto batch = [&](HlcTimestamp ahead) {
      RemoteApply apply;
      apply.origin = other;
      apply.first = 1;
      apply.through = 2;
      apply.joins.Add("k0", EncodeCrdt(LwwRegister(HlcTimestamp{1'000'100, 0}, other,
                                                   std::string("near"))));
      apply.joins.Add("k", EncodeCrdt(LwwRegister(ahead, other, std::string("ahead"))));
      return apply;
    };
    // 1.5 s ahead, the limit 0.5 s: nothing of the batch is applied.
    WriteResult r = committer.SubmitRemote(batch({1'001'500, 0})).wait(io.waitScope);
    EXPECT_EQ(r.status.code(), Status::Code::kUnavailable) << r.status.ToString();
    EXPECT_NE(r.status.message().find("1001500.0"), std::string::npos) << r.status.ToString();
    EXPECT_NE(r.status.message().find("--max-clock-offset 500 ms"), std::string::npos)
        << r.status.ToString();
    EXPECT_EQ(LwwValue(*store, "k"), std::optional<std::string>("old"));
    EXPECT_EQ(LwwValue(*store, "k0"), std::nullopt);
    EXPECT_EQ(store->AppliedPositions().count(other), 0u);
    EXPECT_EQ(clock.Last(), before);
    EXPECT_EQ(committer.stamps_refused(), 1u);

    // Full states (anti-entropy, read repair) are refused alike.
    RemoteApply states;
    states.joins.Add("k", EncodeCrdt(LwwRegister(HlcTimestamp{1'001'500, 0}, other,
                                                 std::string("ahead"))));
    r = committer.SubmitRemote(std::move(states)).wait(io.waitScope);
    EXPECT_EQ(r.status.code(), Status::Code::kUnavailable) << r.status.ToString();
    EXPECT_EQ(committer.stamps_refused(), 2u);

    // A stamp beyond the valid range does not even decode.
    r = committer.SubmitRemote(batch({UINT64_MAX, UINT32_MAX})).wait(io.waitScope);
    EXPECT_EQ(r.status.code(), Status::Code::kInvalidArgument) << r.status.ToString();
    EXPECT_EQ(LwwValue(*store, "k"), std::optional<std::string>("old"));
    EXPECT_EQ(clock.Last(), before);

    // Once the wall clock has caught up, the same batch applies.
    wall.Set(1'001'000);
    r = committer.SubmitRemote(batch({1'001'500, 0})).wait(io.waitScope);
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_EQ(LwwValue(*store, "k"), std::optional<std::string>("ahead"));
    EXPECT_EQ(LwwValue(*store, "k0"), std::optional<std::string>("near"));
    EXPECT_EQ(store->AppliedPositions().at(other), 2u);
    // And the next local write wins over it.
    ASSERT_TRUE(committer.Submit("k", LwwSet{"new"}).wait(io.waitScope).status.ok());
    EXPECT_EQ(LwwValue(*store, "k"), std::optional<std::string>("new"));
    committer.Drain().wait(io.waitScope);
  }
  store_.reset();  // before the clock it uses
}

}  // namespace
}  // namespace geokv
