// The group committer's trims: they run on the writer thread after the
// writes of their group, and say why when they cannot.

#include "replication/group_commit.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <memory>
#include <string>

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

}  // namespace
}  // namespace geokv
