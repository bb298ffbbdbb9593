// Gossip: runs one node's Membership (cluster/membership.h) over UDP with
// Boost.Asio, on a thread of its own (DESIGN.md section 3, "Threads").
//
// The thread owns the socket and a timer: each datagram received is opened
// (cluster/gossip_auth.h: with keys, one that is not sealed under one of
// them, or is replayed, is refused, counted and logged at most every 10 s
// per reason, and reaches nothing else) and handed to the membership, the
// timer ticks it at its next deadline, and what it produces is sealed and
// sent at once. Addresses are HOST:PORT; names are resolved on the gossip
// thread and remembered for a while.
//
// Thread safety: every public method may be called from any thread, except
// Stop() and the destructor, which must not be called from the gossip
// thread (that is, from an OnChange callback).

#ifndef GEOKV_CLUSTER_GOSSIP_H_
#define GEOKV_CLUSTER_GOSSIP_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/gossip_auth.h"
#include "cluster/membership.h"
#include "util/log_limiter.h"
#include "util/status.h"

namespace geokv {

struct GossipOptions {
  // HOST:PORT to bind the UDP socket to; port 0 picks a free port (see
  // bound_address()). REQUIRES: not empty.
  std::string listen;
  // This node. Its gossip_address is where other nodes reach it; if empty,
  // the bound address (then `listen` must not be a wildcard address).
  // REQUIRES: id != 0, state alive.
  Member self;
  // HOST:PORT of nodes to join through; this node's own address may be
  // among them. Empty for the first node of a region. Default: empty.
  std::vector<std::string> seeds;
  // The membership protocol's options. With keys, each packet is kept
  // GossipAuthenticator::kMaxOverheadBytes under max_packet_bytes, so that
  // a sealed datagram is no larger than a bare one was; and dead_forget and
  // left_forget, where set, must exceed auth.window.
  MembershipOptions membership;
  // Keys and replay window. Default: no keys, nothing authenticated, and a
  // warning at Start() unless the socket is bound to a loopback address.
  GossipAuthOptions auth;
  // For tests: the fraction of datagrams dropped, each sent and each
  // received. Default: 0.
  double drop_probability = 0;
};

class Gossip {
 public:
  explicit Gossip(GossipOptions options);
  // Stops the thread (see Stop()).
  ~Gossip();

  Gossip(const Gossip&) = delete;
  Gossip& operator=(const Gossip&) = delete;

  // Binds the socket, starts the gossip thread and joins through the seeds.
  // InvalidArgument for bad options or an address that does not resolve,
  // IOError naming the address if it cannot be bound.
  // REQUIRES: called at most once.
  Status Start();

  // The HOST:PORT bound by Start(), with the real port; empty before.
  std::string bound_address() const;

  // Announces that this node leaves the region and keeps serving until
  // every member the news was sent to acked it, or `wait` passed, so the
  // news spreads; then returns. From then on the node neither probes nor
  // joins; call Stop() afterwards. Does nothing before Start() or after
  // Stop().
  void Leave(std::chrono::milliseconds wait = std::chrono::seconds(1));

  // See Membership::Remove. Unavailable before Start() or after Stop().
  Status Remove(ReplicaId id);

  // Stops the gossip thread and closes the socket, without announcing
  // anything: to the others this node fails. Idempotent.
  void Stop();

  // Every known member of the region, this node included, by id. Empty
  // before Start().
  std::vector<Member> Members() const;
  // This node as the region knows it (incarnation and state included).
  Member Self() const;
  std::optional<Member> Find(ReplicaId id) const;
  uint64_t failure_detections() const;
  // See Membership::version(); 0 before Start().
  uint64_t version() const;
  MembershipStats stats() const;
  // Datagrams refused, by GossipRefusal; they only grow.
  std::array<uint64_t, kGossipRefusals> refused() const;

  // `callback` runs on the gossip thread after any change to the member
  // list (a version() bump), outside of any lock, so it may call the
  // methods above. It must not block, nor call Stop(). Replaces the
  // previous callback; empty removes it.
  void OnChange(std::function<void()> callback);

  // Seals and accepts under `keys` from the gossip thread's next event on
  // (a reload of the key file), keeping the replay state. Does nothing
  // before Start() or after Stop(). REQUIRES: started with keys; `keys`
  // valid and not empty (LoadGossipKeys).
  void SetKeys(std::vector<GossipKey> keys);

  // Changes drop_probability (see GossipOptions) from now on.
  void SetDropProbability(double probability) { drop_probability_.store(probability); }

 private:
  using Clock = Membership::Clock;

  void StartReceive();
  void OnTimer(uint64_t generation, const boost::system::error_code& ec);
  // Sends what the membership produced, reports changes and re-arms the
  // timer. Called on the gossip thread after each event.
  void AfterEvent();
  void ArmTimer(Clock::time_point deadline);
  void SendTo(const Membership::Outgoing& out);
  bool Resolve(const std::string& address, boost::asio::ip::udp::endpoint* endpoint);
  bool Drop();
  void Refuse(GossipRefusal refusal, const std::string& from, const std::string& detail);
  void LogChanges(const std::vector<Member>& members);

  const GossipOptions options_;
  boost::asio::io_context io_;
  boost::asio::ip::udp::socket socket_;
  boost::asio::steady_timer timer_;
  boost::asio::ip::udp::resolver resolver_;
  std::thread thread_;
  std::string bound_address_;
  std::atomic<double> drop_probability_;
  std::array<std::atomic<uint64_t>, kGossipRefusals> refused_{};

  // Touched only on the gossip thread (or by Start() before it runs).
  std::unique_ptr<GossipAuthenticator> auth_;
  std::array<LogLimiter, kGossipRefusals> refusal_log_;
  std::vector<char> receive_buffer_;
  boost::asio::ip::udp::endpoint receive_from_;
  bool timer_armed_ = false;
  Clock::time_point timer_deadline_{};
  uint64_t timer_generation_ = 0;
  uint64_t reported_version_ = 0;
  std::map<ReplicaId, Member> logged_;
  struct Resolved {
    boost::asio::ip::udp::endpoint endpoint;
    Clock::time_point expires;
  };
  std::map<std::string, Resolved> resolved_;
  std::set<std::string> unresolvable_;  // warned about once
  std::mt19937_64 drop_rng_;

  mutable std::mutex mu_;
  std::condition_variable cv_;             // notified after every event
  std::unique_ptr<Membership> membership_;  // guarded by mu_
  std::function<void()> on_change_;        // guarded by mu_
  bool started_ = false;                   // guarded by mu_
  bool stopped_ = false;                   // guarded by mu_
};

}  // namespace geokv

#endif  // GEOKV_CLUSTER_GOSSIP_H_
