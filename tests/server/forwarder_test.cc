// The forwarder over a real peer link: a coordinator whose key another
// node owns, that node's peer service reached over loopback in this
// process. What the owner answers decides what the caller is told: a write
// it shed for load is a definite refusal, one it never answered may have
// been applied.

#include "server/forwarder.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/replication/replication_fixture.h"

namespace geokv {
namespace {

TEST(ReplicatorForwarder, AWriteTheOwnerShedsIsOverloadedAndOneItNeverAnswersATimeout) {
  auto io = kj::setupAsyncIo();
  auto& ws = io.waitScope;
  testing::Pair pair(io);
  testing::Node& a = pair.a;
  testing::Node& b = pair.b;

  // The owner sheds every write, as its KvService does when too many
  // writes wait to commit there; or, once `hold`, never answers.
  size_t calls = 0;
  bool hold = false;
  auto held = kj::newPromiseAndFulfiller<void>();
  kj::ForkedPromise<void> never = held.promise.fork();
  b.replicator->SetForwardHandler(
      [&](rpc::Request::Reader, rpc::Consistency, rpc::Reply::Builder) -> kj::Promise<void> {
        ++calls;
        if (hold) return never.addBranch();
        kj::throwFatalException(
            KJ_EXCEPTION(OVERLOADED, "too many writes waiting to commit; retry later"));
      });
  pair.Link();
  kj::Timer& timer = io.provider->getTimer();
  for (int i = 0; i < 500 && !a.replicator->Peers()[0].connected; ++i) {
    timer.afterDelay(10 * kj::MILLISECONDS).wait(ws);
  }
  ASSERT_TRUE(a.replicator->Peers()[0].connected);

  // One region of a and b, each key with one owner: a key of b's.
  std::vector<Member> members;
  for (const auto& [id, name] : {std::pair<ReplicaId, std::string>{a.store->node_id(), "a"},
                                 {b.store->node_id(), "b"}}) {
    Member m;
    m.id = id;
    m.name = name;
    m.region = "eu";
    members.push_back(m);
  }
  ClusterView view(members[0], 1, 16);
  view.SetLocal(members);
  std::string key;
  for (int i = 0; key.empty(); ++i) {
    std::string k = "k" + std::to_string(i);
    if (view.Owners(k) == std::vector<ReplicaId>{b.store->node_id()}) key = k;
  }
  ReplicatorForwarder forwarder(*a.replicator);
  Metrics metrics("eu");
  CoordinatorOptions options;
  options.request_timeout = std::chrono::milliseconds(200);
  options.metrics = &metrics;
  auto coordinator = std::make_unique<Coordinator>(*a.reader, *a.committer, *a.replicator, view,
                                                   forwarder, options);
  ParsedRequest set;
  set.kind = RequestKind::kSet;
  set.key = key;
  set.op = LwwSet{"v"};
  set.consistency = Consistency::kOne;

  Answer shed = coordinator->Run(set, false).wait(ws);
  EXPECT_EQ(calls, 1u);
  EXPECT_TRUE(shed.overloaded) << "a definite refusal, to retry; not a timeout";
  ASSERT_EQ(shed.results.size(), 1u);
  EXPECT_EQ(shed.results[0].status.code(), Status::Code::kUnavailable)
      << shed.results[0].status.ToString();

  hold = true;
  Answer lost = coordinator->Run(set, false).wait(ws);
  EXPECT_EQ(calls, 2u);
  EXPECT_FALSE(lost.overloaded);
  ASSERT_EQ(lost.results.size(), 1u);
  EXPECT_EQ(lost.results[0].status.code(), Status::Code::kTimeout)
      << lost.results[0].status.ToString();
  EXPECT_NE(lost.results[0].status.message().find("may have been applied"), std::string::npos)
      << lost.results[0].status.ToString();
  EXPECT_EQ(a.store->LastSeq(), 0u) << "nothing ran here";

  held.fulfiller->fulfill();
  a.committer->Drain().wait(ws);
  coordinator.reset();
  pair.Shutdown(ws);
}

}  // namespace
}  // namespace geokv
