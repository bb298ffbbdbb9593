#include "tools/nemesis_history.h"

#include <cinttypes>
#include <cstdio>

namespace geokv::nemesis {

namespace {

std::string Quote(const std::optional<std::string>& v) { return v ? "\"" + *v + "\"" : "absent"; }

std::string ReadPlace(const History& h, const Read& r) {
  return "QUORUM read of " + r.key + " by client " + std::to_string(r.client) + " through " +
         r.node + " at " + std::to_string(h.Ms(r.start)) + "-" + std::to_string(h.Ms(r.end)) +
         " ms, after the write through " + r.written_through;
}

std::string WritePlace(const History& h, const Write& w) {
  return "through " + w.node + " at " + std::to_string(h.Ms(w.start)) + "-" +
         std::to_string(h.Ms(w.end)) + " ms";
}

}  // namespace

const char* OpName(OpType type) {
  switch (type) {
    case OpType::kSetAdd:
      return "set add";
    case OpType::kIncrement:
      return "increment";
    case OpType::kRegisterSet:
      return "register set";
  }
  return "?";
}

void History::AddWrite(const Write& w) {
  std::lock_guard<std::mutex> lock(mu_);
  Counts& c = counts_[static_cast<int>(w.type)];
  ++c.attempted;
  switch (w.result) {
    case WriteResult::kAcked:
      ++c.acked;
      break;
    case WriteResult::kFailed:
      ++c.failed;
      break;
    case WriteResult::kUnknown:
      ++c.unknown;
      break;
  }
  writes_[static_cast<int>(w.type)][w.key].push_back(w);
}

void History::ReadFailed(OpType type) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[static_cast<int>(type)].reads_failed;
}

void History::AddViolation(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  Violation(what);
}

void History::Violation(std::string what) { violations_.push_back(std::move(what)); }

void History::CheckRead(const Read& r) {
  std::lock_guard<std::mutex> lock(mu_);
  Counts& c = counts_[static_cast<int>(r.type)];
  ++c.reads_checked;
  const size_t before = violations_.size();
  switch (r.type) {
    case OpType::kSetAdd:
      CheckSetRead(r);
      break;
    case OpType::kIncrement:
      CheckCounterRead(r);
      break;
    case OpType::kRegisterSet:
      CheckRegisterRead(r);
      break;
  }
  if (violations_.size() != before) ++c.read_misses;
}

void History::CheckSetRead(const Read& r) {
  if (r.present) return;
  for (const Write& w : writes_[static_cast<int>(OpType::kSetAdd)][r.key]) {
    if (w.value == r.element) {
      Violation("read missed a write: " + ReadPlace(*this, r) + " lacks element " + r.element +
                ", added at QUORUM and acknowledged " + WritePlace(*this, w));
      return;
    }
  }
  Violation("read missed a write: " + ReadPlace(*this, r) + " lacks element " + r.element);
}

void History::CheckCounterRead(const Read& r) {
  int64_t acked_before = 0;
  const Write* latest = nullptr;
  for (const Write& w : writes_[static_cast<int>(OpType::kIncrement)][r.key]) {
    if (w.region != r.region || w.result != WriteResult::kAcked || w.end >= r.start) continue;
    acked_before += w.delta;
    if (!latest || w.end > latest->end) latest = &w;
  }
  if (r.count >= acked_before) return;
  Violation("read missed a write: " + ReadPlace(*this, r) + " answered " +
            std::to_string(r.count) + ", but increments of " + std::to_string(acked_before) +
            " in all were acknowledged at QUORUM in its region before it began (the latest " +
            (latest ? WritePlace(*this, *latest) : std::string()) + ")");
}

void History::CheckRegisterRead(const Read& r) {
  const std::vector<Write>& writes = writes_[static_cast<int>(OpType::kRegisterSet)][r.key];
  const Write* last = nullptr;
  for (const Write& w : writes) {
    if (w.result == WriteResult::kAcked && w.end < r.start) last = &w;
  }
  if (!last || r.value == last->value) return;
  for (const Write& w : writes) {
    if (r.value != w.value) continue;
    // A write whose outcome the client never learned may land at any time.
    if (w.result == WriteResult::kUnknown) return;
    if (w.result == WriteResult::kAcked) {
      Violation("read saw an overwritten value: " + ReadPlace(*this, r) + " answered " +
                Quote(r.value) + ", acknowledged " + WritePlace(*this, w) +
                ", not the same client's later " + Quote(last->value) + " acknowledged " +
                WritePlace(*this, *last));
      return;
    }
  }
  Violation("read missed a write: " + ReadPlace(*this, r) + " answered " + Quote(r.value) +
            ", not " + Quote(last->value) + " acknowledged at QUORUM " +
            WritePlace(*this, *last));
}

void History::CheckFinal(const std::vector<NodeState>& nodes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (nodes.empty()) return;
  for (const NodeState& n : nodes) {
    if (n.digest != nodes[0].digest) {
      std::string all;
      for (const NodeState& m : nodes) {
        char hex[20];
        std::snprintf(hex, sizeof(hex), "%016" PRIx64, m.digest);
        all += " " + m.node + "=" + hex;
      }
      Violation("state digests differ at the end:" + all);
      break;
    }
  }

  for (const auto& [key, writes] : writes_[static_cast<int>(OpType::kIncrement)]) {
    int64_t acked = 0, attempted = 0;
    for (const Write& w : writes) {
      if (w.result == WriteResult::kAcked) acked += w.delta;
      if (w.result != WriteResult::kFailed) attempted += w.delta;
    }
    for (const NodeState& n : nodes) {
      auto it = n.counters.find(key);
      const int64_t v = it == n.counters.end() ? 0 : it->second;
      if (v < acked || v > attempted) {
        Violation("counter " + key + " on " + n.node + " is " + std::to_string(v) +
                  ", outside [" + std::to_string(acked) + ", " + std::to_string(attempted) +
                  "] (acknowledged, attempted)");
      }
    }
  }

  for (const auto& [key, writes] : writes_[static_cast<int>(OpType::kSetAdd)]) {
    std::set<std::string> possible;
    for (const Write& w : writes) {
      if (w.result != WriteResult::kFailed) possible.insert(w.value);
    }
    for (const NodeState& n : nodes) {
      auto it = n.sets.find(key);
      static const std::set<std::string> kEmpty;
      const std::set<std::string>& have = it == n.sets.end() ? kEmpty : it->second;
      for (const Write& w : writes) {
        if (w.result == WriteResult::kAcked && !have.count(w.value)) {
          Violation("set " + key + " on " + n.node + " lacks element " + w.value +
                    ", acknowledged " + WritePlace(*this, w));
        }
      }
      for (const std::string& e : have) {
        if (!possible.count(e)) {
          Violation("set " + key + " on " + n.node + " holds element " + e +
                    ", which no client added");
        }
      }
    }
  }

  for (const auto& [key, writes] : writes_[static_cast<int>(OpType::kRegisterSet)]) {
    auto value_on = [&](const NodeState& n) -> std::optional<std::string> {
      auto it = n.registers.find(key);
      return it == n.registers.end() ? std::nullopt : it->second;
    };
    const std::optional<std::string> first = value_on(nodes[0]);
    bool equal = true;
    for (const NodeState& n : nodes) equal = equal && value_on(n) == first;
    if (!equal) {
      std::string all;
      for (const NodeState& n : nodes) all += " " + n.node + "=" + Quote(value_on(n));
      Violation("register " + key + " differs between nodes:" + all);
      continue;
    }
    const Write* last_acked = nullptr;
    const Write* holder = nullptr;
    for (const Write& w : writes) {
      if (w.result == WriteResult::kAcked) last_acked = &w;
      if (w.result != WriteResult::kFailed && first == w.value) holder = &w;
    }
    if (!holder) {
      if (last_acked) {
        Violation("register " + key + " is " + Quote(first) +
                  " everywhere, which is no value written to it");
      }
      continue;
    }
    if (holder->result == WriteResult::kAcked && last_acked != holder) {
      Violation("register " + key + " is " + Quote(first) + " everywhere, acknowledged " +
                WritePlace(*this, *holder) + ", though the same client's later " +
                Quote(last_acked->value) + " was acknowledged " +
                WritePlace(*this, *last_acked));
    }
  }
}

std::vector<std::string> History::Keys(OpType type) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [key, writes] : writes_[static_cast<int>(type)]) out.push_back(key);
  return out;
}

std::vector<std::string> History::violations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return violations_;
}

std::string History::Summary() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (int t = 0; t < kOpTypes; ++t) {
    const Counts& c = counts_[t];
    char line[256];
    std::snprintf(line, sizeof(line),
                  "  %-13s %6" PRIu64 " attempted, %6" PRIu64 " acknowledged, %5" PRIu64
                  " failed, %4" PRIu64 " unknown; reads: %6" PRIu64 " checked, %4" PRIu64
                  " missed, %5" PRIu64 " failed\n",
                  OpName(static_cast<OpType>(t)), c.attempted, c.acked, c.failed, c.unknown,
                  c.reads_checked, c.read_misses, c.reads_failed);
    out += line;
  }
  return out;
}

}  // namespace geokv::nemesis
