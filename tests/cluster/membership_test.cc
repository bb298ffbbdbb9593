// The SWIM core, simulated: groups of Membership cores exchange datagrams
// through an in-memory network with a manual clock, loss and partitions.
// The simulation jumps from event to event (a datagram's arrival, a core's
// next deadline), so minutes of protocol time take milliseconds and every
// run is the same.

#include "cluster/membership.h"

#include <capnp/message.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <iostream>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "schema/framing.h"
#include "schema/gossip.capnp.h"
#include "tests/cluster/forged_packet.h"
#include "tests/domain/sample_member.h"
#include "util/crc32c.h"

namespace geokv {
namespace {

using namespace std::chrono_literals;
using Time = Membership::Time;
using std::chrono::milliseconds;

MembershipOptions TestOptions(uint64_t seed) {
  MembershipOptions options;  // the defaults, deterministic
  options.seed = seed;
  return options;
}

// Datagrams travel with 1-3 ms of latency, and may be lost or cut off.
class SimNetwork {
 public:
  explicit SimNetwork(uint64_t seed) : rng_(seed) {}

  // Adds a node (not yet joined); returns its index.
  size_t Add(const Member& self, const MembershipOptions& options) {
    nodes_.push_back(Node{self, options, std::make_unique<Membership>(options, self), false});
    by_address_[self.gossip_address] = nodes_.size() - 1;
    return nodes_.size() - 1;
  }

  // Adds `n` nodes of `options` (seeded by index) that join through node 0.
  void AddGroup(int n, const MembershipOptions& options) {
    for (int i = 0; i < n; ++i) {
      MembershipOptions o = options;
      o.seed = options.seed * 1000 + static_cast<uint64_t>(i) + 1;
      size_t idx = Add(SampleMember(i), o);
      // Node 0's seed list names itself, which it skips.
      node(idx).Join({nodes_[0].self.gossip_address});
    }
  }

  Membership& node(size_t i) { return *nodes_[i].core; }
  const Member& self_template(size_t i) const { return nodes_[i].self; }
  size_t size() const { return nodes_.size(); }
  Time now() const { return now_; }

  // A paused node neither ticks nor receives: a stopped process.
  void Pause(size_t i) { nodes_[i].paused = true; }
  void Resume(size_t i) { nodes_[i].paused = false; }
  // A new process with the same identity, at incarnation 0.
  void Restart(size_t i, const std::vector<std::string>& seeds) {
    Node& n = nodes_[i];
    n.options.seed += 7777;
    n.core = std::make_unique<Membership>(n.options, n.self);
    n.paused = false;
    if (!seeds.empty()) n.core->Join(seeds);
  }

  void SetLoss(double loss) { loss_ = loss; }
  void Cut(size_t a, size_t b) {
    cut_.insert({a, b});
    cut_.insert({b, a});
  }
  void HealAll() { cut_.clear(); }

  // Sees every datagram sent (lost or not): sender, receiver address, size.
  std::function<void(size_t, const std::string&, size_t)> observer;
  // Datagrams sent that named a recipient other than the node at their
  // address, and that named none.
  uint64_t misdirected() const { return misdirected_; }
  uint64_t unaddressed() const { return unaddressed_; }

  // Runs the protocol until `end`.
  void RunTo(Time end) {
    for (;;) {
      Time next = Time::max();
      for (const Node& n : nodes_) {
        if (!n.paused) next = std::min(next, n.core->NextDeadline());
      }
      if (!in_flight_.empty()) next = std::min(next, in_flight_.top().at);
      if (next > end) break;
      now_ = std::max(now_, next);
      while (!in_flight_.empty() && in_flight_.top().at <= now_) {
        InFlight d = in_flight_.top();
        in_flight_.pop();
        auto to = by_address_.find(d.to);
        if (to == by_address_.end() || nodes_[to->second].paused) continue;
        nodes_[to->second].core->Receive(d.from, d.bytes, now_);
        Collect(to->second);
      }
      for (size_t i = 0; i < nodes_.size(); ++i) {
        Node& n = nodes_[i];
        if (n.paused || n.core->NextDeadline() > now_) continue;
        n.core->Tick(now_);
        if (n.core->NextDeadline() <= now_) {
          ADD_FAILURE() << "node " << i << " has a deadline that is not in the future";
          return;
        }
        Collect(i);
      }
    }
    now_ = end;
  }

  void RunFor(milliseconds d) { RunTo(now_ + d); }

  // Runs in steps of `step` until `done` holds (true) or `limit` passed.
  bool RunUntil(const std::function<bool()>& done, milliseconds limit,
                milliseconds step = 1ms) {
    const Time end = now_ + limit;
    while (!done()) {
      if (now_ >= end) return false;
      RunTo(std::min(end, now_ + step));
    }
    return true;
  }

  // Whether every running node lists every node of `expect` (by index) in
  // state `state`.
  bool AllSee(const std::vector<size_t>& subjects, MemberState state) {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].paused) continue;
      for (size_t s : subjects) {
        if (s == i) continue;
        auto m = node(i).Find(nodes_[s].self.id);
        if (!m || m->state != state) return false;
      }
    }
    return true;
  }

  // Whether every node lists every other alive, with identical entries.
  bool Converged() {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      std::vector<Member> view = node(i).Members();
      if (view.size() != nodes_.size()) return false;
      for (size_t j = 0; j < nodes_.size(); ++j) {
        auto m = node(i).Find(nodes_[j].self.id);
        if (!m || m->state != MemberState::kAlive || *m != node(j).self()) return false;
      }
    }
    return true;
  }

  uint64_t TotalFailureDetections() {
    uint64_t total = 0;
    for (size_t i = 0; i < nodes_.size(); ++i) total += node(i).failure_detections();
    return total;
  }

  uint64_t sent() const { return sent_; }
  uint64_t lost() const { return lost_; }
  size_t largest() const { return largest_; }

 private:
  struct Node {
    Member self;
    MembershipOptions options;
    std::unique_ptr<Membership> core;
    bool paused;
  };
  struct InFlight {
    Time at;
    uint64_t order;
    std::string from, to, bytes;
    bool operator>(const InFlight& o) const {
      return std::tie(at, order) > std::tie(o.at, o.order);
    }
  };

  void Collect(size_t i) {
    for (Membership::Outgoing& o : node(i).TakeOutgoing()) {
      ++sent_;
      largest_ = std::max(largest_, o.bytes.size());
      EXPECT_LE(o.bytes.size(), nodes_[i].options.max_packet_bytes);
      if (observer) observer(i, o.to, o.bytes.size());
      auto to = by_address_.find(o.to);
      if (o.recipient == 0) {
        ++unaddressed_;
      } else if (to != by_address_.end() && nodes_[to->second].self.id != o.recipient) {
        ++misdirected_;
      }
      bool cut = to != by_address_.end() && cut_.count({i, to->second}) != 0;
      if (cut || std::bernoulli_distribution(loss_)(rng_)) {
        ++lost_;
        continue;
      }
      milliseconds latency(std::uniform_int_distribution<int>(1, 3)(rng_));
      in_flight_.push(InFlight{now_ + latency, order_++, nodes_[i].self.gossip_address, o.to,
                               std::move(o.bytes)});
    }
  }

  std::mt19937_64 rng_;
  std::vector<Node> nodes_;
  std::map<std::string, size_t> by_address_;
  std::priority_queue<InFlight, std::vector<InFlight>, std::greater<InFlight>> in_flight_;
  uint64_t order_ = 0;
  Time now_ = Time(std::chrono::hours(1));
  double loss_ = 0;
  std::set<std::pair<size_t, size_t>> cut_;
  uint64_t sent_ = 0, lost_ = 0;
  uint64_t misdirected_ = 0, unaddressed_ = 0;
  size_t largest_ = 0;
};

TEST(MembershipTest, ValidatesOptions) {
  Member self = SampleMember(0);
  EXPECT_TRUE(ValidateMembership(MembershipOptions(), self).ok());
  MembershipOptions slow_ping;
  slow_ping.ping_timeout = slow_ping.period;
  Status s = ValidateMembership(slow_ping, self);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("below the period"), std::string::npos) << s.message();
  Member no_id = self;
  no_id.id = 0;
  EXPECT_FALSE(ValidateMembership(MembershipOptions(), no_id).ok());
  Member no_address = self;
  no_address.gossip_address.clear();
  EXPECT_FALSE(ValidateMembership(MembershipOptions(), no_address).ok());
  MembershipOptions long_confirmation;
  long_confirmation.confirmed_suspicion_timeout = long_confirmation.suspicion_timeout + 1ms;
  s = ValidateMembership(long_confirmation, self);
  EXPECT_NE(s.message().find("at most the suspicion timeout"), std::string::npos) << s.message();
}

TEST(MembershipTest, JoinThroughOneSeedConvergesToAFullView) {
  SimNetwork net(1);
  net.AddGroup(5, TestOptions(1));
  const Time start = net.now();
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  std::cout << "converged after "
            << std::chrono::duration_cast<milliseconds>(net.now() - start).count() << " ms\n";
  // Every field travels, peer routes included.
  auto seen = net.node(0).Find(net.self_template(3).id);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->peer_routes, net.self_template(3).peer_routes);
  EXPECT_EQ(seen->client_address, net.self_template(3).client_address);
  EXPECT_EQ(seen->incarnation, 0u);
  // It stays that way, with no one suspected.
  net.RunFor(60s);
  EXPECT_TRUE(net.Converged());
  for (size_t i = 0; i < net.size(); ++i) EXPECT_EQ(net.node(i).stats().suspicions, 0u);
}

// Every datagram names the member it is meant for, so a sealed one recorded
// on its way to one member is refused by the others (gossip_auth.h); only
// joins to seeds, whose member the sender does not know yet, name none.
TEST(MembershipTest, DatagramsNameTheMemberTheyAreMeantFor) {
  SimNetwork net(3);
  MembershipOptions o = TestOptions(3);
  o.push_pull_interval = 2s;
  net.AddGroup(5, o);
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  EXPECT_GT(net.unaddressed(), 0u);
  const uint64_t joins = net.unaddressed(), sent = net.sent();
  net.SetLoss(0.1);  // for ping-reqs and their relayed pings and acks
  net.RunFor(30s);
  EXPECT_GT(net.sent(), sent + 100);
  EXPECT_EQ(net.unaddressed(), joins);
  EXPECT_EQ(net.misdirected(), 0u);
}

TEST(MembershipTest, LargeRegionsSplitListsOverPacketsThatFit) {
  SimNetwork net(2);
  MembershipOptions options = TestOptions(2);
  for (int i = 0; i < 40; ++i) {
    Member m = SampleMember(i);
    m.name = "a-rather-long-node-name-for-region-eu-west-" + std::to_string(i);
    MembershipOptions o = options;
    o.seed = 100 + static_cast<uint64_t>(i);
    size_t idx = net.Add(m, o);
    net.node(idx).Join({SampleMember(0).gossip_address});
  }
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 30s, 10ms));
  // SimNetwork checks every datagram against max_packet_bytes; this one
  // shows that datagrams came close, so lists were split, not truncated.
  EXPECT_GT(net.largest(), options.max_packet_bytes * 3 / 4);
  EXPECT_LE(net.largest(), options.max_packet_bytes);
}

TEST(MembershipTest, ASilentMemberBecomesSuspectThenDeadWithinTheBound) {
  const int n = 4;
  const MembershipOptions o = TestOptions(3);
  SimNetwork net(3);
  net.AddGroup(n, o);
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  net.RunFor(10s);

  const size_t victim = 3;
  const ReplicaId id = net.self_template(victim).id;
  net.Pause(victim);
  const Time t0 = net.now();
  std::vector<std::optional<Time>> suspected(n), dead(n);
  ASSERT_TRUE(net.RunUntil(
      [&] {
        bool all = true;
        for (size_t i = 0; i < victim; ++i) {
          auto m = net.node(i).Find(id);
          if (m->state == MemberState::kSuspect && !suspected[i]) suspected[i] = net.now();
          if (m->state == MemberState::kDead && !dead[i]) dead[i] = net.now();
          all = all && dead[i].has_value();
        }
        return all;
      },
      20s));

  // Each observer probes the n-1 others round-robin in shuffled rounds, so
  // two probes of one member are at most 2(n-1)-1 periods apart, and the
  // first probe after t0 fails one period after it starts: every observer
  // suspects the member (itself, or earlier by gossip) within 2(n-1)
  // periods, and declares it dead at most suspicion_timeout later.
  const auto suspect_bound = (2 * (n - 1)) * o.period;
  const auto dead_bound = suspect_bound + o.suspicion_timeout;
  Time first_suspicion = Time::max();
  for (size_t i = 0; i < victim; ++i) {
    ASSERT_TRUE(dead[i]);
    EXPECT_LE(*dead[i] - t0, dead_bound + 1ms) << "observer " << i;
    // A suspect is given at least the confirmed timeout after a probe
    // failed, which takes a period.
    EXPECT_GE(*dead[i] - t0, o.period + o.confirmed_suspicion_timeout) << "observer " << i;
    if (suspected[i]) first_suspicion = std::min(first_suspicion, *suspected[i]);
  }
  ASSERT_NE(first_suspicion, Time::max()) << "declared dead without a suspicion";
  EXPECT_LE(first_suspicion - t0, suspect_bound + 1ms);
  // Death is declared, not only learned: some observer's timer ran out.
  EXPECT_GE(net.TotalFailureDetections(), 1u);
  // Every observer fails to reach it: the others confirm the first
  // suspicion, and the member is dead before the full timeout has run
  // from the first suspicion.
  uint64_t confirmations = 0;
  Time first_dead = Time::max();
  for (size_t i = 0; i < victim; ++i) {
    confirmations += net.node(i).stats().confirmations;
    first_dead = std::min(first_dead, *dead[i]);
  }
  EXPECT_GE(confirmations, 1u);
  EXPECT_LT(first_dead - first_suspicion, o.suspicion_timeout);
  std::cout << "suspected after "
            << std::chrono::duration_cast<milliseconds>(first_suspicion - t0).count()
            << " ms, dead everywhere after "
            << std::chrono::duration_cast<milliseconds>(net.now() - t0).count()
            << " ms (bound " << dead_bound.count() << " ms)\n";
}

// In a region of three a prober has one helper, and the helper's own ping
// of the silent member goes unanswered too: its nack is the confirmation,
// so the member is dead the confirmed timeout after the first suspicion,
// not a whole probe round later.
TEST(MembershipTest, InARegionOfThreeTheHelpersNackConfirmsTheSuspicion) {
  const MembershipOptions o = TestOptions(5);
  std::vector<milliseconds> deaths;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    SimNetwork net(100 + seed);
    net.AddGroup(3, TestOptions(100 + seed));
    ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
    // A random phase against the probe rounds.
    net.RunFor(10s + milliseconds(137 * seed % 1000));
    const ReplicaId id = net.self_template(2).id;
    net.Pause(2);
    const Time t0 = net.now();
    std::optional<Time> suspected, dead;
    ASSERT_TRUE(net.RunUntil(
        [&] {
          for (size_t i = 0; i < 2; ++i) {
            const MemberState s = net.node(i).Find(id)->state;
            if (s == MemberState::kSuspect && !suspected) suspected = net.now();
            if (s == MemberState::kDead && !dead) dead = net.now();
          }
          return dead.has_value();
        },
        20s))
        << "seed " << seed;
    ASSERT_TRUE(suspected) << "seed " << seed;
    EXPECT_LE(*dead - *suspected, o.confirmed_suspicion_timeout + 1ms) << "seed " << seed;
    EXPECT_GE(net.node(0).stats().confirmations + net.node(1).stats().confirmations, 1u);
    deaths.push_back(std::chrono::duration_cast<milliseconds>(*dead - t0));
  }
  std::sort(deaths.begin(), deaths.end());
  std::cout << "first declared dead after " << deaths[deaths.size() / 2].count()
            << " ms (median of " << deaths.size() << "), at most " << deaths.back().count()
            << " ms\n";
}

TEST(MembershipTest, AMemberSilentForLessThanTheSuspicionTimeoutRefutes) {
  SimNetwork net(4);
  net.AddGroup(4, TestOptions(4));
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  net.RunFor(5s);
  const size_t victim = 3;
  const ReplicaId id = net.self_template(victim).id;
  // Paused right after it pinged its next probe target, so that it misses
  // that ack too.
  net.RunTo(net.node(victim).NextDeadline());
  net.Pause(victim);
  auto suspected_anywhere = [&] {
    for (size_t i = 0; i < victim; ++i) {
      if (net.node(i).Find(id)->state == MemberState::kSuspect) return true;
    }
    return false;
  };
  ASSERT_TRUE(net.RunUntil(suspected_anywhere, 10s));
  net.RunFor(500ms);
  net.Resume(victim);
  // The node that was stalled does not blame the others for the acks it
  // missed meanwhile.
  const uint64_t suspicions_before = net.node(victim).stats().suspicions;
  bool ever_dead = false;
  net.RunUntil(
      [&] {
        for (size_t i = 0; i < victim; ++i) {
          ever_dead = ever_dead || net.node(i).Find(id)->state == MemberState::kDead;
        }
        return false;
      },
      10s);
  EXPECT_FALSE(ever_dead);
  EXPECT_EQ(net.TotalFailureDetections(), 0u);
  EXPECT_GE(net.node(victim).stats().refutations, 1u);
  EXPECT_GE(net.node(victim).self().incarnation, 1u);
  EXPECT_EQ(net.node(victim).stats().suspicions, suspicions_before);
  EXPECT_TRUE(net.Converged());
}

// Pauses `victim` until every other node lists it dead; returns the
// incarnation it was declared dead at.
uint64_t KillUntilDead(SimNetwork& net, size_t victim) {
  net.Pause(victim);
  const ReplicaId id = net.self_template(victim).id;
  EXPECT_TRUE(net.RunUntil([&] { return net.AllSee({victim}, MemberState::kDead); }, 20s, 10ms));
  return net.node(0).Find(id)->incarnation;
}

TEST(MembershipTest, ADeadMemberThatComesBackIsAliveAgain) {
  SimNetwork net(5);
  net.AddGroup(4, TestOptions(5));
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  const size_t victim = 2;
  const uint64_t dead_at = KillUntilDead(net, victim);
  net.RunFor(20s);
  net.Resume(victim);  // a paused process, still at its old incarnation
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  EXPECT_GT(net.node(0).Find(net.self_template(victim).id)->incarnation, dead_at);
}

TEST(MembershipTest, RemoveTakesOnlyDeadMembersAndSpreadsThemAsLeft) {
  SimNetwork net(11);
  net.AddGroup(4, TestOptions(11));
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  const ReplicaId alive = net.self_template(1).id;
  EXPECT_EQ(net.node(0).Remove(alive, net.now()).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(net.node(0).Remove(net.self_template(0).id, net.now()).code(),
            Status::Code::kFailedPrecondition);
  EXPECT_EQ(net.node(0).Remove(0xdead, net.now()).code(), Status::Code::kNotFound);
  EXPECT_EQ(net.node(0).Find(alive)->state, MemberState::kAlive);

  const size_t victim = 2;
  const ReplicaId id = net.self_template(victim).id;
  const uint64_t dead_at = KillUntilDead(net, victim);
  ASSERT_TRUE(net.node(0).CanRemove(id).ok());
  ASSERT_TRUE(net.node(0).Remove(id, net.now()).ok());
  EXPECT_TRUE(net.node(0).Remove(id, net.now()).ok());  // idempotent
  ASSERT_TRUE(net.RunUntil([&] { return net.AllSee({victim}, MemberState::kLeft); }, 5s, 10ms));
  EXPECT_EQ(net.node(1).Find(id)->incarnation, dead_at);

  // It was only paused: it refutes and is alive again everywhere.
  net.Resume(victim);
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 10s));
  EXPECT_GT(net.node(0).Find(id)->incarnation, dead_at);
}

TEST(MembershipTest, ARestartedMemberJoiningThroughSeedsRefutesItsDeath) {
  SimNetwork net(6);
  net.AddGroup(4, TestOptions(6));
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  net.RunFor(3s);
  const size_t victim = 3;
  const uint64_t dead_at = KillUntilDead(net, victim);
  net.Restart(victim, {net.self_template(0).gossip_address});
  EXPECT_EQ(net.node(victim).self().incarnation, 0u);
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  EXPECT_GT(net.node(victim).self().incarnation, dead_at);
}

// A probe that began before its target restarted (the ping went to the old
// process) ends unanswered; it says nothing about the new process, which
// refuted the old one's suspicion meanwhile: no node suspects the new
// incarnation.
TEST(MembershipTest, AProbeSpanningItsTargetsRestartRaisesNoSuspicionOfTheNewProcess) {
  const MembershipOptions o = TestOptions(11);
  int fresh_suspicions = 0;
  for (int trial = 0; trial < 40; ++trial) {
    SimNetwork net(100 + trial);
    net.AddGroup(3, o);
    ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
    const size_t victim = 2;
    const ReplicaId id = net.self_template(victim).id;
    net.Pause(victim);
    // Into the suspicion, at a point that moves through a period.
    net.RunFor(o.period + milliseconds(trial * 23));
    uint64_t old_incarnation = 0;
    for (size_t i : {size_t{0}, size_t{1}}) {
      if (auto m = net.node(i).Find(id)) {
        old_incarnation = std::max(old_incarnation, m->incarnation);
      }
    }
    net.Restart(victim, {net.self_template(0).gossip_address});
    bool fresh = false;
    auto back = [&] {
      for (size_t i : {size_t{0}, size_t{1}}) {
        auto m = net.node(i).Find(id);
        fresh |= m && m->state == MemberState::kSuspect && m->incarnation > old_incarnation;
      }
      return false;
    };
    net.RunUntil(back, 3 * o.period);
    fresh_suspicions += fresh ? 1 : 0;
    EXPECT_TRUE(net.Converged()) << "trial " << trial;
  }
  EXPECT_EQ(fresh_suspicions, 0);
}

TEST(MembershipTest, ANodeUnderANewIdAnnouncesItsRetiredIdAsLeftForGood) {
  SimNetwork net(8);
  net.AddGroup(4, TestOptions(8));
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  const size_t old = 3;
  const ReplicaId retired = net.self_template(old).id;
  net.Pause(old);  // stopped; it comes back on the same address under a new id
  Member renewed = net.self_template(old);
  renewed.id = retired + 1000;
  MembershipOptions o = TestOptions(8);
  o.retired = {retired};
  const size_t now_as = net.Add(renewed, o);
  net.node(now_as).Join({net.self_template(0).gossip_address});
  auto settled = [&] {
    for (size_t i : {size_t{0}, size_t{1}, size_t{2}, now_as}) {
      auto gone = net.node(i).Find(retired);
      if (i != now_as && (!gone || gone->state != MemberState::kLeft)) return false;
      if (gone && gone->incarnation != kRetiredIncarnation) return false;
      auto fresh = net.node(i).Find(renewed.id);
      if (!fresh || fresh->state != MemberState::kAlive) return false;
    }
    return true;
  };
  ASSERT_TRUE(net.RunUntil(settled, 5s, 10ms));
  net.RunFor(30s);  // push-pulls and dead probes bring nothing back
  EXPECT_TRUE(settled());
}

TEST(MembershipTest, DeadProbesFindARestartedMemberWithoutSeeds) {
  const MembershipOptions o = TestOptions(7);
  SimNetwork net(7);
  net.AddGroup(4, o);
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  const size_t victim = 1;
  KillUntilDead(net, victim);
  // Long enough that no probe started while it was suspect is still on.
  net.RunFor(10s);
  net.Restart(victim, {});  // knows no one; only the others' dead probes reach it
  const Time back = net.now();
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 2 * o.dead_probe_interval));
  EXPECT_LE(net.now() - back, o.dead_probe_interval + 2 * o.period);
}

TEST(MembershipTest, APartitionedRegionHealsAfterDeclaringBothSidesDead) {
  SimNetwork net(8);
  net.AddGroup(4, TestOptions(8));
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  for (size_t a : {0, 1}) {
    for (size_t b : {2, 3}) net.Cut(a, b);
  }
  ASSERT_TRUE(net.RunUntil(
      [&] {
        return net.node(0).Find(net.self_template(3).id)->state == MemberState::kDead &&
               net.node(3).Find(net.self_template(0).id)->state == MemberState::kDead;
      },
      20s, 10ms));
  net.RunFor(10s);
  net.HealAll();
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 15s, 10ms));
}

TEST(MembershipTest, LeaveSpreadsAsLeftAndTheLeftMemberIsNotProbed) {
  MembershipOptions o = TestOptions(9);
  o.left_forget = std::chrono::minutes(1);
  SimNetwork net(9);
  net.AddGroup(4, o);
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  net.RunFor(5s);
  const size_t leaver = 3;
  const Member before = net.node(leaver).self();
  const uint64_t version = net.node(0).version();
  net.node(leaver).Leave(net.now());
  EXPECT_EQ(net.node(leaver).self().state, MemberState::kLeft);
  EXPECT_FALSE(net.node(leaver).LeaveAcknowledged());
  // Sent directly to everyone, so it is known within a round trip.
  net.RunFor(10ms);
  EXPECT_TRUE(net.node(leaver).LeaveAcknowledged());
  for (size_t i = 0; i < leaver; ++i) {
    auto m = net.node(i).Find(before.id);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->state, MemberState::kLeft);
    EXPECT_EQ(m->incarnation, before.incarnation + 1);
  }
  EXPECT_GT(net.node(0).version(), version);

  size_t to_leaver = 0, from_leaver = 0;
  net.observer = [&](size_t from, const std::string& to, size_t) {
    if (from == leaver) ++from_leaver;
    if (to == before.gossip_address) ++to_leaver;
  };
  net.RunFor(30s);
  EXPECT_EQ(to_leaver, 0u);
  EXPECT_EQ(from_leaver, 0u);
  EXPECT_EQ(net.TotalFailureDetections(), 0u);
  // After left_forget, when set, the entry goes.
  net.observer = nullptr;
  net.RunFor(o.left_forget);
  for (size_t i = 0; i < leaver; ++i) {
    EXPECT_FALSE(net.node(i).Find(before.id)) << "node " << i;
    EXPECT_EQ(net.node(i).Members().size(), 3u);
  }
}

TEST(MembershipTest, DeadMembersStayListedByDefault) {
  const MembershipOptions o = TestOptions(10);
  SimNetwork net(10);
  net.AddGroup(3, o);
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  KillUntilDead(net, 2);
  net.RunFor(std::chrono::minutes(10));
  for (size_t i = 0; i < 2; ++i) {
    auto m = net.node(i).Find(net.self_template(2).id);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->state, MemberState::kDead);
    EXPECT_EQ(net.node(i).Members().size(), 3u);
  }
}

TEST(MembershipTest, MembersOfOtherRegionsAreIgnored) {
  SimNetwork net(11);
  MembershipOptions o = TestOptions(11);
  net.Add(SampleMember(0, "eu"), o);
  o.seed = 12;
  net.Add(SampleMember(1, "us"), o);
  net.node(1).Join({SampleMember(0).gossip_address});
  net.RunFor(10s);
  EXPECT_EQ(net.node(0).Members().size(), 1u);
  EXPECT_EQ(net.node(1).Members().size(), 1u);
}

// Frames arbitrary message bytes with a correct checksum.
std::string Reframe(const std::string& body) {
  std::string out(1, static_cast<char>(kFormatVersion));
  out += body;
  uint32_t crc = crc32c::Value(out);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(crc >> (8 * i)));
  return out;
}

TEST(MembershipTest, GarbagePacketsAreCountedAndIgnored) {
  const Member self = SampleMember(0);
  const Member other = SampleMember(1);
  Membership node(TestOptions(12), self);
  Time now = Time(std::chrono::hours(1));
  node.Tick(now);
  node.TakeOutgoing();

  // A real ping, to mangle.
  Membership peer(TestOptions(13), other);
  peer.Join({self.gossip_address});
  peer.Tick(now);
  std::vector<Membership::Outgoing> real = peer.TakeOutgoing();
  ASSERT_EQ(real.size(), 1u);
  const std::string good = real[0].bytes;

  std::vector<std::string> bad = {
      "",
      "hello",
      std::string(1000, '\xff'),
      good.substr(0, good.size() / 2),
      good + "x",
      ForgedPacket(0x12345678, gossip::GOSSIP_VERSION, other),
      ForgedPacket(gossip::GOSSIP_MAGIC, gossip::GOSSIP_VERSION + 1, other),
      ForgedPacket(gossip::GOSSIP_MAGIC, gossip::GOSSIP_VERSION, self),  // "from" itself
  };
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x10;
  bad.push_back(flipped);
  for (size_t i = 0; i < bad.size(); ++i) {
    node.Receive(other.gossip_address, bad[i], now);
    EXPECT_EQ(node.stats().messages_dropped, i + 1) << "packet " << i;
  }
  EXPECT_EQ(node.stats().messages_received, bad.size());
  EXPECT_EQ(node.Members().size(), 1u);
  EXPECT_TRUE(node.TakeOutgoing().empty());

  // Mangled messages with valid checksums reach Cap'n Proto's decoder:
  // whatever it makes of them, nothing crashes.
  std::mt19937_64 rng(14);
  const std::string body = good.substr(1, good.size() - 5);
  for (int i = 0; i < 5000; ++i) {
    std::string m = body;
    int flips = std::uniform_int_distribution<int>(1, 8)(rng);
    for (int f = 0; f < flips; ++f) {
      size_t at = std::uniform_int_distribution<size_t>(0, m.size() - 1)(rng);
      m[at] = static_cast<char>(rng());
    }
    if (i % 10 == 0) m.resize(std::uniform_int_distribution<size_t>(0, m.size())(rng));
    node.Receive(other.gossip_address, Reframe(m), now);
    node.Tick(now);
    node.TakeOutgoing();
  }
  EXPECT_EQ(node.stats().messages_received, bad.size() + 5000);
  EXPECT_GT(node.stats().messages_dropped, bad.size());

  // And the real packet still works.
  Membership fresh(TestOptions(15), self);
  fresh.Receive(other.gossip_address, good, now);
  EXPECT_EQ(fresh.stats().messages_dropped, 0u);
  EXPECT_TRUE(fresh.Find(other.id));
}

struct LossCase {
  int nodes;
  double loss;
};

void PrintTo(const LossCase& c, std::ostream* os) {
  *os << c.nodes << " nodes at " << c.loss * 100 << "% loss";
}

class LossTest : public ::testing::TestWithParam<LossCase> {};

TEST_P(LossTest, NoMemberIsDeclaredDeadInTenMinutes) {
  const LossCase c = GetParam();
  SimNetwork net(20 + static_cast<uint64_t>(c.nodes));
  net.AddGroup(c.nodes, TestOptions(20 + static_cast<uint64_t>(c.nodes)));
  ASSERT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
  net.SetLoss(c.loss);
  bool ever_dead = false;
  net.RunUntil(
      [&] {
        for (size_t i = 0; i < net.size(); ++i) {
          for (const Member& m : net.node(i).Members()) {
            ever_dead = ever_dead || m.state == MemberState::kDead;
          }
        }
        return false;
      },
      std::chrono::minutes(10), 100ms);
  uint64_t suspicions = 0, refutations = 0;
  for (size_t i = 0; i < net.size(); ++i) {
    suspicions += net.node(i).stats().suspicions;
    refutations += net.node(i).stats().refutations;
  }
  std::cout << c.nodes << " nodes at " << c.loss * 100 << "% loss for 10 min: " << net.lost()
            << " of " << net.sent() << " datagrams lost, " << suspicions << " suspicions, "
            << refutations << " refutations, " << net.TotalFailureDetections()
            << " declared dead\n";
  EXPECT_GT(net.lost(), net.sent() * c.loss / 2);
  EXPECT_EQ(net.TotalFailureDetections(), 0u);
  EXPECT_FALSE(ever_dead);
  net.SetLoss(0);
  EXPECT_TRUE(net.RunUntil([&] { return net.Converged(); }, 5s));
}

INSTANTIATE_TEST_SUITE_P(Groups, LossTest,
                         ::testing::Values(LossCase{3, 0.05}, LossCase{5, 0.05}, LossCase{3, 0.10}, LossCase{5, 0.10}),
                         [](const auto& info) {
                           return std::to_string(info.param.nodes) + "NodesAt" +
                                  std::to_string(static_cast<int>(info.param.loss * 100)) +
                                  "Percent";
                         });

}  // namespace
}  // namespace geokv
