#include "tools/crash_model.h"

#include <algorithm>

#include "util/coding.h"

namespace geokv {
namespace {

// Small, so that reading a set back crosses several pages.
constexpr size_t kSetPageSize = 3;

std::string Quote(const std::string& s) { return "'" + PrintableBytes(s) + "'"; }

std::string DescribeList(const std::vector<std::string>& v) {
  std::string out = "{";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + Quote(v[i]);
  return out + "}";
}

std::string DescribeLive(const std::vector<CrdtType>& types) {
  std::string out = "[";
  for (size_t i = 0; i < types.size(); ++i) out += (i ? ", " : "") + std::string(TypeName(types[i]));
  return out + "]";
}

}  // namespace

bool ApplyOp(const JournalOp& op, ModelState* m) {
  switch (op.kind) {
    case OpKind::kLwwSet:
      m->lww[op.key] = op.value;
      return true;
    case OpKind::kLwwDelete:
      m->lww[op.key] = std::nullopt;
      return true;
    case OpKind::kMvWrite:
      m->mv[op.key] = op.value;
      return true;
    case OpKind::kSetAdd:
      m->sets[op.key].insert(op.elements.begin(), op.elements.end());
      return true;
    case OpKind::kSetRemove: {
      auto it = m->sets.find(op.key);
      bool hit = false;
      if (it != m->sets.end()) {
        for (const std::string& e : op.elements) hit |= it->second.erase(e) > 0;
      }
      return hit;
    }
    case OpKind::kCounterAdd:
      m->counters[op.key] += op.delta;
      return op.delta != 0;
  }
  return false;
}

std::vector<uint64_t> ApplyGroup(const JournalGroup& g, ModelState* m,
                                 std::vector<LogExpectation>* log) {
  std::vector<uint64_t> seqs;
  for (const JournalOp& op : g.ops) {
    if (ApplyOp(op, m)) {
      log->push_back(LogExpectation{op.key, TypeOfOp(op.kind)});
      seqs.push_back(log->size());
    } else {
      seqs.push_back(0);
    }
  }
  return seqs;
}

Status CompareState(Store* store, const ModelState& m, std::vector<std::string>* diffs) {
  auto check = [diffs](const std::string& key, const char* read, const std::string& expected,
                       const std::string& found) {
    if (expected != found) {
      diffs->push_back("key '" + key + "' (" + read + "): expected " + expected + ", found " +
                       found);
    }
  };
  auto check_live = [&](const std::string& key, CrdtType type, bool live) -> Status {
    GEOKV_ASSIGN_OR_RETURN(std::vector<CrdtType> types, store->LiveTypes(key));
    check(key, "LiveTypes", DescribeLive(live ? std::vector<CrdtType>{type} : std::vector<CrdtType>{}),
          DescribeLive(types));
    return Status::OK();
  };
  auto get = [store](const std::string& key, CrdtType type) -> StatusOr<std::optional<Crdt>> {
    StatusOr<std::optional<Crdt>> got = store->Get(key, type);
    if (!got.ok()) return got.status().WithContext("Get " + key);
    if (*got && TypeOf(**got) != type) {
      return Status::Corruption("Get " + key + " returned a " + std::string(TypeName(TypeOf(**got))));
    }
    return got;
  };

  for (int i = 0; i < kKeysPerType; ++i) {
    const std::string key = PoolKey(kLwwPrefix, i);
    auto it = m.lww.find(key);
    std::string expected = it == m.lww.end() ? "absent" : it->second ? Quote(*it->second) : "deleted";
    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> got, get(key, CrdtType::kLww));
    std::string found = "absent";
    if (got) {
      const auto& value = std::get<LwwRegister>(*got).value();
      found = value ? Quote(*value) : "deleted";
    }
    check(key, "Get", expected, found);
    GEOKV_RETURN_IF_ERROR(check_live(key, CrdtType::kLww, it != m.lww.end() && it->second));
  }

  for (int i = 0; i < kKeysPerType; ++i) {
    const std::string key = PoolKey(kMvPrefix, i);
    auto it = m.mv.find(key);
    std::string expected = it == m.mv.end() ? "absent" : DescribeList({it->second});
    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> got, get(key, CrdtType::kMvRegister));
    std::string found = got ? DescribeList(std::get<MvRegister>(*got).Values()) : "absent";
    check(key, "Get", expected, found);
    GEOKV_RETURN_IF_ERROR(check_live(key, CrdtType::kMvRegister, it != m.mv.end()));
  }

  for (int i = 0; i < kKeysPerType; ++i) {
    const std::string key = PoolKey(kSetPrefix, i);
    auto it = m.sets.find(key);
    std::vector<std::string> model;
    if (it != m.sets.end()) model.assign(it->second.begin(), it->second.end());
    const std::string expected = DescribeList(model);

    std::vector<std::string> paged;
    std::optional<std::string> after;
    for (size_t pages = 0;; ++pages) {
      if (pages > kElements.size() + 1) {
        diffs->push_back("key '" + key + "' (SetMembers): paging does not end");
        break;
      }
      StatusOr<SetPage> page =
          store->SetMembers(key, after ? std::optional<std::string_view>(*after) : std::nullopt,
                            kSetPageSize);
      if (!page.ok()) return page.status().WithContext("SetMembers " + key);
      paged.insert(paged.end(), page->elements.begin(), page->elements.end());
      if (!page->more) break;
      if (page->elements.empty()) {
        diffs->push_back("key '" + key + "' (SetMembers): an empty page says more follow");
        break;
      }
      after = page->elements.back();
    }
    check(key, "SetMembers", expected, DescribeList(paged));

    StatusOr<uint64_t> size = store->SetSize(key);
    if (!size.ok()) return size.status().WithContext("SetSize " + key);
    check(key, "SetSize", std::to_string(model.size()), std::to_string(*size));

    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> got, get(key, CrdtType::kOrSet));
    // A set never added to is bottom; one emptied by removes keeps its context.
    check(key, "Get", it == m.sets.end() ? "absent" : expected,
          got ? DescribeList(std::get<OrSet>(*got).Elements()) : "absent");

    for (const std::string& e : kElements) {
      StatusOr<bool> contains = store->SetContains(key, e);
      if (!contains.ok()) return contains.status().WithContext("SetContains " + key);
      bool want = std::binary_search(model.begin(), model.end(), e);
      if (*contains != want) {
        check(key, "SetContains", Quote(e) + (want ? " present" : " absent"),
              *contains ? "present" : "absent");
      }
    }
    GEOKV_RETURN_IF_ERROR(check_live(key, CrdtType::kOrSet, !model.empty()));
  }

  for (int i = 0; i < kKeysPerType; ++i) {
    const std::string key = PoolKey(kCounterPrefix, i);
    auto it = m.counters.find(key);
    std::string expected = it == m.counters.end() ? "absent" : std::to_string(it->second);
    GEOKV_ASSIGN_OR_RETURN(std::optional<Crdt> got, get(key, CrdtType::kCounter));
    std::string found = got ? std::to_string(std::get<PnCounter>(*got).Value()) : "absent";
    check(key, "Get", expected, found);
    GEOKV_RETURN_IF_ERROR(check_live(key, CrdtType::kCounter, it != m.counters.end()));
  }
  return Status::OK();
}

Status CheckLog(Store* store, ReplicaId node, const std::vector<LogExpectation>& expected,
                uint64_t from, HlcTimestamp* last_ts) {
  if (store->TrimmedThrough() != 0) {
    return Status::Corruption("the log is trimmed through " +
                              std::to_string(store->TrimmedThrough()) + "; nothing trims it");
  }
  uint64_t after = from;
  HlcTimestamp previous = from == 0 ? HlcTimestamp() : *last_ts;
  for (;;) {
    StatusOr<std::vector<LogEntry>> entries = store->ReadLog(after, 4096, size_t{8} << 20);
    if (!entries.ok()) return entries.status().WithContext("ReadLog after " + std::to_string(after));
    if (entries->empty()) break;
    for (const LogEntry& e : *entries) {
      const std::string where = "log entry " + std::to_string(e.seq);
      if (e.seq != after + 1) {
        return Status::Corruption(where + " follows entry " + std::to_string(after) +
                                  ": the log has a gap or is out of order");
      }
      if (e.seq > expected.size()) {
        return Status::Corruption(where + " (key '" + PrintableBytes(e.key) + "', " +
                                  std::string(TypeName(TypeOf(e.delta))) + ") is beyond the " +
                                  std::to_string(expected.size()) +
                                  " writes of the groups found in the store");
      }
      const LogExpectation& want = expected[e.seq - 1];
      if (e.key != want.key || TypeOf(e.delta) != want.type) {
        return Status::Corruption(where + ": expected key '" + want.key + "' (" +
                                  std::string(TypeName(want.type)) + "), found key '" +
                                  PrintableBytes(e.key) + "' (" +
                                  std::string(TypeName(TypeOf(e.delta))) + ")");
      }
      if (e.origin != node) {
        return Status::Corruption(where + ": origin " + std::to_string(e.origin) +
                                  ", expected this node " + std::to_string(node));
      }
      if (!(previous < e.timestamp)) {
        return Status::Corruption(where + ": timestamp " + std::to_string(e.timestamp.wall_ms) +
                                  "." + std::to_string(e.timestamp.logical) +
                                  " is not above the previous entry's " +
                                  std::to_string(previous.wall_ms) + "." +
                                  std::to_string(previous.logical));
      }
      previous = e.timestamp;
      after = e.seq;
    }
  }
  if (after != expected.size()) {
    return Status::Corruption("the log holds " + std::to_string(after) + " entries, expected " +
                              std::to_string(expected.size()));
  }
  *last_ts = previous;
  return Status::OK();
}

}  // namespace geokv
