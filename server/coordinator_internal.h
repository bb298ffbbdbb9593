// Pieces the coordinator's files share; not part of its interface.

#ifndef GEOKV_SERVER_COORDINATOR_INTERNAL_H_
#define GEOKV_SERVER_COORDINATOR_INTERNAL_H_

#include <kj/async.h>
#include <spdlog/spdlog.h>

#include "server/coordinator.h"

namespace geokv {

class Coordinator::Facts final : public ReplicaFacts {
 public:
  explicit Facts(const Replicator& replicator) : replicator_(replicator) {}
  bool Syncing(size_t segment) const override { return replicator_.Syncing(segment); }
  bool Dropped(size_t segment) const override { return replicator_.Dropped(segment); }
  bool Settled(size_t segment) const override { return replicator_.Settled(segment); }
  bool Vouches(size_t segment) const override { return replicator_.Vouches(segment); }
  bool IsConnected(ReplicaId node) const override { return replicator_.IsConnected(node); }

 private:
  const Replicator& replicator_;
};

class Coordinator::ErrorLogger final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override {
    spdlog::warn("coordination task failed: {}", e.getDescription().cStr());
  }
};

struct Coordinator::ReadDone {
  Result result;
  bool local = true;  // read here: its values count against the reply budget
};

inline std::string Described(const kj::Exception& e) { return e.getDescription().cStr(); }

}  // namespace geokv

#endif  // GEOKV_SERVER_COORDINATOR_INTERNAL_H_
