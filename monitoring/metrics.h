// The metrics a geokv node exports for Prometheus (docs/monitoring.md).
//
// Metrics owns the registry and every metric family; the server and the
// replicator record into it, and MetricsServer serves it on /metrics.
// Recording is thread-safe (prometheus-cpp metrics are atomic or locked);
// the handles below resolve their labels once, so the request path does no
// label lookups. Every geokv_ series carries the constant label `region`.

#ifndef GEOKV_MONITORING_METRICS_H_
#define GEOKV_MONITORING_METRICS_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "util/status.h"

namespace prometheus {
class Exposer;
}

namespace geokv {

// The operations of the client API, as the `op` label names them.
enum class MetricOp : uint8_t {
  kSet, kGet, kDel, kMvSet, kMvGet, kMvDel, kSAdd, kSRem, kSIsMember, kSMembers, kSCard,
  kIncrBy, kCounterGet, kType, kBatch, kWaitReplicated,
};
inline constexpr size_t kMetricOps = 16;
// Outcome codes in kv.capnp order (ok, not_found, ..., timeout).
inline constexpr size_t kMetricOutcomes = 10;

class Metrics {
  // First: the families below register in it as they are built.
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();

 public:
  explicit Metrics(const std::string& region);

  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // One client operation: `outcome` is the kv.capnp Outcome code's number.
  void Request(MetricOp op, uint16_t outcome, double seconds);

  // Writes of `source_region` became visible here `seconds` after their
  // origin made them (one observation each).
  void ReplicationLag(const std::string& source_region, const std::vector<double>& seconds);

  // The handles of one peer, created on first use (with the lag series of
  // writes from its region, so every pair this node links shows up at once).
  struct Peer {
    prometheus::Gauge* backlog_entries;
    prometheus::Gauge* backlog_bytes;
    prometheus::Counter* sent_bytes;
    prometheus::Counter* received_bytes;
    prometheus::Gauge* connected;
    prometheus::Gauge* clock_offset;
  };
  Peer& PeerMetrics(const std::string& peer, const std::string& peer_region);
  // Drops a peer's gauges (its byte counters stay, so they never go back).
  // REQUIRES: nothing uses the peer's handles any more.
  void ForgetPeer(const std::string& peer, const std::string& peer_region);

  // The count of gossip datagrams refused for `reason` (a name of
  // cluster/gossip_auth.h's GossipRefusal), its series made on first use.
  prometheus::Counter& GossipRefused(const std::string& reason);

  // The count of peer calls refused for a claim beyond its bound (a name of
  // replication/peer_claims.h's PeerClaim), its series made on first use.
  prometheus::Counter& PeerClaimRefused(const std::string& claim);
  // The count of reloads (SIGHUP) of `part` (e.g. "tls", "gossip_keys")
  // that took effect (`ok`) or failed and left the old material in force;
  // its series made on first use.
  prometheus::Counter& Reloads(const std::string& part, bool ok);

  // Members this node sees, by region and state; replaces the last count.
  // Every region named gets a series for each state, 0 when it has none.
  void SetMembers(const std::map<std::pair<std::string, std::string>, int>& counts);

  prometheus::Counter& ae_keys_compared;
  prometheus::Counter& ae_keys_repaired;
  prometheus::Counter& token_gap_syncs;
  prometheus::Counter& hints_stored;
  prometheus::Counter& hints_replayed;
  prometheus::Counter& hints_dropped;
  prometheus::Gauge& hints_pending;
  prometheus::Counter& failure_detections;
  prometheus::Counter& forwarded;
  prometheus::Counter& read_repairs;
  prometheus::Counter& writes_refused_clock;
  prometheus::Gauge& clock_offset;
  prometheus::Gauge& max_clock_offset;
  prometheus::Counter& lww_overwritten;
  prometheus::Counter& stamps_refused;
  // Quorum register writes made again above a newer register an owner
  // already held for the key (Coordinator::WriteStamped).
  prometheus::Counter& writes_restamped;
  // Logins to the client ports (--users): accepted, refused (unknown user
  // or wrong secret), and refused unchecked (too many checks under way).
  prometheus::Counter& logins_ok;
  prometheus::Counter& logins_refused;
  prometheus::Counter& logins_busy;
  prometheus::Counter& tombstones_collected;
  prometheus::Gauge& tombstone_stability_lag;
  prometheus::Histogram& mv_siblings;
  prometheus::Gauge& rocksdb_live_data;
  prometheus::Gauge& rocksdb_memtable;
  prometheus::Gauge& rocksdb_pending_compaction;
  prometheus::Gauge& disk_free;
  prometheus::Gauge& disk_total;
  // How late a periodic timer of the event loop fires: the loop's lag.
  prometheus::Histogram& event_loop_lag;

 private:
  // REQUIRES: mu_ held.
  prometheus::Histogram& LagLocked(const std::string& source_region);

  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& durations_;
  prometheus::Family<prometheus::Histogram>& lag_;
  prometheus::Family<prometheus::Gauge>& backlog_entries_;
  prometheus::Family<prometheus::Gauge>& backlog_bytes_;
  prometheus::Family<prometheus::Counter>& sent_bytes_;
  prometheus::Family<prometheus::Counter>& received_bytes_;
  prometheus::Family<prometheus::Gauge>& connected_;
  prometheus::Family<prometheus::Gauge>& peer_clock_offset_;
  prometheus::Family<prometheus::Gauge>& members_;
  prometheus::Family<prometheus::Counter>& gossip_refused_;
  prometheus::Family<prometheus::Counter>& peer_claims_refused_;
  prometheus::Family<prometheus::Counter>& reloads_;
  std::array<std::array<prometheus::Counter*, kMetricOutcomes>, kMetricOps> request_counters_{};
  std::array<prometheus::Histogram*, kMetricOps> request_durations_{};
  std::mutex mu_;  // guards the maps below
  std::map<std::string, prometheus::Histogram*> lag_by_region_;
  std::map<std::pair<std::string, std::string>, Peer> peers_;
  std::map<std::pair<std::string, std::string>, prometheus::Gauge*> member_gauges_;
};

// Serves a registry, and the process's own metrics (CPU, memory, file
// descriptors, from /proc), on http://LISTEN/metrics, with four threads; a
// connection that has not sent its whole request within 5 s is closed.
class MetricsServer {
 public:
  // InvalidArgument or IOError naming `listen` when it cannot serve there.
  static StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();

  // The port it listens on (the real one when `listen` asked for port 0).
  int port() const;

 private:
  MetricsServer() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> process_;
};

}  // namespace geokv

#endif  // GEOKV_MONITORING_METRICS_H_
