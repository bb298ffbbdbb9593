// The coordinator on its own, as a second front end would use it: plain
// requests in, plain results out, with a real store, committer and
// replicator, and a fake forwarder and fake link answers.

#include "server/coordinator.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "testing/test_dir.h"

namespace geokv {
namespace {

class FakeFacts final : public ReplicaFacts {
 public:
  bool Syncing(size_t) const override { return false; }
  bool Dropped(size_t) const override { return false; }
  bool Settled(size_t) const override { return true; }
  bool IsConnected(ReplicaId node) const override { return connected.count(node) > 0; }
  std::set<ReplicaId> connected;
};

// Records what it is asked to forward; answers with `answer`, or rejects
// with `failure` when set.
class FakeForwarder final : public Forwarder {
 public:
  kj::Promise<Result> Forward(ReplicaId node, const ParsedRequest& request, Consistency level,
                              std::chrono::milliseconds) override {
    sent.push_back({node, request, level});
    if (failure) return kj::Exception(*failure, __FILE__, __LINE__, kj::heapString("lost"));
    return answer;
  }
  struct Sent {
    ReplicaId node;
    ParsedRequest request;
    Consistency level;
  };
  std::vector<Sent> sent;
  Result answer;
  std::optional<kj::Exception::Type> failure;
};

ParsedRequest Request(RequestKind kind, std::string key, Consistency level = Consistency::kOne) {
  ParsedRequest r;
  r.kind = kind;
  r.key = std::move(key);
  r.consistency = level;
  return r;
}

// An event loop, a store, its committer and a replicator, for a
// coordinator.
struct Backend {
  explicit Backend(const std::string& path) {
    auto opened = Store::Open(path, StoreOptions{Durability::kWal});
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    store = std::move(opened).value();
    committer = std::make_unique<GroupCommitter>(*store, 100);
    async = std::make_unique<AsyncStore>(*store, 1);
    replicator = std::make_unique<Replicator>(*store, *async, *committer, *io.provider,
                                              ReplicatorOptions{});
  }
  // A coordinator over this backend that reports to `metrics`.
  std::unique_ptr<Coordinator> CoordinatorOver(const ClusterView& view, Forwarder& forwarder,
                                               const ReplicaFacts& facts, Metrics& metrics) {
    CoordinatorOptions options;
    options.metrics = &metrics;
    options.facts = &facts;
    return std::make_unique<Coordinator>(*async, *committer, *replicator, view, forwarder,
                                         options);
  }
  // Ends what runs; `coordinator` first.
  void Close(kj::WaitScope& ws, std::unique_ptr<Coordinator>& coordinator) {
    committer->Drain().wait(ws);
    coordinator.reset();
    replicator.reset();
    async.reset();
  }
  kj::AsyncIoContext io = kj::setupAsyncIo();
  std::unique_ptr<Store> store;
  std::unique_ptr<GroupCommitter> committer;
  std::unique_ptr<AsyncStore> async;
  std::unique_ptr<Replicator> replicator;
};

TEST(Coordinator, RunsPlainRequestsOffTheLoop) {
  geokv::testing::TestDir dir;
  Backend b(dir.Sub("db"));
  auto& ws = b.io.waitScope;
  Store* store = b.store.get();
  Member self;
  self.id = store->node_id();
  self.name = "n1";
  self.region = "eu";
  ClusterView view(self, 3, 16);
  FakeFacts facts;
  FakeForwarder forwarder;
  Metrics metrics("eu");
  auto coordinator = b.CoordinatorOver(view, forwarder, facts, metrics);

  ParsedRequest set = Request(RequestKind::kSet, "k");
  set.op = LwwSet{"v"};
  Answer written = coordinator->Run(std::move(set), false).wait(ws);
  ASSERT_FALSE(written.overloaded);
  ASSERT_TRUE(written.results[0].status.ok()) << written.results[0].status.ToString();
  auto token = DecodeToken(written.results[0].token);
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(token->seq, 1u);

  // With the only reader thread held, a read waits for it while the loop
  // goes on serving timers.
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  auto held = b.async->Run([&](Store&) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
    return 0;
  });
  auto read = coordinator->Run(Request(RequestKind::kGet, "k"), false).eagerlyEvaluate(nullptr);
  b.io.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).wait(ws);
  EXPECT_FALSE(read.poll(ws)) << "the read did not wait for the reader pool";
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  held.wait(ws);
  Answer answer = read.wait(ws);
  ASSERT_EQ(answer.results.size(), 1u);
  EXPECT_TRUE(answer.results[0].status.ok());
  EXPECT_EQ(answer.results[0].value, std::optional<std::string>("v"));

  Answer absent = coordinator->Run(Request(RequestKind::kGet, "never"), false).wait(ws);
  EXPECT_TRUE(absent.results[0].status.IsNotFound());
  b.Close(ws, coordinator);
}

TEST(Coordinator, ForwardsTheParsedRequestAndSaysWhatAFailureMeans) {
  geokv::testing::TestDir dir;
  Backend b(dir.Sub("db"));
  auto& ws = b.io.waitScope;
  Store* store = b.store.get();
  std::vector<Member> members;
  for (ReplicaId id : {store->node_id(), ReplicaId{2}, ReplicaId{3}, ReplicaId{4}}) {
    Member m;
    m.id = id;
    m.name = "n" + std::to_string(id == store->node_id() ? 1 : id);
    m.region = "eu";
    members.push_back(m);
  }
  ClusterView view(members[0], 3, 16);
  view.SetLocal(members);
  std::string key;
  for (int i = 0; key.empty(); ++i) {
    std::string k = "k" + std::to_string(i);
    auto owners = view.Owners(k);
    if (std::find(owners.begin(), owners.end(), store->node_id()) == owners.end()) key = k;
  }
  FakeFacts facts;
  facts.connected = {2, 3, 4};
  FakeForwarder forwarder;
  forwarder.answer.value = "there";
  Metrics metrics("eu");
  auto coordinator = b.CoordinatorOver(view, forwarder, facts, metrics);

  ParsedRequest get = Request(RequestKind::kGet, key, Consistency::kDefault);
  get.tokens = {{7, 1}};
  Answer answer = coordinator->Run(std::move(get), false).wait(ws);
  ASSERT_EQ(forwarder.sent.size(), 1u);
  EXPECT_EQ(forwarder.sent[0].node, view.Owners(key)[0]);
  EXPECT_EQ(forwarder.sent[0].request.key, key);
  EXPECT_EQ(forwarder.sent[0].request.tokens.size(), 1u);
  EXPECT_EQ(forwarder.sent[0].level, Consistency::kQuorum) << "the default, resolved";
  EXPECT_EQ(answer.results[0].value, std::optional<std::string>("there"));
  EXPECT_EQ(metrics.forwarded.Value(), 1);

  // A write whose forward lost its connection may have been applied there.
  forwarder.failure = kj::Exception::Type::DISCONNECTED;
  ParsedRequest incr = Request(RequestKind::kIncrBy, key);
  incr.op = CounterAdd{1};
  Result lost = coordinator->Run(incr, false).wait(ws).results[0];
  EXPECT_EQ(lost.status.code(), Status::Code::kTimeout);
  EXPECT_NE(lost.status.message().find("the write may have been applied"), std::string::npos)
      << lost.status.message();
  forwarder.failure = kj::Exception::Type::FAILED;
  Result refused = coordinator->Run(incr, false).wait(ws).results[0];
  EXPECT_EQ(refused.status.code(), Status::Code::kUnavailable);
  // An owner that shed the write ran nothing: the call is shed as this
  // node's own overload would be (retry later), not reported as a timeout.
  forwarder.failure = kj::Exception::Type::OVERLOADED;
  Answer shed = coordinator->Run(incr, false).wait(ws);
  EXPECT_TRUE(shed.overloaded);
  ASSERT_EQ(shed.results.size(), 1u);
  EXPECT_EQ(shed.results[0].status.code(), Status::Code::kUnavailable)
      << shed.results[0].status.ToString();
  // In a batch, only that write is refused, unavailable.
  std::vector<ParsedRequest> batch;
  batch.push_back(incr);
  Answer batch_shed = coordinator->RunBatch(std::move(batch)).wait(ws);
  EXPECT_FALSE(batch_shed.overloaded);
  ASSERT_EQ(batch_shed.results.size(), 1u);
  EXPECT_EQ(batch_shed.results[0].status.code(), Status::Code::kUnavailable);
  EXPECT_EQ(store->LastSeq(), 0u) << "nothing ran here";

  // Sent here by another node, the request runs here and is never sent on.
  forwarder.sent.clear();
  Result here = coordinator->Run(incr, true).wait(ws).results[0];
  EXPECT_TRUE(here.status.ok()) << here.status.ToString();
  EXPECT_TRUE(forwarder.sent.empty());
  EXPECT_EQ(store->LastSeq(), 1u);
  b.Close(ws, coordinator);
}

}  // namespace
}  // namespace geokv
