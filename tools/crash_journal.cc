#include "tools/crash_journal.h"

#include <cstdlib>
#include <sstream>
#include <string>

#include "util/coding.h"

namespace geokv {

CrdtType TypeOfOp(OpKind kind) {
  switch (kind) {
    case OpKind::kLwwSet:
    case OpKind::kLwwDelete:
      return CrdtType::kLww;
    case OpKind::kMvWrite:
      return CrdtType::kMvRegister;
    case OpKind::kSetAdd:
    case OpKind::kSetRemove:
      return CrdtType::kOrSet;
    case OpKind::kCounterAdd:
      break;
  }
  return CrdtType::kCounter;
}

void EncodeOp(const JournalOp& op, std::string* out) {
  auto elements = [&]() {
    *out += " " + std::to_string(op.elements.size());
    for (const std::string& e : op.elements) *out += " " + e;
  };
  switch (op.kind) {
    case OpKind::kLwwSet:
      *out += " ls " + op.key + " " + op.value;
      break;
    case OpKind::kLwwDelete:
      *out += " ld " + op.key;
      break;
    case OpKind::kMvWrite:
      *out += " mw " + op.key + " " + op.value;
      break;
    case OpKind::kSetAdd:
      *out += " sa " + op.key;
      elements();
      break;
    case OpKind::kSetRemove:
      *out += " sr " + op.key;
      elements();
      break;
    case OpKind::kCounterAdd:
      *out += " ca " + op.key + " " + std::to_string(op.delta);
      break;
  }
}

std::string DescribeOp(const JournalOp& op) {
  std::string out;
  EncodeOp(op, &out);
  return out.substr(1);
}

namespace {

bool ParseUint(const std::string& s, uint64_t* out) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return false;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

// Reads whitespace-separated fields of one record.
class FieldReader {
 public:
  explicit FieldReader(const std::string& line) : in_(line) {}

  bool Word(std::string* out) { return static_cast<bool>(in_ >> *out); }
  bool Uint(uint64_t* out) {
    std::string w;
    return Word(&w) && ParseUint(w, out);
  }
  bool Int(int64_t* out) {
    std::string w;
    if (!Word(&w)) return false;
    bool negative = !w.empty() && w[0] == '-';
    uint64_t magnitude = 0;
    if (!ParseUint(negative ? w.substr(1) : w, &magnitude) || magnitude > (uint64_t{1} << 62)) {
      return false;
    }
    *out = negative ? -static_cast<int64_t>(magnitude) : static_cast<int64_t>(magnitude);
    return true;
  }
  bool AtEnd() {
    std::string w;
    return !(in_ >> w);
  }

 private:
  std::istringstream in_;
};

bool ParseOp(FieldReader* r, JournalOp* op) {
  std::string tag;
  if (!r->Word(&tag) || !r->Word(&op->key)) return false;
  auto elements = [&]() {
    uint64_t n = 0;
    if (!r->Uint(&n) || n == 0 || n > kElements.size()) return false;
    op->elements.resize(n);
    for (std::string& e : op->elements) {
      if (!r->Word(&e)) return false;
    }
    return true;
  };
  if (tag == "ls") {
    op->kind = OpKind::kLwwSet;
    return r->Word(&op->value);
  }
  if (tag == "ld") {
    op->kind = OpKind::kLwwDelete;
    return true;
  }
  if (tag == "mw") {
    op->kind = OpKind::kMvWrite;
    return r->Word(&op->value);
  }
  if (tag == "sa") {
    op->kind = OpKind::kSetAdd;
    return elements();
  }
  if (tag == "sr") {
    op->kind = OpKind::kSetRemove;
    return elements();
  }
  if (tag == "ca") {
    op->kind = OpKind::kCounterAdd;
    return r->Int(&op->delta);
  }
  return false;
}

}  // namespace

Status ParseJournal(const std::string& text, Journal* out) {
  *out = Journal();
  size_t pos = 0;
  int line_no = 0;
  auto bad = [&](const std::string& line, const char* why) {
    return Status::Corruption("journal line " + std::to_string(line_no) + " (" +
                              PrintableBytes(line, 200) + "): " + why);
  };
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) {
      // Cut short by the kill. Only a commit record matters: its first byte
      // was written after Commit() returned, so the group is acknowledged.
      if (text[pos] == 'C') {
        if (out->groups.empty() || out->groups.back().committed) {
          return bad(text.substr(pos), "commit record without an intent");
        }
        out->groups.back().committed = true;
      }
      break;
    }
    std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    FieldReader r(line);
    std::string tag;
    if (!r.Word(&tag)) return bad(line, "empty record");
    if (tag == "S") {
      if (line_no != 1) return bad(line, "start record after the first line");
      if (!r.Uint(&out->node) || !r.Uint(&out->start_seq) || !r.AtEnd()) {
        return bad(line, "malformed start record");
      }
      out->started = true;
    } else if (tag == "I") {
      if (!out->started) return bad(line, "intent before the start record");
      if (!out->groups.empty() && !out->groups.back().committed) {
        return bad(line, "intent while the previous group is uncommitted");
      }
      JournalGroup g;
      uint64_t n = 0;
      if (!r.Uint(&g.id) || !r.Uint(&n) || n == 0 || n > kMaxOpsPerGroup) {
        return bad(line, "malformed intent record");
      }
      g.ops.resize(n);
      for (JournalOp& op : g.ops) {
        if (!ParseOp(&r, &op)) return bad(line, "malformed operation");
      }
      if (!r.AtEnd()) return bad(line, "trailing fields");
      out->groups.push_back(std::move(g));
    } else if (tag == "C") {
      uint64_t id = 0;
      if (!r.Uint(&id)) return bad(line, "malformed commit record");
      if (out->groups.empty() || out->groups.back().committed || out->groups.back().id != id) {
        return bad(line, "commit record of a group without an intent");
      }
      JournalGroup& g = out->groups.back();
      g.seqs.resize(g.ops.size());
      for (uint64_t& s : g.seqs) {
        if (!r.Uint(&s)) return bad(line, "malformed commit record");
      }
      if (!r.AtEnd()) return bad(line, "trailing fields");
      g.committed = true;
      g.seqs_known = true;
    } else {
      return bad(line, "unknown record");
    }
  }
  return Status::OK();
}

}  // namespace geokv
