#include "monitoring/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <sys/resource.h>
#include <unistd.h>

#include <dirent.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <type_traits>

namespace geokv {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

constexpr const char* kOpNames[kMetricOps] = {
    "set",       "get",   "del",   "mvset",  "mvget",      "mvdel", "sadd",  "srem",
    "sismember", "smembers", "scard", "incrby", "counterget", "type", "batch", "waitreplicated"};
constexpr const char* kOutcomeNames[kMetricOutcomes] = {
    "ok",       "not_found", "wrong_type",      "too_large", "invalid",
    "unavailable", "internal", "timeout", "unauthenticated", "permission_denied"};
// domain/member.h's MemberStateName values: every region seen gets all
// four, so "none dead" is a 0 an operator can see rather than no series.
constexpr const char* kMemberStates[] = {"alive", "suspect", "dead", "left"};

// A family whose every series carries the node's region.
template <typename T>
prometheus::Family<T>& Family(prometheus::Registry& registry, const std::string& region,
                              const char* name, const char* help) {
  if constexpr (std::is_same_v<T, prometheus::Counter>) {
    return BuildCounter().Name(name).Help(help).Labels({{"region", region}}).Register(registry);
  } else if constexpr (std::is_same_v<T, prometheus::Gauge>) {
    return BuildGauge().Name(name).Help(help).Labels({{"region", region}}).Register(registry);
  } else {
    return BuildHistogram().Name(name).Help(help).Labels({{"region", region}}).Register(registry);
  }
}

prometheus::Counter& NewCounter(prometheus::Registry& registry, const std::string& region,
                                const char* name, const char* help) {
  return Family<prometheus::Counter>(registry, region, name, help).Add({});
}

prometheus::Gauge& NewGauge(prometheus::Registry& registry, const std::string& region,
                            const char* name, const char* help) {
  return Family<prometheus::Gauge>(registry, region, name, help).Add({});
}

// One outcome of geokv_logins_total (the registry merges the family).
prometheus::Counter& NewLogins(prometheus::Registry& registry, const std::string& region,
                               const std::string& outcome) {
  return Family<prometheus::Counter>(registry, region, "geokv_logins_total",
                                     "Logins to the client ports, by outcome")
      .Add({{"outcome", outcome}});
}

// Seconds, from 100 µs to 10 s.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1,     2.5,    5,     10};
  return kBuckets;
}

// Seconds, from 5 ms to 5 min: replication crosses WANs and partitions.
const prometheus::Histogram::BucketBoundaries& LagBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return kBuckets;
}

// Seconds, from 50 µs to 1 s: a free loop answers timers within a
// millisecond or two.
const prometheus::Histogram::BucketBoundaries& LoopLagBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1};
  return kBuckets;
}

// The process's CPU, memory, file descriptors and start time, read from
// /proc at each scrape (the names of Prometheus's process collectors).
class ProcessCollector final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    auto add = [&](const char* name, const char* help, prometheus::MetricType type,
                   double value) {
      prometheus::MetricFamily f;
      f.name = name;
      f.help = help;
      f.type = type;
      prometheus::ClientMetric m;
      if (type == prometheus::MetricType::Counter) {
        m.counter.value = value;
      } else {
        m.gauge.value = value;
      }
      f.metric.push_back(m);
      out.push_back(std::move(f));
    };
    const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    std::ifstream stat("/proc/self/stat");
    std::string line;
    if (std::getline(stat, line)) {
      // Fields after the command, which is in parentheses and may hold spaces.
      std::istringstream rest(line.substr(line.rfind(')') + 2));
      std::vector<std::string> f{"", "", ""};  // fields 1-2 and a pad: f[3] is field 3
      std::string word;
      while (rest >> word) f.push_back(word);
      if (f.size() > 24) {
        double cpu = (std::stod(f[14]) + std::stod(f[15])) / ticks;
        add("process_cpu_seconds_total", "User and system CPU time spent in seconds.",
            prometheus::MetricType::Counter, cpu);
        add("process_virtual_memory_bytes", "Virtual memory size in bytes.",
            prometheus::MetricType::Gauge, std::stod(f[23]));
        add("process_resident_memory_bytes", "Resident memory size in bytes.",
            prometheus::MetricType::Gauge, std::stod(f[24]) * page);
        add("process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            prometheus::MetricType::Gauge, BootTime() + std::stod(f[22]) / ticks);
      }
    }
    add("process_open_fds", "Number of open file descriptors.", prometheus::MetricType::Gauge,
        OpenFds());
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      add("process_max_fds", "Maximum number of open file descriptors.",
          prometheus::MetricType::Gauge, static_cast<double>(limit.rlim_cur));
    }
    return out;
  }

 private:
  static double BootTime() {
    std::ifstream stat("/proc/stat");
    std::string key;
    double value = 0;
    while (stat >> key) {
      if (key == "btime") {
        stat >> value;
        break;
      }
    }
    return value;
  }

  static double OpenFds() {
    DIR* dir = opendir("/proc/self/fd");
    if (dir == nullptr) return 0;
    double n = 0;
    while (dirent* e = readdir(dir)) n += e->d_name[0] != '.';
    closedir(dir);
    return n - 1;  // the descriptor of the listing itself
  }
};

}  // namespace

Metrics::Metrics(const std::string& region)
    : ae_keys_compared(NewCounter(*registry_, region, "geokv_anti_entropy_keys_compared_total",
          "Keys whose digests anti-entropy compared with a peer")),
      ae_keys_repaired(NewCounter(*registry_, region, "geokv_anti_entropy_keys_repaired_total",
          "Keys whose states anti-entropy exchanged with a peer")),
      token_gap_syncs(NewCounter(*registry_, region, "geokv_token_gap_syncs_total",
          "Segments brought in step because a token read found a gap in this node's coverage")),
      hints_stored(NewCounter(*registry_, region, "geokv_hints_stored_total",
          "Writes acknowledged while an owner was away (kept in the log for it)")),
      hints_replayed(NewCounter(*registry_, region, "geokv_hints_replayed_total",
          "Hinted writes their owner acknowledged since")),
      hints_dropped(NewCounter(*registry_, region, "geokv_hints_dropped_total",
          "Hinted writes left to anti-entropy (past --max-backlog)")),
      hints_pending(NewGauge(*registry_, region, "geokv_hints_pending",
          "Hinted writes waiting for their owner")),
      failure_detections(NewCounter(*registry_, region, "geokv_failure_detections_total",
          "Members this node's gossip declared dead")),
      forwarded(NewCounter(*registry_, region, "geokv_forwarded_total",
          "Requests sent on to an owner of their key")),
      read_repairs(NewCounter(*registry_, region, "geokv_read_repairs_total",
          "Quorum reads that found owners differing and repaired them")),
      writes_refused_clock(NewCounter(*registry_, region, "geokv_writes_refused_clock_total",
          "Client writes refused because this node's clock was off")),
      clock_offset(NewGauge(*registry_, region, "geokv_clock_offset_seconds",
          "This node's clock minus the median of its peers' and its own")),
      max_clock_offset(NewGauge(*registry_, region, "geokv_max_clock_offset_seconds",
          "The clock offset beyond which writes are refused")),
      lww_overwritten(NewCounter(*registry_, region, "geokv_lww_overwritten_total",
          "LWW values received that lost to a later write already here")),
      stamps_refused(NewCounter(*registry_, region, "geokv_stamps_refused_total",
          "Batches from peers refused for a stamp beyond --max-clock-offset ahead")),
      writes_restamped(NewCounter(*registry_, region, "geokv_writes_restamped_total",
          "Quorum register writes made again above a newer value an owner already held")),
      logins_ok(NewLogins(*registry_, region, "ok")),
      logins_refused(NewLogins(*registry_, region, "refused")),
      logins_busy(NewLogins(*registry_, region, "busy")),
      tombstones_collected(NewCounter(*registry_, region, "geokv_tombstones_collected_total",
          "Deleted registers and emptied registers and sets removed once every replica held the delete")),
      tombstone_stability_lag(NewGauge(*registry_, region,
          "geokv_tombstone_stability_lag_seconds",
          "How far behind the wall clock the stamp every peer holds this node's log through is")),
      mv_siblings(Family<prometheus::Histogram>(*registry_, region, "geokv_mv_siblings",
          "Siblings per multi-value register read")
          .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 3, 4, 8, 16, 32, 64})),
      rocksdb_live_data(NewGauge(*registry_, region, "geokv_rocksdb_live_data_bytes",
          "RocksDB's estimate of the live data size")),
      rocksdb_memtable(NewGauge(*registry_, region, "geokv_rocksdb_memtable_bytes",
          "Bytes in RocksDB's memtables")),
      rocksdb_pending_compaction(NewGauge(*registry_, region,
          "geokv_rocksdb_pending_compaction_bytes",
          "RocksDB's estimate of bytes compaction must rewrite")),
      disk_free(NewGauge(*registry_, region, "geokv_disk_free_bytes",
          "Free bytes on the data dir's filesystem")),
      disk_total(NewGauge(*registry_, region, "geokv_disk_total_bytes",
          "Size of the data dir's filesystem")),
      event_loop_lag(Family<prometheus::Histogram>(*registry_, region,
          "geokv_event_loop_lag_seconds",
          "How late a periodic timer of the event loop fires")
          .Add({}, LoopLagBuckets())),
      requests_(Family<prometheus::Counter>(*registry_, region, "geokv_requests_total",
          "Client operations by operation and outcome")),
      durations_(Family<prometheus::Histogram>(*registry_, region, "geokv_request_duration_seconds",
          "Client operation latency, from arrival to answer")),
      lag_(Family<prometheus::Histogram>(*registry_, region, "geokv_replication_lag_seconds",
          "How long after its origin made it a write became visible here")),
      backlog_entries_(Family<prometheus::Gauge>(*registry_, region, "geokv_log_backlog_entries",
          "This node's log entries a peer has not acknowledged")),
      backlog_bytes_(Family<prometheus::Gauge>(*registry_, region, "geokv_log_backlog_bytes",
          "Estimated bytes of this node's log a peer has not acknowledged")),
      sent_bytes_(Family<prometheus::Counter>(*registry_, region, "geokv_peer_sent_bytes_total",
          "Bytes sent on the connection this node opened to a peer")),
      received_bytes_(Family<prometheus::Counter>(*registry_, region,
          "geokv_peer_received_bytes_total",
          "Bytes received on the connection this node opened to a peer")),
      connected_(Family<prometheus::Gauge>(*registry_, region, "geokv_peer_connected",
          "1 while the link to a peer is up")),
      peer_clock_offset_(Family<prometheus::Gauge>(*registry_, region,
          "geokv_peer_clock_offset_seconds", "A peer's clock minus this node's, from heartbeats")),
      members_(Family<prometheus::Gauge>(*registry_, region, "geokv_members",
          "Members of the cluster as this node sees them, by region and state")),
      gossip_refused_(Family<prometheus::Counter>(*registry_, region,
          "geokv_gossip_datagrams_refused_total",
          "Gossip datagrams dropped before the membership saw them, by reason")),
      peer_claims_refused_(Family<prometheus::Counter>(*registry_, region,
          "geokv_peer_claims_refused_total",
          "Peer calls refused, nothing of them applied, for a claim beyond its bound")),
      reloads_(Family<prometheus::Counter>(*registry_, region, "geokv_reloads_total",
          "Reloads of a part's files on SIGHUP, by part and result")) {
  Family<prometheus::Gauge>(*registry_, region, "geokv_build_info",
                            "The geokv version this node runs")
      .Add({{"version", GEOKV_VERSION}})
      .Set(1);
  for (size_t op = 0; op < kMetricOps; ++op) {
    for (size_t o = 0; o < kMetricOutcomes; ++o) {
      request_counters_[op][o] =
          &requests_.Add({{"op", kOpNames[op]}, {"outcome", kOutcomeNames[o]}});
    }
    request_durations_[op] = &durations_.Add({{"op", kOpNames[op]}}, LatencyBuckets());
  }
}

void Metrics::Request(MetricOp op, uint16_t outcome, double seconds) {
  size_t i = static_cast<size_t>(op);
  request_counters_[i][outcome < kMetricOutcomes ? outcome : 6]->Increment();
  request_durations_[i]->Observe(seconds);
}

prometheus::Histogram& Metrics::LagLocked(const std::string& source_region) {
  auto it = lag_by_region_.find(source_region);
  if (it == lag_by_region_.end()) {
    it = lag_by_region_
             .emplace(source_region, &lag_.Add({{"source_region", source_region}}, LagBuckets()))
             .first;
  }
  return *it->second;
}

void Metrics::ReplicationLag(const std::string& source_region,
                             const std::vector<double>& seconds) {
  prometheus::Histogram* h;
  {
    std::lock_guard<std::mutex> lock(mu_);
    h = &LagLocked(source_region);
  }
  for (double s : seconds) h->Observe(s < 0 ? 0 : s);
}

Metrics::Peer& Metrics::PeerMetrics(const std::string& peer, const std::string& peer_region) {
  std::lock_guard<std::mutex> lock(mu_);
  auto key = std::make_pair(peer, peer_region);
  auto it = peers_.find(key);
  if (it == peers_.end()) {
    prometheus::Labels labels{{"peer", peer}, {"peer_region", peer_region}};
    Peer p{&backlog_entries_.Add(labels), &backlog_bytes_.Add(labels), &sent_bytes_.Add(labels),
           &received_bytes_.Add(labels),  &connected_.Add(labels),
            &peer_clock_offset_.Add(labels)};
    it = peers_.emplace(key, p).first;
    // The pair's lag series exists from the first link, at count 0, so a
    // pair that has carried no write yet reads 0 rather than nothing.
    LagLocked(peer_region);
  }
  return it->second;
}

void Metrics::ForgetPeer(const std::string& peer, const std::string& peer_region) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(std::make_pair(peer, peer_region));
  if (it == peers_.end()) return;
  backlog_entries_.Remove(it->second.backlog_entries);
  backlog_bytes_.Remove(it->second.backlog_bytes);
  connected_.Remove(it->second.connected);
  peer_clock_offset_.Remove(it->second.clock_offset);
  peers_.erase(it);
}

prometheus::Counter& Metrics::GossipRefused(const std::string& reason) {
  return gossip_refused_.Add({{"reason", reason}});
}

prometheus::Counter& Metrics::PeerClaimRefused(const std::string& claim) {
  return peer_claims_refused_.Add({{"claim", claim}});
}

prometheus::Counter& Metrics::Reloads(const std::string& part, bool ok) {
  return reloads_.Add({{"part", part}, {"result", ok ? "ok" : "failed"}});
}

void Metrics::SetMembers(const std::map<std::pair<std::string, std::string>, int>& counts) {
  std::lock_guard<std::mutex> lock(mu_);
  auto gauge = [&](const std::string& region, const std::string& state) {
    auto key = std::make_pair(region, state);
    auto it = member_gauges_.find(key);
    if (it == member_gauges_.end()) {
      it = member_gauges_
               .emplace(key, &members_.Add({{"member_region", region}, {"state", state}}))
               .first;
    }
    return it->second;
  };
  for (auto& [key, g] : member_gauges_) g->Set(0);
  for (const auto& [key, n] : counts) {
    for (const char* state : kMemberStates) gauge(key.first, state);
    gauge(key.first, key.second)->Set(n);
  }
}

StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen, std::shared_ptr<prometheus::Registry> registry) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  try {
    // A few threads, and a request that has not arrived whole within 5 s
    // is dropped: slow or idle connections cannot hold the port for long.
    server->exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", listen, "num_threads", "4", "request_timeout_ms", "5000"});
  } catch (const std::exception& e) {
    return Status::IOError("cannot serve metrics on " + listen + ": " + e.what());
  }
  server->registry_ = std::move(registry);
  server->process_ = std::make_shared<ProcessCollector>();
  server->exposer_->RegisterCollectable(server->registry_);
  server->exposer_->RegisterCollectable(server->process_);
  return server;
}

MetricsServer::~MetricsServer() = default;

int MetricsServer::port() const {
  auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace geokv
