#include "cluster/membership.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <iterator>
#include <utility>

namespace geokv {

Status ValidateMembership(const MembershipOptions& o, const Member& self) {
  using std::chrono::milliseconds;
  if (o.period <= milliseconds(0)) return Status::InvalidArgument("gossip period must be positive");
  if (o.ping_timeout <= milliseconds(0) || o.ping_timeout >= o.period) {
    return Status::InvalidArgument("gossip ping timeout (" + std::to_string(o.ping_timeout.count()) +
                                   " ms) must be positive and below the period (" +
                                   std::to_string(o.period.count()) + " ms)");
  }
  if (o.suspicion_timeout <= milliseconds(0)) {
    return Status::InvalidArgument("gossip suspicion timeout must be positive");
  }
  if (o.confirmed_suspicion_timeout <= milliseconds(0) ||
      o.confirmed_suspicion_timeout > o.suspicion_timeout) {
    return Status::InvalidArgument(
        "gossip confirmed suspicion timeout (" +
        std::to_string(o.confirmed_suspicion_timeout.count()) +
        " ms) must be positive and at most the suspicion timeout (" +
        std::to_string(o.suspicion_timeout.count()) + " ms)");
  }
  if (o.max_packet_bytes < 512 || o.max_packet_bytes > 65000) {
    return Status::InvalidArgument("gossip max packet bytes must be within [512, 65000], not " +
                                   std::to_string(o.max_packet_bytes));
  }
  if (o.retransmit_multiplier == 0) {
    return Status::InvalidArgument("gossip retransmit multiplier must be at least 1");
  }
  if (o.dead_probe_interval <= milliseconds(0)) {
    return Status::InvalidArgument("gossip dead probe interval must be positive");
  }
  if (o.push_pull_interval < milliseconds(0) || o.dead_forget < milliseconds(0) ||
      o.left_forget < milliseconds(0)) {
    return Status::InvalidArgument("gossip push-pull and forget intervals must not be negative");
  }
  if (self.id == 0) return Status::InvalidArgument("a member's id must not be 0");
  if (self.gossip_address.empty()) return Status::InvalidArgument("a member needs a gossip address");
  if (self.state != MemberState::kAlive) {
    return Status::InvalidArgument("a node starts alive, not " +
                                   std::string(MemberStateName(self.state)));
  }
  return Status::OK();
}

Membership::Membership(MembershipOptions options, Member self)
    : options_(std::move(options)),
      self_(std::move(self)),
      rng_(options_.seed != 0 ? options_.seed : std::random_device{}()) {
  assert(ValidateMembership(options_, self_).ok());
  Queue(self_.id);
}

void Membership::Join(std::vector<std::string> seeds) {
  seeds_.clear();
  for (std::string& s : seeds) {
    if (!s.empty() && s != self_.gossip_address) seeds_.push_back(std::move(s));
  }
  next_join_ = Time::min();
}

void Membership::Tick(Time now) {
  now = std::max(now, last_now_);
  last_now_ = now;
  if (!ticked_) {
    ticked_ = true;
    next_period_ = now;
    next_dead_probe_ = now + options_.dead_probe_interval;
    next_push_pull_ = now + options_.push_pull_interval;
  }
  for (auto it = relays_.begin(); it != relays_.end();) {
    Relay& r = it->second;
    if (r.nack_at && *r.nack_at <= now) {
      r.nack_at.reset();
      Packet nack;
      nack.kind = Kind::kNack;
      nack.seq = r.requester_seq;
      Send(r.requester, r.requester_id, nack);
    }
    it = r.expires <= now ? relays_.erase(it) : std::next(it);
  }
  for (auto it = synced_unknown_.begin(); it != synced_unknown_.end();) {
    it = it->second + options_.period <= now ? synced_unknown_.erase(it) : std::next(it);
  }

  if (probe_.active) {
    if (!probe_.acked && !probe_.indirect_sent && now >= probe_.start + options_.ping_timeout) {
      probe_.indirect_sent = true;
      const Member* target = Lookup(probe_.target);
      if (target != nullptr) {
        std::vector<ReplicaId> helpers = AliveOthers(probe_.target);
        std::shuffle(helpers.begin(), helpers.end(), rng_);
        if (helpers.size() > options_.indirect_checks) helpers.resize(options_.indirect_checks);
        Packet req;
        req.kind = Kind::kPingReq;
        req.seq = probe_.seq;
        req.target_id = target->id;
        req.target_address = target->gossip_address;
        for (ReplicaId h : helpers) Send(Lookup(h)->gossip_address, h, req);
        probe_.helpers = std::move(helpers);
      }
    }
    if (now >= probe_.start + options_.period) EndProbe(now);
  }
  if (!left_) {
    ExpireSuspects(now);
    NoticeSuspects(now);
  }

  if (now >= next_period_) {
    next_period_ += options_.period;
    if (next_period_ <= now) next_period_ = now + options_.period;
    Forget(now);
    if (left_) {
      ResendLeave();
    } else {
      StartProbe(now);
      if (now >= next_dead_probe_) {
        ProbeDead();
        next_dead_probe_ = now + options_.dead_probe_interval;
      }
      if (options_.push_pull_interval.count() > 0 && now >= next_push_pull_) {
        PushPull();
        next_push_pull_ = now + options_.push_pull_interval;
      }
    }
  }

  if (!left_ && !seeds_.empty() && next_join_ && now >= *next_join_ && !HasAliveOther()) {
    SendJoins();
    next_join_ = now + options_.period;
  }
}

Membership::Time Membership::NextDeadline() const {
  if (!ticked_) return Time::min();
  Time t = next_period_;
  for (const auto& [seq, r] : relays_) {
    if (r.nack_at) t = std::min(t, *r.nack_at);
  }
  if (probe_.active) {
    if (!probe_.acked && !probe_.indirect_sent) t = std::min(t, probe_.start + options_.ping_timeout);
    t = std::min(t, probe_.start + options_.period);
  }
  if (!left_) {
    for (const auto& [id, e] : members_) {
      if (e.member.state == MemberState::kSuspect) {
        t = std::min({t, e.suspect_deadline, e.next_notice});
      }
    }
    if (!seeds_.empty() && next_join_ && !HasAliveOther()) t = std::min(t, *next_join_);
  }
  return t;
}

void Membership::Receive(const std::string& from, std::string_view bytes, Time now) {
  now = std::max(now, last_now_);
  last_now_ = now;
  ++stats_.messages_received;
  Packet p;
  if (!Decode(bytes, &p) || p.sender_id == 0 || p.sender_id == self_.id) {
    ++stats_.messages_dropped;
    return;
  }
  for (const auto& [u, suspected_by] : p.updates) Apply(u, suspected_by, now);

  switch (p.kind) {
    case Kind::kPing: {
      // Meant for another node that used to be at this address.
      if (p.target_id != 0 && p.target_id != self_.id) {
        ++stats_.messages_dropped;
        return;
      }
      Packet ack;
      ack.kind = Kind::kAck;
      ack.seq = p.seq;
      Send(from, p.sender_id, ack);
      break;
    }
    case Kind::kAck:
      HandleAck(p.seq);
      break;
    case Kind::kNack:
      HandleNack(p.seq, p.sender_id);
      break;
    case Kind::kPingReq: {
      if (p.target_id == self_.id) {
        Packet ack;
        ack.kind = Kind::kAck;
        ack.seq = p.seq;
        Send(from, p.sender_id, ack);
        break;
      }
      // Relays only to a member this node knows, at the address it knows:
      // a packet must not make it probe an address of the sender's choosing.
      const Member* target = Lookup(p.target_id);
      if (target == nullptr) break;
      uint64_t seq = next_seq_++;
      relays_[seq] = Relay{from, p.sender_id, p.seq, now + options_.ping_timeout, now + options_.period};
      SendPing(*target, seq);
      break;
    }
    case Kind::kJoin: {
      std::vector<const Member*> all;
      all.push_back(&self_);
      for (const auto& [id, e] : members_) all.push_back(&e.member);
      SendList(from, p.sender_id, Kind::kJoinReply, all);
      break;
    }
    case Kind::kJoinReply:
      break;
  }

  // A sender that knows this node and is unknown here (this node restarted,
  // or forgot it): pull its list. Join replies are excluded because their
  // sender may be in a later chunk.
  if (!left_ && p.kind != Kind::kJoin && p.kind != Kind::kJoinReply &&
      Lookup(p.sender_id) == nullptr && synced_unknown_.count(from) == 0) {
    synced_unknown_[from] = now;
    Packet join;
    join.kind = Kind::kJoin;
    Send(from, p.sender_id, join);
  }
}

void Membership::Leave(Time now) {
  if (left_) return;
  last_now_ = std::max(now, last_now_);
  left_ = true;
  ++self_.incarnation;
  self_.state = MemberState::kLeft;
  Queue(self_.id);
  Changed();
  probe_.active = false;
  for (const auto& [id, e] : members_) {
    if (IsUp(e.member.state)) leave_pending_.insert(id);
  }
  ResendLeave();
}

bool Membership::LeaveAcknowledged() const {
  if (!left_) return false;
  for (ReplicaId id : leave_pending_) {
    const Member* m = Lookup(id);
    if (m != nullptr && IsUp(m->state)) return false;
  }
  return true;
}

std::vector<Membership::Outgoing> Membership::TakeOutgoing() {
  std::vector<Outgoing> out;
  out.swap(outgoing_);
  return out;
}

std::vector<Member> Membership::Members() const {
  std::vector<Member> out;
  out.reserve(members_.size() + 1);
  bool self_added = false;
  for (const auto& [id, e] : members_) {
    if (!self_added && self_.id < id) {
      out.push_back(self_);
      self_added = true;
    }
    out.push_back(e.member);
  }
  if (!self_added) out.push_back(self_);
  return out;
}

std::optional<Member> Membership::Find(ReplicaId id) const {
  const Member* m = Lookup(id);
  if (m == nullptr) return std::nullopt;
  return *m;
}

const Member* Membership::Lookup(ReplicaId id) const {
  if (id == self_.id) return &self_;
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : &it->second.member;
}

void Membership::Apply(const Member& u, ReplicaId suspected_by, Time now) {
  if (u.id == 0 || u.gossip_address.empty() || u.region != self_.region) return;
  if (u.id == self_.id) {
    if (left_) return;
    // Only this node speaks for itself: anything at its incarnation or
    // above that is not exactly its entry (a suspicion, a death, a previous
    // life's entry) is answered with a higher incarnation.
    if (u.incarnation > self_.incarnation || (u.incarnation == self_.incarnation && u != self_)) {
      Refute(u.incarnation);
    }
    return;
  }
  auto it = members_.find(u.id);
  const auto& retired = options_.retired;
  if (u.state != MemberState::kLeft && std::find(retired.begin(), retired.end(), u.id) != retired.end()) {
    Member gone = u;
    gone.state = MemberState::kLeft;
    gone.incarnation = kRetiredIncarnation;
    if (it == members_.end() || Supersedes(gone, it->second.member)) Install(gone, now);
    return;
  }
  if (it != members_.end() && !Supersedes(u, it->second.member)) {
    Entry& e = it->second;
    // The same suspicion, perhaps raised by another witness. Only this
    // node's own probe makes it a witness.
    if (u.state == MemberState::kSuspect && e.member.state == MemberState::kSuspect &&
        u.incarnation == e.member.incarnation && suspected_by != 0 && suspected_by != self_.id) {
      AddWitness(e, suspected_by, now);
    }
    return;
  }
  Install(u, now, suspected_by);
}

void Membership::Install(const Member& member, Time now, ReplicaId suspected_by) {
  auto [it, inserted] = members_.try_emplace(member.id);
  Entry& e = it->second;
  e.member = member;
  e.suspected_by = member.state == MemberState::kSuspect ? suspected_by : 0;
  e.witnesses.clear();
  if (e.suspected_by != 0) e.witnesses.insert(e.suspected_by);
  if (member.state == MemberState::kSuspect) {
    e.suspect_deadline = now + options_.suspicion_timeout;
    e.next_notice = now;
  }
  if (!IsUp(member.state)) e.since = now;
  // A new member is probed within this round, not only the next one.
  if (inserted && IsUp(member.state)) {
    std::uniform_int_distribution<size_t> pos(probe_index_, probe_order_.size());
    probe_order_.insert(probe_order_.begin() + static_cast<ptrdiff_t>(pos(rng_)), member.id);
  }
  Queue(member.id);
  Changed();
}

Status Membership::CanRemove(ReplicaId id) const {
  if (id == self_.id) {
    return Status::FailedPrecondition("a node cannot remove itself; make it leave instead");
  }
  auto it = members_.find(id);
  if (it == members_.end()) return Status::NotFound("no member with that id in this region");
  const Member& m = it->second.member;
  if (m.state != MemberState::kDead && m.state != MemberState::kLeft) {
    return Status::FailedPrecondition("member " + m.name + " is " +
                                      std::string(MemberStateName(m.state)) +
                                      ": only a dead member can be removed; a running node "
                                      "leaves instead");
  }
  return Status::OK();
}

Status Membership::Remove(ReplicaId id, Time now) {
  GEOKV_RETURN_IF_ERROR(CanRemove(id));
  Member m = members_.at(id).member;
  if (m.state == MemberState::kLeft) return Status::OK();
  m.state = MemberState::kLeft;
  Install(m, now);
  return Status::OK();
}

void Membership::Refute(uint64_t above) {
  self_.incarnation = above + 1;
  self_.state = MemberState::kAlive;
  ++stats_.refutations;
  Queue(self_.id);
  Changed();
}

void Membership::Queue(ReplicaId id) { broadcasts_[id] = Broadcast{0, ++broadcast_order_}; }

bool Membership::HasAliveOther() const {
  for (const auto& [id, e] : members_) {
    if (IsUp(e.member.state)) return true;
  }
  return false;
}

std::vector<ReplicaId> Membership::AliveOthers(ReplicaId exclude) const {
  std::vector<ReplicaId> out;
  for (const auto& [id, e] : members_) {
    if (id != exclude && e.member.state == MemberState::kAlive) out.push_back(id);
  }
  return out;
}

void Membership::StartProbe(Time now) {
  const Member* target = nullptr;
  for (int attempt = 0; attempt < 2 && target == nullptr; ++attempt) {
    if (probe_index_ >= probe_order_.size()) {
      probe_order_.clear();
      probe_index_ = 0;
      for (const auto& [id, e] : members_) {
        if (IsUp(e.member.state)) probe_order_.push_back(id);
      }
      std::shuffle(probe_order_.begin(), probe_order_.end(), rng_);
    }
    while (target == nullptr && probe_index_ < probe_order_.size()) {
      const Member* m = Lookup(probe_order_[probe_index_++]);
      if (m != nullptr && IsUp(m->state)) target = m;
    }
  }
  if (target == nullptr) return;
  probe_ = Probe{true, target->id, target->incarnation, next_seq_++, now, false, false, {}, {}};
  SendPing(*target, probe_.seq);
}

void Membership::SendPing(const Member& target, uint64_t seq) {
  Packet ping;
  ping.kind = Kind::kPing;
  ping.seq = seq;
  ping.target_id = target.id;
  Send(target.gossip_address, target.id, ping);
}

void Membership::EndProbe(Time now) {
  probe_.active = false;
  if (probe_.acked) return;
  // Noticed more than a period late: this node was stalled (a paused
  // process, an overloaded machine), so the missing ack says nothing about
  // the target.
  if (now >= probe_.start + 2 * options_.period) return;
  auto it = members_.find(probe_.target);
  if (it == members_.end() || it->second.member.incarnation != probe_.incarnation) return;
  Entry& e = it->second;
  if (e.member.state == MemberState::kAlive) {
    Member suspect = e.member;
    suspect.state = MemberState::kSuspect;
    ++stats_.suspicions;
    Install(suspect, now, self_.id);
  } else if (e.member.state == MemberState::kSuspect) {
    // Suspected by another member, and not reachable from here either.
    AddWitness(e, self_.id, now);
  } else {
    return;
  }
  // Every helper whose own ping went unanswered saw the same silence.
  for (ReplicaId helper : probe_.nacked_by) AddWitness(e, helper, now);
}

void Membership::AddWitness(Entry& e, ReplicaId witness, Time now) {
  if (!e.witnesses.insert(witness).second || e.witnesses.size() < 2) return;
  ++stats_.confirmations;
  size_t up = 1;  // this node
  for (const auto& [id, other] : members_) up += IsUp(other.member.state) ? 1 : 0;
  const double expected = static_cast<double>(std::clamp<size_t>(up, 3, 5) - 2);
  const double confirmations = static_cast<double>(e.witnesses.size() - 1);
  const double share = std::min(1.0, std::log(confirmations + 1) / std::log(expected + 1));
  const auto full = options_.suspicion_timeout;
  const auto least = options_.confirmed_suspicion_timeout;
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
      full - (full - least) * share);
  e.suspect_deadline = std::min(e.suspect_deadline, now + timeout);
}

void Membership::ExpireSuspects(Time now) {
  for (auto& [id, e] : members_) {
    if (e.member.state == MemberState::kSuspect && now >= e.suspect_deadline) {
      e.member.state = MemberState::kDead;
      e.since = now;
      ++stats_.failure_detections;
      Queue(id);
      Changed();
    }
  }
}

void Membership::NoticeSuspects(Time now) {
  for (auto& [id, e] : members_) {
    if (e.member.state != MemberState::kSuspect || now < e.next_notice) continue;
    e.next_notice = now + options_.ping_timeout;
    // Send puts the recipient's suspect entry first; the ack brings back
    // its refutation, if it is alive to make one.
    SendPing(e.member, next_seq_++);
  }
}

void Membership::Forget(Time now) {
  for (auto it = members_.begin(); it != members_.end();) {
    const Entry& e = it->second;
    std::chrono::milliseconds keep{0};
    if (e.member.state == MemberState::kDead) keep = options_.dead_forget;
    if (e.member.state == MemberState::kLeft) keep = options_.left_forget;
    if (keep.count() > 0 && now >= e.since + keep) {
      broadcasts_.erase(it->first);
      it = members_.erase(it);
      Changed();
    } else {
      ++it;
    }
  }
}

void Membership::ProbeDead() {
  ReplicaId first = 0, next = 0;
  for (const auto& [id, e] : members_) {
    if (e.member.state != MemberState::kDead) continue;
    if (first == 0) first = id;
    if (id > last_dead_probed_) {
      next = id;
      break;
    }
  }
  if (next == 0) next = first;
  if (next == 0) return;
  last_dead_probed_ = next;
  SendPing(*Lookup(next), next_seq_++);
}

void Membership::PushPull() {
  std::vector<ReplicaId> alive = AliveOthers(0);
  if (alive.empty()) return;
  std::uniform_int_distribution<size_t> pick(0, alive.size() - 1);
  const Member* peer = Lookup(alive[pick(rng_)]);
  Packet join;
  join.kind = Kind::kJoin;
  Send(peer->gossip_address, peer->id, join);
  std::vector<const Member*> all;
  all.push_back(&self_);
  for (const auto& [id, e] : members_) all.push_back(&e.member);
  SendList(peer->gossip_address, peer->id, Kind::kJoinReply, all);
}

void Membership::SendJoins() {
  Packet join;
  join.kind = Kind::kJoin;
  for (const std::string& seed : seeds_) Send(seed, 0, join);
}

void Membership::ResendLeave() {
  for (auto it = leave_pending_.begin(); it != leave_pending_.end();) {
    const Member* m = Lookup(*it);
    if (m == nullptr || !IsUp(m->state)) {
      it = leave_pending_.erase(it);
      continue;
    }
    uint64_t seq = next_seq_++;
    leave_seqs_[seq] = *it;
    SendPing(*m, seq);
    ++it;
  }
}

void Membership::HandleNack(uint64_t seq, ReplicaId from) {
  if (!probe_.active || seq != probe_.seq || probe_.acked) return;
  // Only a member this probe asked speaks for it.
  if (std::find(probe_.helpers.begin(), probe_.helpers.end(), from) == probe_.helpers.end()) return;
  probe_.nacked_by.insert(from);
}

void Membership::HandleAck(uint64_t seq) {
  if (probe_.active && seq == probe_.seq) {
    probe_.acked = true;
    return;
  }
  auto relay = relays_.find(seq);
  if (relay != relays_.end()) {
    Packet ack;
    ack.kind = Kind::kAck;
    ack.seq = relay->second.requester_seq;
    std::string to = relay->second.requester;
    ReplicaId requester = relay->second.requester_id;
    relays_.erase(relay);
    Send(to, requester, ack);
    return;
  }
  auto leave = leave_seqs_.find(seq);
  if (leave != leave_seqs_.end()) {
    leave_pending_.erase(leave->second);
    leave_seqs_.erase(leave);
  }
}

unsigned Membership::RetransmitLimit() const {
  size_t n = members_.size() + 1;
  unsigned log2 = 0;
  while ((size_t{1} << log2) < n + 1) ++log2;
  return options_.retransmit_multiplier * std::max(1u, log2);
}

void Membership::Send(const std::string& to, ReplicaId recipient, const Packet& packet) {
  const size_t budget = options_.max_packet_bytes;
  std::vector<const Member*> updates;
  size_t used = Encode(packet, {}).size() + kListTagBytes;
  auto add = [&](const Member* m) {
    if (std::find(updates.begin(), updates.end(), m) != updates.end()) return false;
    size_t bytes = UpdateBytes(*m);
    if (!updates.empty() && used + bytes > budget) return false;
    updates.push_back(m);
    used += bytes;
    return true;
  };
  // A join introduces this node, and a node that left says so to everyone
  // it still talks to.
  if (packet.kind == Kind::kJoin || left_) add(&self_);
  if (recipient != 0 && recipient != self_.id) {
    const Member* r = Lookup(recipient);
    if (r != nullptr && r->state != MemberState::kAlive) add(r);
  }

  std::vector<std::pair<ReplicaId, Broadcast*>> queue;
  queue.reserve(broadcasts_.size());
  for (auto& [id, b] : broadcasts_) queue.emplace_back(id, &b);
  std::sort(queue.begin(), queue.end(), [](const auto& a, const auto& b) {
    if (a.second->transmits != b.second->transmits) return a.second->transmits < b.second->transmits;
    return a.second->order > b.second->order;
  });
  std::vector<std::pair<const Member*, Broadcast*>> sent;
  for (const auto& [id, b] : queue) {
    if (used >= budget) break;
    const Member* m = Lookup(id);
    if (m != nullptr && add(m)) sent.emplace_back(m, b);
  }

  std::string bytes = Encode(packet, updates);
  // UpdateBytes is exact; this only guards against a layout it missed.
  while (bytes.size() > budget && updates.size() > 1) {
    const Member* dropped = updates.back();
    updates.pop_back();
    sent.erase(std::remove_if(sent.begin(), sent.end(),
                              [dropped](const auto& s) { return s.first == dropped; }),
               sent.end());
    bytes = Encode(packet, updates);
  }
  const unsigned limit = RetransmitLimit();
  for (const auto& [m, b] : sent) ++b->transmits;
  for (auto it = broadcasts_.begin(); it != broadcasts_.end();) {
    it = it->second.transmits >= limit ? broadcasts_.erase(it) : std::next(it);
  }
  outgoing_.push_back(Outgoing{to, std::move(bytes), recipient});
  ++stats_.messages_sent;
}

void Membership::SendList(const std::string& to, ReplicaId recipient, Kind kind,
                          const std::vector<const Member*>& members) {
  Packet packet;
  packet.kind = kind;
  const size_t base = Encode(packet, {}).size() + kListTagBytes;
  std::vector<const Member*> chunk;
  size_t used = base;
  auto flush = [&]() {
    outgoing_.push_back(Outgoing{to, Encode(packet, chunk), recipient});
    ++stats_.messages_sent;
    chunk.clear();
    used = base;
  };
  for (const Member* m : members) {
    size_t bytes = UpdateBytes(*m);
    if (!chunk.empty() && used + bytes > options_.max_packet_bytes) flush();
    chunk.push_back(m);
    used += bytes;
  }
  if (!chunk.empty()) flush();
}

}  // namespace geokv
