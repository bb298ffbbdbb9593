// The client API in-process: a real store and group committer behind a
// KvService, called over a Cap'n Proto two-party connection on a pipe.

#include "server/kv_service.h"

#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <tuple>
#include <memory>
#include <string>
#include <vector>

#include "schema/kv_text.h"
#include "replication/causal_token.h"
#include "replication/group_commit.h"
#include "replication/replicator.h"
#include "crdt/codec.h"
#include "server/api_codec.h"
#include "server/forwarder.h"
#include "storage/async_store.h"
#include "testing/test_dir.h"
#include "util/secret_hash.h"

namespace geokv {
namespace {

using Code = rpc::Outcome::Code;

struct Limits {
  size_t max_key_bytes = 64;
  size_t max_value_bytes = 1024;
  size_t max_pending = 1000;
  size_t max_message_bytes = 64 << 20;
};

class KvServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(Limits()); }

  // With `users_file`, the connection is served a Login first, as a node
  // with --users serves it.
  void Start(const Limits& limits, const std::string& users_file = "") {
    auto store = Store::Open(dir_.Sub("db"), StoreOptions{Durability::kWal});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    committer_ = std::make_unique<GroupCommitter>(*store_, limits.max_pending);
    ReplicatorOptions replication;
    replication.region = "eu";
    replication.token_wait = std::chrono::milliseconds(300);
    async_store_ = std::make_unique<AsyncStore>(*store_, 2);
    replicator_ = std::make_unique<Replicator>(*store_, *async_store_, *committer_,
                                               *io_->provider, std::move(replication));
    Member self;
    self.id = store_->node_id();
    self.name = "n1";
    self.region = "eu";
    view_ = std::make_unique<ClusterView>(self, 3, Ring::kDefaultVnodes);
    forwarder_ = std::make_unique<ReplicatorForwarder>(*replicator_);
    CoordinatorOptions coordination;
    coordination.max_message_bytes = limits.max_message_bytes;
    coordination.metrics = &metrics_;
    coordinator_ = std::make_unique<Coordinator>(*async_store_, *committer_, *replicator_,
                                                 *view_, *forwarder_, coordination);
    RequestLimits request_limits{limits.max_key_bytes, limits.max_value_bytes};
    admin_ = std::make_unique<Admin>(*async_store_, *replicator_, *view_,
                                     AdminOptions{"n1", "eu", request_limits, &metrics_});
    const KvServiceOptions options{request_limits, &metrics_};
    capnp::Capability::Client service = nullptr;
    if (users_file.empty()) {
      auto own = kj::heap<KvService>(*coordinator_, *admin_, *replicator_, gate_, nullptr, options);
      service_ = own.get();
      service = kj::mv(own);
    } else {
      auto users = Authenticator::Open(users_file, *async_store_, metrics_);
      ASSERT_TRUE(users.ok()) << users.status().ToString();
      users_ = std::move(users).value();
      service = kj::heap<LoginService>(*users_, [this, options](Role role) {
        return capnp::Capability::Client(kj::heap<KvService>(
            *coordinator_, *admin_, *replicator_, gate_, nullptr, options,
            ClientAccess{role, users_.get()}));
      });
    }
    rpc_ = std::make_unique<Rpc>();
    auto pipe = io_->provider->newTwoWayPipe();
    // The server reads calls as RpcListener does: up to max-message-bytes.
    capnp::ReaderOptions reader;
    reader.traversalLimitInWords = limits.max_message_bytes / sizeof(capnp::word);
    rpc_->server_stream = kj::mv(pipe.ends[0]);
    rpc_->network = kj::heap<capnp::TwoPartyVatNetwork>(
        *rpc_->server_stream, capnp::rpc::twoparty::Side::SERVER, reader);
    rpc_->server = kj::heap(capnp::makeRpcServer(*rpc_->network, kj::mv(service)));
    rpc_->client_stream = kj::mv(pipe.ends[1]);
    rpc_->client = kj::heap<capnp::TwoPartyClient>(*rpc_->client_stream);
    kv_ = std::make_unique<rpc::GeoKv::Client>(rpc_->client->bootstrap().castAs<rpc::GeoKv>());
  }

  void TearDown() override {
    kv_.reset();
    if (rpc_) {
      rpc_->client = nullptr;
      rpc_->client_stream = nullptr;
    }
    if (committer_) committer_->Drain().wait(ws());
    rpc_.reset();
    users_.reset();
    admin_.reset();
    coordinator_.reset();
    forwarder_.reset();
    replicator_.reset();
    committer_.reset();
    async_store_.reset();
    store_.reset();
  }

  kj::WaitScope& ws() { return io_->waitScope; }
  rpc::GeoKv::Client& kv() { return *kv_; }

  // A write's outcome; its token goes to *token.
  template <typename Request>
  Code Finish(Request req, std::string* token = nullptr) {
    auto reply = req.send().wait(ws());
    last_message_ = reply.getOutcome().getMessage();
    if (token) *token = String(reply.getToken());
    return reply.getOutcome().getCode();
  }

  Code Set(const std::string& key, const std::string& value, std::string* token = nullptr) {
    auto req = kv().setRequest();
    req.setKey(AsData(key));
    req.setValue(AsData(value));
    return Finish(kj::mv(req), token);
  }

  Code Get(const std::string& key, std::string* value = nullptr,
           const std::vector<std::string>& tokens = {}) {
    auto req = kv().getRequest();
    req.setKey(AsData(key));
    auto list = req.initTokens(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) list.set(i, AsData(tokens[i]));
    auto reply = req.send().wait(ws());
    last_message_ = reply.getOutcome().getMessage();
    if (value) *value = String(reply.getValue());
    return reply.getOutcome().getCode();
  }

  Code Del(const std::string& key) {
    auto req = kv().delRequest();
    req.setKey(AsData(key));
    return Finish(kj::mv(req));
  }

  Code SAdd(const std::string& key, const std::vector<std::string>& elements,
            std::string* token = nullptr) {
    auto req = kv().sAddRequest();
    req.setKey(AsData(key));
    auto list = req.initElements(elements.size());
    for (size_t i = 0; i < elements.size(); ++i) list.set(i, AsData(elements[i]));
    return Finish(kj::mv(req), token);
  }

  Code SRem(const std::string& key, const std::vector<std::string>& elements,
            std::string* token = nullptr) {
    auto req = kv().sRemRequest();
    req.setKey(AsData(key));
    auto list = req.initElements(elements.size());
    for (size_t i = 0; i < elements.size(); ++i) list.set(i, AsData(elements[i]));
    return Finish(kj::mv(req), token);
  }

  Code IncrBy(const std::string& key, int64_t delta) {
    auto req = kv().incrByRequest();
    req.setKey(AsData(key));
    req.setDelta(delta);
    return Finish(kj::mv(req));
  }

  Code CounterGet(const std::string& key, int64_t* value) {
    auto req = kv().counterGetRequest();
    req.setKey(AsData(key));
    auto reply = req.send().wait(ws());
    last_message_ = reply.getOutcome().getMessage();
    *value = reply.getValue();
    return reply.getOutcome().getCode();
  }

  Code MvSet(const std::string& key, const std::string& value, const std::string& context) {
    auto req = kv().mvSetRequest();
    req.setKey(AsData(key));
    req.setValue(AsData(value));
    req.setContext(AsData(context));
    return Finish(kj::mv(req));
  }

  Code MvGet(const std::string& key, std::vector<std::string>* values, std::string* context) {
    auto req = kv().mvGetRequest();
    req.setKey(AsData(key));
    auto reply = req.send().wait(ws());
    values->clear();
    for (auto v : reply.getValues()) values->push_back(String(v));
    *context = String(reply.getContext());
    return reply.getOutcome().getCode();
  }

  std::vector<std::string> Types(const std::string& key) {
    auto req = kv().typeRequest();
    req.setKey(AsData(key));
    auto reply = req.send().wait(ws());
    EXPECT_EQ(reply.getOutcome().getCode(), Code::OK);
    std::vector<std::string> out;
    for (auto t : reply.getTypes()) out.push_back(std::to_string(static_cast<int>(t)));
    return out;
  }

  geokv::testing::TestDir dir_;
  // Behind std::unique_ptr: kj destructors may throw, a fixture's must not.
  std::unique_ptr<kj::AsyncIoContext> io_ =
      std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
  std::unique_ptr<Store> store_;
  std::unique_ptr<GroupCommitter> committer_;
  std::unique_ptr<AsyncStore> async_store_;
  std::unique_ptr<Replicator> replicator_;
  std::unique_ptr<ClusterView> view_;
  Metrics metrics_{"eu"};
  ServingGate gate_;
  std::unique_ptr<ReplicatorForwarder> forwarder_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<Admin> admin_;
  std::unique_ptr<Authenticator> users_;
  KvService* service_ = nullptr;
  struct Rpc {
    kj::Own<kj::AsyncIoStream> server_stream;
    kj::Own<capnp::TwoPartyVatNetwork> network;
    kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> server;
    kj::Own<kj::AsyncIoStream> client_stream;
    kj::Own<capnp::TwoPartyClient> client;
  };
  std::unique_ptr<Rpc> rpc_;
  std::unique_ptr<rpc::GeoKv::Client> kv_;
  std::string last_message_;
};

TEST_F(KvServiceTest, SetGetDel) {
  std::string token;
  EXPECT_EQ(Set("k", "v1", &token), Code::OK);
  EXPECT_FALSE(token.empty());
  std::string value;
  EXPECT_EQ(Get("k", &value), Code::OK);
  EXPECT_EQ(value, "v1");
  EXPECT_EQ(Set("k", "v2"), Code::OK);
  EXPECT_EQ(Get("k", &value), Code::OK);
  EXPECT_EQ(value, "v2");
  EXPECT_EQ(Del("k"), Code::OK);
  EXPECT_EQ(Get("k"), Code::NOT_FOUND);
  EXPECT_EQ(Get("never"), Code::NOT_FOUND);
  EXPECT_EQ(last_message_, "key not found");
}

TEST_F(KvServiceTest, EmptyValueIsAValue) {
  EXPECT_EQ(Set("k", ""), Code::OK);
  std::string value = "x";
  EXPECT_EQ(Get("k", &value), Code::OK);
  EXPECT_EQ(value, "");
}

TEST_F(KvServiceTest, TokensNameTheWritesLogPosition) {
  std::string t1, t2, t3;
  ASSERT_EQ(Set("a", "1", &t1), Code::OK);
  ASSERT_EQ(Set("b", "2", &t2), Code::OK);
  auto d1 = DecodeToken(t1), d2 = DecodeToken(t2);
  ASSERT_TRUE(d1.ok() && d2.ok());
  EXPECT_EQ(d1->origin, store_->node_id());
  EXPECT_EQ(d1->seq, 1u);
  EXPECT_EQ(d2->seq, 2u);
  // A write that changes nothing names the position it saw.
  ASSERT_EQ(SRem("s", {"absent"}, &t3), Code::OK);
  auto d3 = DecodeToken(t3);
  ASSERT_TRUE(d3.ok());
  EXPECT_EQ(d3->seq, 2u);
}

TEST_F(KvServiceTest, ReadsCheckTokens) {
  std::string token;
  ASSERT_EQ(Set("k", "v", &token), Code::OK);
  EXPECT_EQ(Get("k", nullptr, {token}), Code::OK);

  // A write this node has not seen (another origin) is waited for, up to
  // the token wait (300 ms here).
  std::string elsewhere = EncodeToken({store_->node_id() + 1, 5});
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Get("k", nullptr, {token, elsewhere}), Code::TIMEOUT);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));
  EXPECT_NE(last_message_.find("write 5 of node"), std::string::npos) << last_message_;
  std::string ahead = EncodeToken({store_->node_id(), 99});
  EXPECT_EQ(Get("k", nullptr, {ahead}), Code::TIMEOUT);

  EXPECT_EQ(Get("k", nullptr, {"garbage"}), Code::INVALID);
  EXPECT_NE(last_message_.find("not a causal token"), std::string::npos) << last_message_;
}

TEST_F(KvServiceTest, AReadWaitsForItsTokensWriteToArrive) {
  ASSERT_EQ(Set("k", "v"), Code::OK);
  const ReplicaId other = store_->node_id() + 1;
  auto req = kv().getRequest();
  req.setKey(AsData("k"));
  req.initTokens(1).set(0, AsData(EncodeToken({other, 3})));
  auto pending = req.send();
  // The read waits; the other origin's entries 1..3 arrive while it does.
  kj::Promise<void> later = io_->provider->getTimer().afterDelay(50 * kj::MILLISECONDS);
  later.wait(ws());
  RemoteApply apply;
  apply.origin = other;
  apply.first = 1;
  apply.through = 3;
  apply.joins.Add("k2", EncodeCrdt(LwwRegister(HlcTimestamp{1, 0}, other, std::string("x"))));
  auto applied = committer_->SubmitRemote(std::move(apply)).wait(ws());
  ASSERT_TRUE(applied.status.ok()) << applied.status.ToString();
  auto reply = pending.wait(ws());
  EXPECT_EQ(reply.getOutcome().getCode(), Code::OK) << reply.getOutcome().getMessage().cStr();
  EXPECT_EQ(View(reply.getValue()), "v");
}

TEST_F(KvServiceTest, RemoteEntriesMustContinueTheAppliedPosition) {
  const ReplicaId other = store_->node_id() + 1;
  RemoteApply gap;
  gap.origin = other;
  gap.first = 5;
  gap.through = 5;
  gap.joins.Add("k", EncodeCrdt(LwwRegister(HlcTimestamp{1, 0}, other, std::string("x"))));
  auto result = committer_->SubmitRemote(std::move(gap)).wait(ws());
  EXPECT_FALSE(result.status.ok());
  EXPECT_EQ(store_->AppliedPositions().count(other), 0u);
}

TEST_F(KvServiceTest, WaitReplicatedRefusesAWaitOverTheLimit) {
  std::string token;
  ASSERT_EQ(Set("k", "v", &token), Code::OK);
  auto wait = [&](uint32_t ms) {
    auto req = kv().waitReplicatedRequest();
    req.initTokens(1).set(0, AsData(token));
    req.setTimeoutMs(ms);
    auto reply = req.send().wait(ws());
    last_message_ = reply.getOutcome().getMessage();
    return reply.getOutcome().getCode();
  };
  EXPECT_EQ(wait(UINT32_MAX), Code::INVALID);
  EXPECT_NE(last_message_.find("limit of 3600000 ms"), std::string::npos) << last_message_;
  EXPECT_EQ(wait(static_cast<uint32_t>(kMaxReplicationWait.count()) + 1), Code::INVALID);
  EXPECT_EQ(wait(static_cast<uint32_t>(kMaxReplicationWait.count())), Code::OK) << last_message_;
}

TEST_F(KvServiceTest, KeysAreChecked) {
  EXPECT_EQ(Set("", "v"), Code::INVALID);
  EXPECT_EQ(last_message_, "empty key");
  EXPECT_EQ(Get(""), Code::INVALID);
  std::string at_limit(64, 'k'), over(65, 'k');
  EXPECT_EQ(Set(at_limit, "v"), Code::OK);
  EXPECT_EQ(Set(over, "v"), Code::TOO_LARGE);
  EXPECT_EQ(last_message_, "key of 65 bytes exceeds max-key-bytes 64");
  EXPECT_EQ(Get(over), Code::TOO_LARGE);
  EXPECT_EQ(IncrBy(over, 1), Code::TOO_LARGE);
}

TEST_F(KvServiceTest, OversizedValueIsRefusedAndChangesNothing) {
  ASSERT_EQ(Set("k", "old"), Code::OK);
  EXPECT_EQ(Set("k", std::string(1025, 'v')), Code::TOO_LARGE);
  EXPECT_EQ(last_message_, "value of 1025 bytes exceeds max-value-bytes 1024");
  std::string value;
  EXPECT_EQ(Get("k", &value), Code::OK);
  EXPECT_EQ(value, "old");
  EXPECT_EQ(Set("k", std::string(1024, 'v')), Code::OK);
  EXPECT_EQ(MvSet("m", std::string(1025, 'v'), ""), Code::TOO_LARGE);
  EXPECT_EQ(store_->LastSeq(), 2u);
}

TEST_F(KvServiceTest, WrongTypeOnWritesAndReads) {
  ASSERT_EQ(Set("k", "v"), Code::OK);
  EXPECT_EQ(SAdd("k", {"a"}), Code::WRONG_TYPE);
  EXPECT_EQ(last_message_, "key 'k' holds a value of type lww, not orset");
  EXPECT_EQ(IncrBy("k", 1), Code::WRONG_TYPE);
  EXPECT_EQ(MvSet("k", "v", ""), Code::WRONG_TYPE);
  int64_t n;
  EXPECT_EQ(CounterGet("k", &n), Code::WRONG_TYPE);
  std::vector<std::string> values;
  std::string context;
  EXPECT_EQ(MvGet("k", &values, &context), Code::WRONG_TYPE);

  ASSERT_EQ(SAdd("s", {"a"}), Code::OK);
  EXPECT_EQ(Get("s"), Code::WRONG_TYPE);
  EXPECT_EQ(last_message_, "key 's' holds a value of type orset, not lww");
  // Once deleted, the key takes another type.
  ASSERT_EQ(Del("k"), Code::OK);
  EXPECT_EQ(IncrBy("k", 1), Code::OK);
}

TEST_F(KvServiceTest, MultiValueSiblingsAndContexts) {
  std::vector<std::string> values;
  std::string context;
  EXPECT_EQ(MvGet("m", &values, &context), Code::NOT_FOUND);
  EXPECT_TRUE(context.empty());

  ASSERT_EQ(MvSet("m", "a", ""), Code::OK);
  ASSERT_EQ(MvSet("m", "b", ""), Code::OK);  // saw nothing: a sibling
  ASSERT_EQ(MvGet("m", &values, &context), Code::OK);
  EXPECT_EQ(values, (std::vector<std::string>{"a", "b"}));

  ASSERT_EQ(MvSet("m", "c", context), Code::OK);  // supersedes both
  ASSERT_EQ(MvGet("m", &values, &context), Code::OK);
  EXPECT_EQ(values, (std::vector<std::string>{"c"}));

  auto del = kv().mvDelRequest();
  del.setKey(AsData("m"));
  del.setContext(AsData(context));
  ASSERT_EQ(Finish(kj::mv(del)), Code::OK);
  EXPECT_EQ(MvGet("m", &values, &context), Code::NOT_FOUND);
  EXPECT_FALSE(context.empty()) << "a cleared register still has a context";
}

TEST_F(KvServiceTest, MultiValueContextOfAnotherKeyIsRefused) {
  std::vector<std::string> values;
  std::string context;
  ASSERT_EQ(MvSet("m1", "a", ""), Code::OK);
  ASSERT_EQ(MvGet("m1", &values, &context), Code::OK);
  ASSERT_EQ(MvSet("m2", "b", ""), Code::OK);
  EXPECT_EQ(MvSet("m2", "c", context), Code::INVALID);
  EXPECT_EQ(last_message_, "the multi-value context belongs to another key");
  EXPECT_EQ(MvSet("m2", "c", "garbage!!!"), Code::INVALID);
  ASSERT_EQ(MvGet("m2", &values, &context), Code::OK);
  EXPECT_EQ(values, (std::vector<std::string>{"b"}));
}

TEST_F(KvServiceTest, TooManySiblingsIsTooLarge) {
  Code last = Code::OK;
  int written = 0;
  while (last == Code::OK && written < 1000) {
    last = MvSet("m", "v" + std::to_string(written), "");
    if (last == Code::OK) ++written;
  }
  EXPECT_EQ(last, Code::TOO_LARGE);
  EXPECT_EQ(written, 64);  // the store's default max_siblings
}

TEST_F(KvServiceTest, SetOperations) {
  ASSERT_EQ(SAdd("s", {"b", "a", "c", "d"}), Code::OK);
  ASSERT_EQ(SRem("s", {"d"}), Code::OK);

  auto is_member = [&](const std::string& e) {
    auto req = kv().sIsMemberRequest();
    req.setKey(AsData("s"));
    req.setElement(AsData(e));
    auto reply = req.send().wait(ws());
    EXPECT_EQ(reply.getOutcome().getCode(), Code::OK);
    return reply.getValue();
  };
  EXPECT_TRUE(is_member("a"));
  EXPECT_FALSE(is_member("d"));

  auto card = kv().sCardRequest();
  card.setKey(AsData("s"));
  EXPECT_EQ(card.send().wait(ws()).getCount(), 3u);

  // Pages of two, in byte order.
  auto page = [&](std::optional<std::string> after) {
    auto req = kv().sMembersRequest();
    req.setKey(AsData("s"));
    if (after) req.getFrom().setAfter(AsData(*after));
    req.setLimit(2);
    auto reply = req.send().wait(ws());
    EXPECT_EQ(reply.getOutcome().getCode(), Code::OK);
    std::vector<std::string> out;
    for (auto e : reply.getElements()) out.push_back(String(e));
    return std::make_pair(out, reply.getMore());
  };
  auto [first, more1] = page(std::nullopt);
  EXPECT_EQ(first, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(more1);
  auto [second, more2] = page("b");
  EXPECT_EQ(second, (std::vector<std::string>{"c"}));
  EXPECT_FALSE(more2);
}

TEST_F(KvServiceTest, SetReadsOfAnAbsentKeyAreEmpty) {
  auto card = kv().sCardRequest();
  card.setKey(AsData("none"));
  auto reply = card.send().wait(ws());
  EXPECT_EQ(reply.getOutcome().getCode(), Code::OK);
  EXPECT_EQ(reply.getCount(), 0u);
  auto members = kv().sMembersRequest();
  members.setKey(AsData("none"));
  auto m = members.send().wait(ws());
  EXPECT_EQ(m.getOutcome().getCode(), Code::OK);
  EXPECT_EQ(m.getElements().size(), 0u);
}

TEST_F(KvServiceTest, SetElementsAreChecked) {
  EXPECT_EQ(SAdd("s", {}), Code::INVALID);
  EXPECT_EQ(last_message_, "no set elements given");
  EXPECT_EQ(SRem("s", {}), Code::INVALID);
  EXPECT_EQ(SAdd("s", {"ok", std::string(65, 'e')}), Code::TOO_LARGE);
  EXPECT_EQ(last_message_, "set element of 65 bytes exceeds max-key-bytes 64");
  EXPECT_EQ(Types("s"), std::vector<std::string>{}) << "nothing of the refused add applies";
}

TEST_F(KvServiceTest, Counters) {
  int64_t n = 0;
  EXPECT_EQ(CounterGet("c", &n), Code::NOT_FOUND);
  ASSERT_EQ(IncrBy("c", 5), Code::OK);
  ASSERT_EQ(IncrBy("c", -7), Code::OK);
  ASSERT_EQ(CounterGet("c", &n), Code::OK);
  EXPECT_EQ(n, -2);
  ASSERT_EQ(IncrBy("big", INT64_MAX), Code::OK);
  EXPECT_EQ(IncrBy("big", 1), Code::INVALID);
  ASSERT_EQ(CounterGet("big", &n), Code::OK);
  EXPECT_EQ(n, INT64_MAX);
}

TEST_F(KvServiceTest, DelRemovesACounter) {
  int64_t n = 0;
  ASSERT_EQ(IncrBy("c", 5), Code::OK);
  ASSERT_EQ(Del("c"), Code::OK);
  EXPECT_EQ(CounterGet("c", &n), Code::NOT_FOUND);
  EXPECT_EQ(Types("c"), std::vector<std::string>{});
  ASSERT_EQ(Set("c", "v"), Code::OK);
  ASSERT_EQ(Del("c"), Code::OK);
  ASSERT_EQ(IncrBy("c", 2), Code::OK);
  ASSERT_EQ(CounterGet("c", &n), Code::OK);
  EXPECT_EQ(n, 2);
}

TEST_F(KvServiceTest, TypeNamesTheLiveTypes) {
  EXPECT_EQ(Types("k"), std::vector<std::string>{});
  ASSERT_EQ(SAdd("k", {"x"}), Code::OK);
  EXPECT_EQ(Types("k"), std::vector<std::string>{std::to_string(int(rpc::Type::OR_SET))});
}

TEST_F(KvServiceTest, AConsistencyTheSchemaDoesNotNameIsInvalidAndChangesNothing) {
  auto set = kv().setRequest();
  set.setKey(AsData("k"));
  set.setValue(AsData("v"));
  set.setConsistency(static_cast<rpc::Consistency>(7));
  EXPECT_EQ(Finish(kj::mv(set)), Code::INVALID);
  EXPECT_NE(last_message_.find("consistency 7 is none of"), std::string::npos) << last_message_;
  auto get = kv().getRequest();
  get.setKey(AsData("k"));
  get.setConsistency(static_cast<rpc::Consistency>(65535));
  EXPECT_EQ(get.send().wait(ws()).getOutcome().getCode(), Code::INVALID);
  EXPECT_EQ(Get("k"), Code::NOT_FOUND) << "the refused set wrote nothing";
}

TEST_F(KvServiceTest, BatchAnswersInOrderAndItsReadsSeeItsWrites) {
  auto req = kv().batchRequest();
  auto list = req.initRequests(6);
  auto set = list[0].initSet();
  set.setKey(AsData("a"));
  set.setValue(AsData("1"));
  list[1].initGet().setKey(AsData("a"));
  auto bad = list[2].initSAdd();  // refused alone
  bad.setKey(AsData("a"));
  bad.initElements(1).set(0, AsData("x"));
  auto incr = list[3].initIncrBy();
  incr.setKey(AsData("c"));
  incr.setDelta(3);
  list[4].initCounterGet().setKey(AsData("c"));
  list[5].initGet().setKey(AsData(""));
  auto reply = req.send().wait(ws());
  auto r = reply.getReplies();
  ASSERT_EQ(r.size(), 6u);
  ASSERT_TRUE(r[0].isWrite());
  EXPECT_EQ(r[0].getWrite().getOutcome().getCode(), Code::OK);
  ASSERT_TRUE(r[1].isValue());
  EXPECT_EQ(r[1].getValue().getOutcome().getCode(), Code::OK);
  EXPECT_EQ(String(r[1].getValue().getValue()), "1");
  EXPECT_EQ(r[2].getWrite().getOutcome().getCode(), Code::WRONG_TYPE);
  EXPECT_EQ(r[3].getWrite().getOutcome().getCode(), Code::OK);
  ASSERT_TRUE(r[4].isCounter());
  EXPECT_EQ(r[4].getCounter().getValue(), 3);
  EXPECT_EQ(r[5].getValue().getOutcome().getCode(), Code::INVALID);
}

TEST_F(KvServiceTest, BatchAnswersAnUnknownRequestKind) {
  auto req = kv().batchRequest();
  auto list = req.initRequests(2);
  list[0].initGet().setKey(AsData("a"));
  // A discriminant from a newer client: the union's tag is the first
  // 16 bits of the data section.
  auto data = capnp::AnyStruct::Builder(list[1]).getDataSection();
  data[0] = 200;
  data[1] = 0;
  auto reply = req.send().wait(ws());
  auto r = reply.getReplies();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].getValue().getOutcome().getCode(), Code::NOT_FOUND);
  ASSERT_TRUE(r[1].isUnknown());
  EXPECT_EQ(r[1].getUnknown().getCode(), Code::INVALID);
  EXPECT_EQ(std::string(r[1].getUnknown().getMessage().cStr()), "unknown request kind 200");
}

// A batch over --max-batch-requests fails whole before any of it is read
// or applied; a request over the token limit is refused alone.
TEST_F(KvServiceTest, BatchOverTheRequestLimitAndTooManyTokensAreRefused) {
  auto req = kv().batchRequest();
  constexpr unsigned kOver = 10001;
  auto list = req.initRequests(kOver);
  for (unsigned i = 0; i < kOver; ++i) {
    auto incr = list[i].initIncrBy();
    incr.setKey(AsData("c"));
    incr.setDelta(1);
  }
  try {
    req.send().wait(ws());
    FAIL() << "a batch over the limit was answered";
  } catch (const kj::Exception& e) {
    EXPECT_NE(std::string(e.getDescription().cStr())
                  .find("a batch of 10001 requests; at most --max-batch-requests (10000)"),
              std::string::npos)
        << e.getDescription().cStr();
  }
  auto counter = kv().counterGetRequest();
  counter.setKey(AsData("c"));
  EXPECT_EQ(counter.send().wait(ws()).getOutcome().getCode(), Code::NOT_FOUND);

  auto get = kv().getRequest();
  get.setKey(AsData("k"));
  auto tokens = get.initTokens(kMaxTokens + 1);
  const std::string token = EncodeToken(CausalToken{store_->node_id(), 1, {}});
  for (unsigned i = 0; i <= kMaxTokens; ++i) tokens.set(i, AsData(token));
  auto reply = get.send().wait(ws());
  EXPECT_EQ(reply.getOutcome().getCode(), Code::INVALID);
  EXPECT_EQ(std::string(reply.getOutcome().getMessage().cStr()),
            "1025 tokens in one request; at most 1024");
}

TEST_F(KvServiceTest, WritesArrivingWhileAGroupCommitsFormOneGroup) {
  uint64_t groups_before = committer_->groups_committed();
  // Holding the store's writer slot stalls the writer thread as if a long
  // commit were under way.
  auto held = store_->BeginGroup();
  kj::Vector<kj::Promise<void>> calls;
  for (int i = 0; i < 20; ++i) {
    auto req = kv().setRequest();
    req.setKey(AsData("k" + std::to_string(i)));
    req.setValue(AsData("v"));
    calls.add(req.send().then([](auto reply) {
      EXPECT_EQ(reply.getOutcome().getCode(), Code::OK);
    }));
  }
  auto all = kj::joinPromises(calls.releaseAsArray());
  while (committer_->pending() < 20) ws().poll();
  kj::evalLater([] {}).wait(ws());  // the last ones are handed to the writer
  EXPECT_EQ(committer_->groups_committed(), groups_before);
  ASSERT_TRUE(held->Commit().ok());
  all.wait(ws());
  // The writer may have taken the first calls before it stalled; all the
  // others waited together and made one group.
  EXPECT_LE(committer_->groups_committed() - groups_before, 2u);
  EXPECT_EQ(store_->LastSeq(), 20u);
}

TEST_F(KvServiceTest, InfoNamesTheNode) {
  auto reply = kv().infoRequest().send().wait(ws());
  EXPECT_EQ(std::string(reply.getName().cStr()), "n1");
  EXPECT_EQ(std::string(reply.getRegion().cStr()), "eu");
  EXPECT_EQ(reply.getReplicaId(), store_->node_id());
  EXPECT_EQ(reply.getApiVersion(), 1u);
  // No peer, so no clock samples: said so, beside an offset of 0.
  EXPECT_EQ(reply.getClockSamples(), 0u);
  EXPECT_EQ(reply.getClockOffsetMs(), 0);
}

TEST_F(KvServiceTest, StoppedServiceRefusesCalls) {
  gate_.Close();
  auto req = kv().setRequest();
  req.setKey(AsData("k"));
  req.setValue(AsData("v"));
  try {
    req.send().wait(ws());
    FAIL() << "a stopped service answered";
  } catch (const kj::Exception& e) {
    EXPECT_EQ(e.getType(), kj::Exception::Type::DISCONNECTED);
  }
  EXPECT_EQ(store_->LastSeq(), 0u);
}

// A write another node forwards here, at ONE; its outcome code.
Code ForwardedSet(KvService& service, kj::WaitScope& ws, const std::string& key) {
  capnp::MallocMessageBuilder request, reply;
  auto set = request.initRoot<rpc::Request>().initSet();
  set.setKey(AsData(key));
  set.setValue(AsData("forwarded"));
  auto out = reply.initRoot<rpc::Reply>();
  service.RunForwarded(request.getRoot<rpc::Request>().asReader(), rpc::Consistency::ONE, out)
      .wait(ws);
  return out.getWrite().getOutcome().getCode();
}

TEST_F(KvServiceTest, ANodeThatHandedASegmentOverRefusesWritesForwardedThere) {
  // Three more members: with N = 3 of four nodes, some keys are not this
  // node's.
  std::vector<Member> members{*view_->Find(store_->node_id())};
  for (int i = 2; i <= 4; ++i) {
    Member m;
    m.id = store_->node_id() + static_cast<ReplicaId>(i);
    m.name = "n" + std::to_string(i);
    m.region = "eu";
    m.state = MemberState::kAlive;
    members.push_back(m);
  }
  view_->SetLocal(members);
  std::string key;
  for (int i = 0; key.empty() && i < 1000; ++i) {
    std::string k = "k" + std::to_string(i);
    auto owners = view_->Owners(k);
    if (std::find(owners.begin(), owners.end(), store_->node_id()) == owners.end()) key = k;
  }
  ASSERT_FALSE(key.empty());

  // A node with a newer view than the sender's may take the write.
  ASSERT_EQ(ForwardedSet(*service_, ws(), key), Code::OK);

  // Once it handed the key's segment over, it no longer holds the key's
  // dots and totals: a write there would reuse them.
  auto digest = store_->KeyDigest(key);
  ASSERT_TRUE(digest.ok());
  RemoteApply drop;
  drop.drops.emplace_back(key, *digest);
  ASSERT_TRUE(committer_->SubmitRemote(std::move(drop)).wait(ws()).status.ok());
  replicator_->Start();  // reads the dropped segments
  const uint64_t before = store_->LastSeq();
  EXPECT_EQ(ForwardedSet(*service_, ws(), key), Code::UNAVAILABLE);
  EXPECT_EQ(store_->LastSeq(), before) << "nothing applied";
}

class KvServiceOverloadTest : public KvServiceTest {
 protected:
  void SetUp() override {
    Limits limits;
    limits.max_pending = 2;
    Start(limits);
  }
};

// A batch of `n` increments of "c".
capnp::Request<rpc::GeoKv::BatchParams, rpc::GeoKv::BatchResults> Increments(
    rpc::GeoKv::Client& kv, int n) {
  auto req = kv.batchRequest();
  auto list = req.initRequests(n);
  for (int i = 0; i < n; ++i) {
    auto incr = list[i].initIncrBy();
    incr.setKey(AsData("c"));
    incr.setDelta(1);
  }
  return req;
}

TEST_F(KvServiceOverloadTest, BatchWithoutRoomIsOverloadedAndAppliesNothing) {
  // Two writes wait behind a held writer slot; a batch of two has no room.
  auto held = store_->BeginGroup();
  auto waiting = Increments(kv(), 2).send();
  while (committer_->pending() < 2) ws().poll();
  try {
    Increments(kv(), 2).send().wait(ws());
    FAIL() << "an overloaded batch was answered";
  } catch (const kj::Exception& e) {
    EXPECT_EQ(e.getType(), kj::Exception::Type::OVERLOADED);
  }
  ASSERT_TRUE(held->Commit().ok());
  waiting.wait(ws());
  int64_t n;
  ASSERT_EQ(CounterGet("c", &n), Code::OK);
  EXPECT_EQ(n, 2) << "only the first batch applies";
}

TEST_F(KvServiceOverloadTest, BatchLargerThanThePendingLimitIsRefusedForGood) {
  auto reply = Increments(kv(), 3).send().wait(ws());
  for (auto r : reply.getReplies()) {
    EXPECT_EQ(r.getWrite().getOutcome().getCode(), Code::TOO_LARGE);
    EXPECT_EQ(std::string(r.getWrite().getOutcome().getMessage().cStr()),
              "a batch of 3 writes exceeds max-pending-writes 2");
  }
  int64_t n;
  EXPECT_EQ(CounterGet("c", &n), Code::NOT_FOUND);
}

class KvServiceReplyLimitTest : public KvServiceTest {
 protected:
  void SetUp() override {
    Limits limits;
    limits.max_value_bytes = 1024;
    limits.max_message_bytes = 8192;  // replies carry at most 4096 bytes of values
    Start(limits);
  }
};

TEST_F(KvServiceReplyLimitTest, BatchReadsBeyondTheReplyBudgetAreTooLarge) {
  ASSERT_EQ(Set("k", std::string(1024, 'v')), Code::OK);
  auto req = kv().batchRequest();
  auto list = req.initRequests(5);
  for (int i = 0; i < 5; ++i) list[i].initGet().setKey(AsData("k"));
  auto reply = req.send().wait(ws());
  auto r = reply.getReplies();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r[i].getValue().getOutcome().getCode(), Code::OK) << i;
  EXPECT_EQ(r[4].getValue().getOutcome().getCode(), Code::TOO_LARGE);
  EXPECT_EQ(r[4].getValue().getValue().size(), 0u);
  // Every call has its own budget.
  std::string value;
  EXPECT_EQ(Get("k", &value), Code::OK);
  EXPECT_EQ(value.size(), 1024u);
}

TEST_F(KvServiceReplyLimitTest, ABatchNearTheTraversalLimitIsReadOnce) {
  // An increment and 65 reads of 64-byte keys: about 880 of the 1024 words
  // the server reads per message (8192 bytes). Reading any key twice would
  // pass the limit part-way, after the increment was applied.
  auto req = kv().batchRequest();
  constexpr uint32_t kReads = 65;
  auto list = req.initRequests(1 + kReads);
  auto incr = list[0].initIncrBy();
  incr.setKey(AsData("c"));
  incr.setDelta(1);
  for (uint32_t i = 0; i < kReads; ++i) {
    std::string key(64, 'k');
    key.replace(0, std::to_string(i).size(), std::to_string(i));
    list[1 + i].initGet().setKey(AsData(key));
  }
  auto reply = req.send().wait(ws());
  auto r = reply.getReplies();
  ASSERT_EQ(r.size(), 1 + kReads);
  EXPECT_EQ(r[0].getWrite().getOutcome().getCode(), Code::OK);
  for (uint32_t i = 0; i < kReads; ++i) {
    EXPECT_EQ(r[1 + i].getValue().getOutcome().getCode(), Code::NOT_FOUND) << i;
  }
  int64_t n;
  ASSERT_EQ(CounterGet("c", &n), Code::OK);
  EXPECT_EQ(n, 1);
}

TEST_F(KvServiceReplyLimitTest, SiblingsTooLargeToReadStillGiveTheContextToMergeThem) {
  for (int i = 0; i < 5; ++i) ASSERT_EQ(MvSet("m", std::string(1024, 'a' + i), ""), Code::OK);
  std::vector<std::string> values;
  std::string context;
  EXPECT_EQ(MvGet("m", &values, &context), Code::TOO_LARGE);
  EXPECT_TRUE(values.empty());
  ASSERT_FALSE(context.empty());
  ASSERT_EQ(MvSet("m", "merged", context), Code::OK);
  ASSERT_EQ(MvGet("m", &values, &context), Code::OK);
  EXPECT_EQ(values, std::vector<std::string>{"merged"});
}

// A service behind a users file, as a node with --users serves it.
class KvServiceUsersTest : public KvServiceTest {
 protected:
  void SetUp() override {
    const std::string path = dir_.Sub("users");
    std::ofstream out(path);
    for (const auto& [name, role, secret] :
         {std::tuple{"root", "admin", "rootpw"}, {"ana", "write", "anapw"},
          {"rex", "read", "rexpw"}}) {
      auto hash = HashSecret(secret, kMinSecretIterations);
      ASSERT_TRUE(hash.ok());
      out << name << " " << role << " " << *hash << "\n";
    }
    static const std::string slow = *HashSecret("slowpw", 300000);
    out << "slow read " << slow << "\n";
    out.close();
    chmod(path.c_str(), 0600);
    Start(Limits(), path);
  }

  // Logs in on `on` (the bootstrap, or a GeoKv); on OK, kv() is the
  // service it gave.
  Code Login(rpc::Login::Client on, const std::string& user, const std::string& secret,
             std::string* role = nullptr) {
    auto req = on.loginRequest();
    req.setUser(user);
    req.setSecret(secret);
    auto reply = req.send().wait(ws());
    last_message_ = reply.getOutcome().getMessage();
    if (role) *role = reply.getRole();
    if (reply.getOutcome().getCode() == Code::OK) {
      kv_ = std::make_unique<rpc::GeoKv::Client>(reply.getKv());
    }
    return reply.getOutcome().getCode();
  }
  rpc::Login::Client Bootstrap() { return rpc_->client->bootstrap().castAs<rpc::Login>(); }

  Code Leave() { return kv().leaveRequest().send().wait(ws()).getOutcome().getCode(); }
  Code Remove() {
    auto req = kv().removeRequest();
    req.setMember("n9");
    return req.send().wait(ws()).getOutcome().getCode();
  }
};

TEST_F(KvServiceUsersTest, BeforeLoggingInAConnectionCanOnlyLogIn) {
  // kv() is the bootstrap cast to GeoKv: every call fails.
  auto info = kv().infoRequest().send();
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { info.wait(ws()); })) {
    EXPECT_NE(std::string(e->getDescription().cStr()).find("log in first"), std::string::npos)
        << e->getDescription().cStr();
  } else {
    FAIL() << "info answered before a login";
  }
  EXPECT_THROW(Set("k", "v"), kj::Exception);
  EXPECT_EQ(Login(Bootstrap(), "ana", "wrong"), Code::UNAUTHENTICATED);
  const std::string wrong_secret = last_message_;
  EXPECT_EQ(Login(Bootstrap(), "nobody", "anapw"), Code::UNAUTHENTICATED);
  EXPECT_EQ(last_message_, wrong_secret) << "an unknown user answers as a wrong secret does";
  EXPECT_EQ(Login(Bootstrap(), "ana", ""), Code::UNAUTHENTICATED);
  EXPECT_EQ(Login(Bootstrap(), std::string(5000, 'a'), "x"), Code::UNAUTHENTICATED);
  std::string role;
  ASSERT_EQ(Login(Bootstrap(), "ana", "anapw", &role), Code::OK) << last_message_;
  EXPECT_EQ(role, "write");
  EXPECT_EQ(Set("k", "v"), Code::OK);
  EXPECT_EQ(metrics_.logins_ok.Value(), 1);
  EXPECT_EQ(metrics_.logins_refused.Value(), 4);
  EXPECT_EQ(metrics_.logins_busy.Value(), 0);
}

TEST_F(KvServiceUsersTest, AReadUserReadsButNeitherWritesNorLeaves) {
  ASSERT_EQ(Login(Bootstrap(), "root", "rootpw"), Code::OK);
  ASSERT_EQ(Set("k", "v"), Code::OK);
  ASSERT_EQ(Login(Bootstrap(), "rex", "rexpw"), Code::OK);
  std::string value;
  EXPECT_EQ(Get("k", &value), Code::OK);
  EXPECT_EQ(value, "v");
  EXPECT_EQ(Set("k", "w"), Code::PERMISSION_DENIED);
  EXPECT_NE(last_message_.find("needs the write role"), std::string::npos) << last_message_;
  auto req = kv().batchRequest();
  auto list = req.initRequests(3);
  auto set = list[0].initSet();
  set.setKey(AsData("k"));
  set.setValue(AsData("w"));
  list[1].initGet().setKey(AsData("k"));
  auto incr = list[2].initIncrBy();
  incr.setKey(AsData("c"));
  incr.setDelta(1);
  auto reply = req.send().wait(ws());
  auto r = reply.getReplies();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].getWrite().getOutcome().getCode(), Code::PERMISSION_DENIED);
  EXPECT_EQ(r[1].getValue().getOutcome().getCode(), Code::OK);
  EXPECT_EQ(String(r[1].getValue().getValue()), "v");
  EXPECT_EQ(r[2].getWrite().getOutcome().getCode(), Code::PERMISSION_DENIED);
  EXPECT_EQ(Leave(), Code::PERMISSION_DENIED);
  EXPECT_EQ(Remove(), Code::PERMISSION_DENIED);
  ASSERT_EQ(Get("k", &value), Code::OK);
  EXPECT_EQ(value, "v") << "a refused write changed nothing";
}

TEST_F(KvServiceUsersTest, AWriteUserWritesButCannotChangeMembership) {
  ASSERT_EQ(Login(Bootstrap(), "ana", "anapw"), Code::OK);
  EXPECT_EQ(Set("k", "v"), Code::OK);
  EXPECT_EQ(Leave(), Code::PERMISSION_DENIED);
  EXPECT_EQ(Remove(), Code::PERMISSION_DENIED);
  ASSERT_EQ(Login(Bootstrap(), "root", "rootpw"), Code::OK);
  // An admin reaches the membership calls (this test node runs no gossip).
  EXPECT_EQ(Leave(), Code::UNAVAILABLE);
  EXPECT_EQ(Remove(), Code::UNAVAILABLE);
}

TEST_F(KvServiceUsersTest, ALoggedInConnectionLogsInAgainAsAnotherUser) {
  ASSERT_EQ(Login(Bootstrap(), "root", "rootpw"), Code::OK);
  rpc::GeoKv::Client admin = kv();
  std::string role;
  ASSERT_EQ(Login(admin, "rex", "rexpw", &role), Code::OK);
  EXPECT_EQ(role, "read");
  EXPECT_EQ(Set("k", "v"), Code::PERMISSION_DENIED);
  EXPECT_EQ(Login(admin, "rex", "bad"), Code::UNAUTHENTICATED);
}

TEST_F(KvServiceUsersTest, LoginsBeyondTheChecksUnderWayAreRefusedAsUnavailable) {
  std::vector<capnp::RemotePromise<rpc::Login::LoginResults>> logins;
  for (size_t i = 0; i < Authenticator::kMaxChecking + 2; ++i) {
    auto req = Bootstrap().loginRequest();
    req.setUser("slow");
    req.setSecret("slowpw");
    logins.push_back(req.send());
  }
  size_t ok = 0, unavailable = 0;
  for (auto& login : logins) {
    auto code = login.wait(ws()).getOutcome().getCode();
    ok += code == Code::OK;
    unavailable += code == Code::UNAVAILABLE;
  }
  EXPECT_EQ(ok, Authenticator::kMaxChecking);
  EXPECT_EQ(unavailable, 2u);
  EXPECT_EQ(metrics_.logins_busy.Value(), 2);
}

// A login dropped mid-check (a Redis connection that closes while its AUTH
// is checked drops its promise) holds a check only until the check ends on
// the reader pool.
TEST_F(KvServiceUsersTest, LoginsDroppedMidCheckDoNotHoldTheirChecks) {
  for (size_t i = 0; i < Authenticator::kMaxChecking; ++i) {
    users_->Login("slow", "slowpw");  // dropped at once
  }
  EXPECT_EQ(users_->Login("ana", "anapw").wait(ws()).status().code(),
            Status::Code::kUnavailable)
      << "the dropped checks are still running";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  StatusOr<Role> role = Status::Unavailable("not tried");
  while (!role.ok() && role.status().code() == Status::Code::kUnavailable &&
         std::chrono::steady_clock::now() < deadline) {
    io_->provider->getTimer().afterDelay(50 * kj::MILLISECONDS).wait(ws());
    role = users_->Login("ana", "anapw").wait(ws());
  }
  ASSERT_TRUE(role.ok()) << role.status().ToString();
  EXPECT_EQ(*role, Role::kWrite);
}

TEST_F(KvServiceTest, ANodeWithoutUsersRefusesALogin) {
  auto req = kv().castAs<rpc::Login>().loginRequest();
  req.setUser("root");
  req.setSecret("rootpw");
  auto reply = req.send().wait(ws());
  EXPECT_EQ(reply.getOutcome().getCode(), Code::INVALID);
  EXPECT_EQ(Set("k", "v"), Code::OK) << "the connection goes on as before";
}

TEST(CallLimit, AConnectionAtItsLimitWaitsForACallToEnd) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  CallLimit calls(2);
  EXPECT_TRUE(calls.Wait() == nullptr) << "room now";
  calls.Begin();
  calls.Begin();
  kj::Promise<void> room = nullptr;
  KJ_IF_MAYBE(wait, calls.Wait()) {
    room = kj::mv(*wait);
  } else {
    FAIL() << "two calls under way, and room for more";
  }
  EXPECT_FALSE(room.poll(ws));
  calls.End();
  EXPECT_TRUE(room.poll(ws));
  room.wait(ws);
  EXPECT_EQ(calls.under_way(), 1u);
}

}  // namespace
}  // namespace geokv
