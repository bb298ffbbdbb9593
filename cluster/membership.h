// Membership: the SWIM failure detector and membership protocol of one node
// (Das, Gupta and Motivala, "SWIM", 2002), as pure logic. It owns no socket,
// thread or clock: the caller feeds it time (Tick) and datagrams (Receive)
// and sends what TakeOutgoing returns, so a test can run a whole group on a
// manual clock over a lossy in-memory network (cluster/gossip.h is the
// real driver, on UDP).
//
// Gossip runs within one region: a node learns, probes and spreads only the
// members of its own region; entries about other regions are ignored.
//
// Every `period` a node probes the next member of a shuffled round-robin
// list of the other alive or suspect members: a ping, and if no ack comes
// within `ping_timeout`, ping-reqs asking `indirect_checks` other members to
// ping it on its behalf; a helper whose own ping goes unanswered for
// `ping_timeout` says so (a nack). Without any ack by the end of the period the
// member becomes suspect; unless it refutes within `suspicion_timeout` (by
// raising its incarnation above the suspicion, which only it may do) it
// becomes dead. A node holding a suspicion pings the suspect every
// `ping_timeout` with its suspect entry, so a live one hears of it in time. A suspicion travels with the id of the member whose probe
// raised it, and every node counts the witnesses of each suspicion it holds
// (its own failed probe, the helpers that nacked it, and the members named
// by the suspicions it receives). Each witness beyond the first brings the deadline closer, as
// Lifeguard's suspicion confirmations do (Dadgar, Phillips and Currey,
// 2018): with C of them, at most T(C) after the last, where T falls from
// `suspicion_timeout` to `confirmed_suspicion_timeout` in log(C + 1) /
// log(K + 1) steps and K = min(3, region size - 2) confirmations are
// expected. A member that really failed is declared dead sooner; one that
// only a single prober cannot reach keeps the full time. Every change of an entry is piggybacked on the following
// packets, least-sent and freshest first, about retransmit_multiplier *
// ceil(log2(n + 1)) times. A node probes one dead member every
// `dead_probe_interval`, so a member that comes back (a paused process, a
// restart with incarnation 0) learns it was declared dead and refutes.
// Every `push_pull_interval` a node also exchanges full member lists with
// one random member, which repairs what lost packets left behind.
//
// Thread safety: none; one thread at a time (the driver holds a lock).

#ifndef GEOKV_CLUSTER_MEMBERSHIP_H_
#define GEOKV_CLUSTER_MEMBERSHIP_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "domain/member.h"
#include "util/status.h"

namespace geokv {

struct MembershipOptions {
  // How often a node probes one member. Default: 500 ms.
  std::chrono::milliseconds period{500};
  // How long a direct ping waits for its ack before ping-reqs go out.
  // REQUIRES: 0 < ping_timeout < period. Default: 200 ms.
  std::chrono::milliseconds ping_timeout{200};
  // Members asked to ping a silent target on the prober's behalf (fewer if
  // the region has fewer). Default: 3.
  size_t indirect_checks = 3;
  // How long a suspect member has to refute before it is declared dead.
  // Default: 2500 ms (5 periods): at 5% packet loss a suspicion reaches the
  // member and its refutation comes back well within it (membership_test).
  std::chrono::milliseconds suspicion_timeout{2500};
  // How long a suspect has to refute once every expected confirmation
  // arrived (see above; never later than `suspicion_timeout` after the
  // suspicion arrived).
  // REQUIRES: 0 < confirmed_suspicion_timeout <= suspicion_timeout.
  // Default: 750 ms (1.5 periods; at one period, 10% loss in a region of
  // three declares live members dead, membership_test).
  std::chrono::milliseconds confirmed_suspicion_timeout{750};
  // The largest datagram sent (a single entry that does not fit alone is
  // sent alone anyway). Default: 1400, under a typical path MTU.
  size_t max_packet_bytes = 1400;
  // An entry is piggybacked about multiplier * ceil(log2(n + 1)) times for n
  // members. Default: 4.
  unsigned retransmit_multiplier = 4;
  // How often one dead member is pinged, to find members that came back.
  // Default: 5 s (10 periods).
  std::chrono::milliseconds dead_probe_interval{5000};
  // How often full member lists are exchanged with one random member; 0
  // never. Default: 30 s.
  std::chrono::milliseconds push_pull_interval{30000};
  // How long a dead member stays listed; 0 forever. Default: 0, because
  // placement keeps dead members in the ring for hinted handoff.
  std::chrono::milliseconds dead_forget{0};
  // How long a left member stays listed; 0 forever. Listing it keeps stale
  // gossip (from a node partitioned away while it left) from bringing it
  // back as a dead owner that never answers. Default: 0.
  std::chrono::milliseconds left_forget{0};
  // Seeds the random choices (probe order, indirect probers); 0 takes a
  // seed from std::random_device. Default: 0.
  uint64_t seed = 0;
  // Ids this node used before it took a new one (Store::Open): as only it
  // speaks for them, it answers any entry about one that is not left with a
  // left entry at kRetiredIncarnation. Default: none.
  std::vector<ReplicaId> retired;
};

// OK, or InvalidArgument naming the first option (or field of `self`) that
// cannot work.
Status ValidateMembership(const MembershipOptions& options, const Member& self);

// Counters for metrics; they only grow.
struct MembershipStats {
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
  // Received and ignored: not decodable, wrong magic or version, sent by
  // this node itself, or a ping meant for another node once at this address.
  uint64_t messages_dropped = 0;
  uint64_t suspicions = 0;          // members this node suspected after a failed probe
  uint64_t confirmations = 0;       // witnesses beyond the first of the suspicions held here
  uint64_t failure_detections = 0;  // suspects this node declared dead
  uint64_t refutations = 0;         // times this node refuted news of its own failure
};

class Membership {
 public:
  using Clock = std::chrono::steady_clock;
  using Time = Clock::time_point;

  // A datagram to send.
  struct Outgoing {
    std::string to;  // HOST:PORT
    std::string bytes;
    // The member meant, 0 when the sender does not know which member is at
    // `to` (a seed); a sealed datagram names it (cluster/gossip_auth.h).
    ReplicaId recipient = 0;
  };

  // `self` is this node, alive; its gossip_address is where others reach it.
  // REQUIRES: ValidateMembership(options, self).ok().
  Membership(MembershipOptions options, Member self);

  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  // Sends join requests to `seeds` (HOST:PORT; this node's own address is
  // skipped) at the next Tick and every period after, until this node knows
  // another alive member, which a seed's answer or any other contact brings.
  // Later calls replace the seeds.
  void Join(std::vector<std::string> seeds);

  // Advances the timers to `now`: probes, suspicion timeouts, join retries.
  // REQUIRES: `now` never goes back between calls (Tick, Receive, Leave).
  void Tick(Time now);

  // Handles one datagram from `from` (the sender's HOST:PORT, where replies
  // go). Any bytes are fine: what does not decode is counted and dropped.
  void Receive(const std::string& from, std::string_view bytes, Time now);

  // Announces that this node leaves: its entry becomes left at the next
  // incarnation and is sent at once to every alive or suspect member (and
  // again each period to those that have not acked). A left node no longer
  // probes or joins, and still answers pings. Idempotent.
  void Leave(Time now);

  // Declares a dead member gone for good, on the operator's word: its entry
  // becomes left at its incarnation (left outranks dead), which spreads as
  // any update does. If it is in fact running, it refutes and is alive
  // again. OK also when it already left; NotFound for an unknown id;
  // FailedPrecondition for this node or a member not dead.
  Status Remove(ReplicaId id, Time now);
  // What Remove would return, changing nothing.
  Status CanRemove(ReplicaId id) const;

  // Whether Leave was called and every member it was sent to acked it (or
  // was found dead or left meanwhile).
  bool LeaveAcknowledged() const;

  // The datagrams produced since the last call; the caller sends them.
  std::vector<Outgoing> TakeOutgoing();

  // When Tick next has something to do; it need not be called earlier
  // (though it may). Right after Tick(now) it is later than `now`; after
  // Receive it may be earlier, which means at once.
  Time NextDeadline() const;

  // Every known member of the region, this node included, by id.
  std::vector<Member> Members() const;
  std::optional<Member> Find(ReplicaId id) const;
  const Member& self() const { return self_; }

  // Bumped by any change of a member's state, incarnation or addresses, and
  // by a member added or forgotten.
  uint64_t version() const { return version_; }
  uint64_t failure_detections() const { return stats_.failure_detections; }
  const MembershipStats& stats() const { return stats_; }

 private:
  enum class Kind : uint8_t { kPing, kAck, kPingReq, kJoin, kJoinReply, kNack };

  // A decoded packet.
  struct Packet {
    ReplicaId sender_id = 0;
    uint64_t sender_incarnation = 0;
    Kind kind = Kind::kPing;
    uint64_t seq = 0;
    ReplicaId target_id = 0;
    std::string target_address;
    // Each entry, and for a suspect one the member whose probe raised it
    // (0: not said).
    std::vector<std::pair<Member, ReplicaId>> updates;
  };

  struct Entry {
    Member member;
    // When a suspect member is declared dead, and when it is next sent a
    // ping that carries its suspect entry, so that it can refute in time.
    Time suspect_deadline{};
    Time next_notice{};
    // For a suspect: the member whose failed probe raised the suspicion (0
    // not known), and every witness of it known here.
    ReplicaId suspected_by = 0;
    std::set<ReplicaId> witnesses;
    // When the entry became dead or left, for forgetting it.
    Time since{};
  };

  // An entry being piggybacked; its content is the entry's current one.
  struct Broadcast {
    unsigned transmits = 0;
    uint64_t order = 0;  // larger is fresher
  };

  struct Probe {
    bool active = false;
    ReplicaId target = 0;
    // The target's incarnation when the probe began: a probe whose target
    // came back under another incarnation meanwhile says nothing about it.
    uint64_t incarnation = 0;
    uint64_t seq = 0;
    Time start{};
    bool acked = false;
    bool indirect_sent = false;
    // The members asked to ping the target, and those of them that said
    // their own ping went unanswered.
    std::vector<ReplicaId> helpers;
    std::set<ReplicaId> nacked_by;
  };

  // A ping sent on behalf of a ping-req.
  struct Relay {
    std::string requester;
    ReplicaId requester_id = 0;
    uint64_t requester_seq = 0;
    // When the requester is told the target did not answer (unless it did).
    std::optional<Time> nack_at;
    Time expires{};
  };

  // Merges one entry learned from a packet; refutes news about this node.
  // `suspected_by` as Packet::updates carries it.
  void Apply(const Member& update, ReplicaId suspected_by, Time now);
  // Installs `member` as the entry of `member.id` (new or superseding).
  void Install(const Member& member, Time now, ReplicaId suspected_by = 0);
  // Counts `witness` (non-zero) for `e`'s suspicion; a new one beyond the
  // first brings the deadline closer.
  void AddWitness(Entry& e, ReplicaId witness, Time now);
  void Refute(uint64_t above);
  void Queue(ReplicaId id);
  void Changed() { ++version_; }
  const Member* Lookup(ReplicaId id) const;

  void StartProbe(Time now);
  void EndProbe(Time now);
  void ProbeDead();
  void PushPull();
  void ExpireSuspects(Time now);
  void NoticeSuspects(Time now);
  void Forget(Time now);
  void SendJoins();
  void ResendLeave();
  void HandleAck(uint64_t seq);
  void HandleNack(uint64_t seq, ReplicaId from);
  bool HasAliveOther() const;
  // Alive members of the region other than this node and `exclude`.
  std::vector<ReplicaId> AliveOthers(ReplicaId exclude) const;

  // Builds and queues one packet, piggybacking entries as they fit. The
  // entry of `recipient` (0 if unknown) goes first if it is suspect, dead
  // or left there, so that the recipient can refute at once.
  void Send(const std::string& to, ReplicaId recipient, const Packet& packet);
  // A ping of `target` with `seq`, sent as Send does.
  void SendPing(const Member& target, uint64_t seq);
  // Sends `members` to `to` (member `recipient`, 0 if unknown) in as many
  // packets of `kind` as needed.
  void SendList(const std::string& to, ReplicaId recipient, Kind kind,
                const std::vector<const Member*>& members);
  // The wire form (membership_wire.cc). A non-empty list of updates adds a
  // tag word to a packet.
  static constexpr size_t kListTagBytes = 8;
  std::string Encode(const Packet& packet, const std::vector<const Member*>& updates) const;
  // Bytes `member` adds to a packet.
  size_t UpdateBytes(const Member& member) const;
  unsigned RetransmitLimit() const;
  static bool Decode(std::string_view bytes, Packet* packet);

  const MembershipOptions options_;
  Member self_;
  std::map<ReplicaId, Entry> members_;  // other members of the region
  std::map<ReplicaId, Broadcast> broadcasts_;
  uint64_t broadcast_order_ = 0;
  std::vector<Outgoing> outgoing_;
  std::mt19937_64 rng_;

  bool ticked_ = false;
  Time last_now_{};
  Time next_period_{};
  Time next_dead_probe_{};
  Time next_push_pull_{};
  std::vector<ReplicaId> probe_order_;
  size_t probe_index_ = 0;
  ReplicaId last_dead_probed_ = 0;
  Probe probe_;
  uint64_t next_seq_ = 1;
  std::map<uint64_t, Relay> relays_;  // by the seq of the relayed ping

  std::vector<std::string> seeds_;
  std::optional<Time> next_join_;
  // Senders this node did not know, synced with at most once a period.
  std::map<std::string, Time> synced_unknown_;

  bool left_ = false;
  std::set<ReplicaId> leave_pending_;
  std::map<uint64_t, ReplicaId> leave_seqs_;

  uint64_t version_ = 1;
  MembershipStats stats_;
};

}  // namespace geokv

#endif  // GEOKV_CLUSTER_MEMBERSHIP_H_
