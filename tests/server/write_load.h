// Writes kept going over a client connection, the check that the
// acknowledged ones are there, and that a server exits cleanly: for tests
// of geokv-server processes.

#ifndef GEOKV_TESTS_SERVER_WRITE_LOAD_H_
#define GEOKV_TESTS_SERVER_WRITE_LOAD_H_

#include <capnp/ez-rpc.h>
#include <gtest/gtest.h>
#include <kj/async.h>
#include <kj/vector.h>

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "schema/kv.capnp.h"
#include "schema/kv_text.h"
#include "testing/process.h"

namespace geokv {
namespace testing {

// Keeps `inflight` writes going on one connection: LWW sets of distinct keys
// and increments of one counter, recording which were acknowledged.
class WriteLoad {
 public:
  WriteLoad(rpc::GeoKv::Client kv, std::string prefix) : kv_(kj::mv(kv)), prefix_(prefix) {}

  // Resolves when `acked` sets are acknowledged. The calls go on until
  // Stop() or until they fail.
  kj::Promise<void> Run(int inflight, size_t acked) {
    target_ = acked;
    auto paf = kj::newPromiseAndFulfiller<void>();
    reached_ = kj::mv(paf.fulfiller);
    for (int i = 0; i < inflight; ++i) {
      loops_.add(Next().catch_([this](kj::Exception&& e) { last_error_ = kj::mv(e); }));
    }
    return kj::mv(paf.promise);
  }
  void Stop() { stopped_ = true; }
  // Resolves once every call has ended.
  kj::Promise<void> Done() { return kj::joinPromises(loops_.releaseAsArray()); }

  const std::vector<std::string>& acked_keys() const { return acked_keys_; }
  int64_t increments_acked() const { return increments_acked_; }
  int64_t increments_sent() const { return increments_sent_; }
  const kj::Maybe<kj::Exception>& last_error() const { return last_error_; }

 private:
  kj::Promise<void> Next() {
    if (stopped_) return kj::READY_NOW;
    int i = next_++;
    if (i % 4 == 3) {
      auto req = kv_.incrByRequest();
      req.setKey(AsData(prefix_ + "counter"));
      req.setDelta(1);
      ++increments_sent_;
      return req.send().then([this](auto reply) {
        EXPECT_EQ(reply.getOutcome().getCode(), rpc::Outcome::Code::OK);
        ++increments_acked_;
        return Next();
      });
    }
    std::string key = prefix_ + std::to_string(i);
    auto req = kv_.setRequest();
    req.setKey(AsData(key));
    req.setValue(AsData("v" + key));
    return req.send().then([this, key](auto reply) {
      EXPECT_EQ(reply.getOutcome().getCode(), rpc::Outcome::Code::OK);
      acked_keys_.push_back(key);
      if (acked_keys_.size() == target_) reached_->fulfill();
      return Next();
    });
  }

  rpc::GeoKv::Client kv_;
  std::string prefix_;
  size_t target_ = 0;
  kj::Own<kj::PromiseFulfiller<void>> reached_;
  kj::Vector<kj::Promise<void>> loops_;
  bool stopped_ = false;
  int next_ = 0;
  std::vector<std::string> acked_keys_;
  int64_t increments_acked_ = 0, increments_sent_ = 0;
  kj::Maybe<kj::Exception> last_error_;
};

// Every key in `keys` holds "v" + key, and the counter lies within
// [min_count, max_count].
inline void ExpectPresent(const std::string& address, const std::vector<std::string>& keys,
                   const std::string& counter, int64_t min_count, int64_t max_count) {
  capnp::EzRpcClient client(address);
  auto kv = client.getMain<rpc::GeoKv>();
  auto& ws = client.getWaitScope();
  for (size_t start = 0; start < keys.size(); start += 500) {
    size_t n = std::min<size_t>(500, keys.size() - start);
    auto req = kv.batchRequest();
    auto list = req.initRequests(n);
    for (size_t i = 0; i < n; ++i) list[i].initGet().setKey(AsData(keys[start + i]));
    auto reply = req.send().wait(ws);
    for (size_t i = 0; i < n; ++i) {
      auto get = reply.getReplies()[i].getValue();
      ASSERT_EQ(get.getOutcome().getCode(), rpc::Outcome::Code::OK) << "acknowledged key lost: "
                                                       << keys[start + i];
      EXPECT_EQ(String(get.getValue()), "v" + keys[start + i]);
    }
  }
  auto get = kv.counterGetRequest();
  get.setKey(AsData(counter));
  auto reply = get.send().wait(ws);
  if (max_count == 0) return;
  ASSERT_EQ(reply.getOutcome().getCode(), rpc::Outcome::Code::OK);
  EXPECT_GE(reply.getValue(), min_count) << "acknowledged increments lost";
  EXPECT_LE(reply.getValue(), max_count) << "increments applied twice";
}

// `server`, sent SIGTERM, exits 0 within 60 s, saying it shut down cleanly.
inline void ExpectShutsDownCleanly(ChildProcess& server) {
  auto status = server.Wait(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << "no exit within 60 s of SIGTERM";
  ASSERT_TRUE(WIFEXITED(*status)) << server.Log();
  EXPECT_EQ(WEXITSTATUS(*status), 0) << server.Log();
  EXPECT_NE(server.Log().find("shut down cleanly"), std::string::npos);
}

}  // namespace testing
}  // namespace geokv

#endif  // GEOKV_TESTS_SERVER_WRITE_LOAD_H_
