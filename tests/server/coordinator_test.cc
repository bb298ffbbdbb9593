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
  bool Vouches(size_t) const override { return true; }
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
  // `clock`: the store's clock (nullptr: the system's). `loop`: a backend
  // whose event loop this one shares (nullptr: its own).
  explicit Backend(const std::string& path, HybridClock* clock = nullptr,
                   Backend* loop = nullptr)
      : own_io(loop == nullptr ? std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo())
                               : nullptr),
        io(loop == nullptr ? *own_io : loop->io) {
    StoreOptions store_options{Durability::kWal};
    store_options.clock = clock;
    auto opened = Store::Open(path, store_options);
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
  std::unique_ptr<kj::AsyncIoContext> own_io;
  kj::AsyncIoContext& io;
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

// The LWW state of `key` on `store`.
LwwRegister LwwAt(Store& store, const std::string& key) {
  auto got = store.Get(key, CrdtType::kLww);
  EXPECT_TRUE(got.ok()) << got.status().ToString();
  if (!got.ok() || !*got) return LwwRegister();
  return std::get<LwwRegister>(**got);
}

// A client writes k = v1 through node a, whose clock is 400 ms ahead, then
// k = v2 through node b, which has not received v1, presenting v1's token:
// v2 is stamped above v1 and wins on both nodes once they exchange states.
TEST(Coordinator, AWriteWithATokenIsStampedAboveTheTokensWrite) {
  geokv::testing::TestDir dir;
  ManualClock wall_a(1'700'000'000'400), wall_b(1'700'000'000'000);
  HybridClock clock_a(&wall_a), clock_b(&wall_b);
  Backend a(dir.Sub("a"), &clock_a);
  Backend b(dir.Sub("b"), &clock_b, &a);
  auto& ws = a.io.waitScope;
  auto view_of = [](Store& store, const char* name) {
    Member self;
    self.id = store.node_id();
    self.name = name;
    self.region = "eu";
    return ClusterView(self, 1, 16);
  };
  ClusterView view_a = view_of(*a.store, "a"), view_b = view_of(*b.store, "b");
  FakeFacts facts;
  FakeForwarder forwarder;
  Metrics metrics_a("eu"), metrics_b("eu");
  auto coord_a = a.CoordinatorOver(view_a, forwarder, facts, metrics_a);
  auto coord_b = b.CoordinatorOver(view_b, forwarder, facts, metrics_b);

  ParsedRequest first = Request(RequestKind::kSet, "k");
  first.op = LwwSet{"v1"};
  Answer one = coord_a->Run(std::move(first), false).wait(ws);
  ASSERT_TRUE(one.results[0].status.ok()) << one.results[0].status.ToString();
  auto token = DecodeToken(one.results[0].token);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  const HlcTimestamp v1_stamp = LwwAt(*a.store, "k").timestamp();
  EXPECT_LE(v1_stamp, token->stamp) << "the token's stamp bounds its write's";

  wall_b.Advance(10);  // v2 is written after v1, by the client's watch
  ParsedRequest second = Request(RequestKind::kSet, "k");
  second.op = LwwSet{"v2"};
  second.tokens.push_back(*token);
  Answer two = coord_b->Run(std::move(second), false).wait(ws);
  ASSERT_TRUE(two.results[0].status.ok()) << two.results[0].status.ToString();
  const LwwRegister v2 = LwwAt(*b.store, "k");
  EXPECT_GT(v2.timestamp(), v1_stamp)
      << "v2 " << DescribeStamp(v2.timestamp()) << ", v1 " << DescribeStamp(v1_stamp);

  // Replication: each node joins the other's state.
  for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
    auto states = from->store->GetStates("k");
    ASSERT_TRUE(states.ok()) << states.status().ToString();
    auto group = to->store->BeginGroup();
    for (const Crdt& state : *states) ASSERT_TRUE(group->Join("k", state).ok());
    ASSERT_TRUE(group->Commit().ok());
  }
  EXPECT_EQ(LwwAt(*a.store, "k").value(), std::optional<std::string>("v2"));
  EXPECT_EQ(LwwAt(*b.store, "k").value(), std::optional<std::string>("v2"));

  // A token further ahead of b's clock than --max-clock-offset is refused
  // with nothing applied, and b's clock stays where it was.
  CausalToken far = *token;
  far.stamp = HlcTimestamp{wall_b.NowMillis() + 600, 0};
  const HlcTimestamp before = clock_b.Last();
  ParsedRequest third = Request(RequestKind::kSet, "k");
  third.op = LwwSet{"v3"};
  third.tokens.push_back(far);
  Answer refused = coord_b->Run(std::move(third), false).wait(ws);
  EXPECT_EQ(refused.results[0].status.code(), Status::Code::kUnavailable)
      << refused.results[0].status.ToString();
  EXPECT_EQ(clock_b.Last(), before);
  EXPECT_EQ(LwwAt(*b.store, "k").value(), std::optional<std::string>("v2"));

  b.Close(ws, coord_b);
  a.Close(ws, coord_a);
}

}  // namespace
}  // namespace geokv
