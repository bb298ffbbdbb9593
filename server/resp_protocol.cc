#include "server/resp_protocol.h"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace geokv {
namespace {

// A decimal integer of the whole of `s` (an optional '-', then digits), or
// false.
bool ParseLength(std::string_view s, int64_t* out) {
  bool negative = !s.empty() && s[0] == '-';
  if (negative) s.remove_prefix(1);
  if (s.empty() || s.size() > 18) return false;
  int64_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  *out = negative ? -n : n;
  return true;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

void RespParser::Feed(std::string_view bytes) { buffer_.append(bytes.data(), bytes.size()); }

RespParser::State RespParser::Fail(std::string why) {
  error_ = "Protocol error: " + std::move(why);
  buffer_.clear();
  pos_ = 0;
  args_.clear();
  partial_bytes_ = 0;
  return State::kError;
}

void RespParser::Compact() {
  if (pos_ == 0) return;
  buffer_.erase(0, pos_);
  pos_ = 0;
}

bool RespParser::Header(int64_t* n, const char* too_big, const char* invalid, State* state) {
  const size_t end = buffer_.find("\r\n", pos_);
  const size_t length = end == std::string::npos ? buffer_.size() - pos_ : end - pos_;
  if (length > limits_.max_inline_bytes) {
    *state = Fail(too_big);
    return false;
  }
  if (end == std::string::npos) {
    Compact();
    *state = State::kNeedMore;
    return false;
  }
  if (!ParseLength(std::string_view(buffer_).substr(pos_ + 1, end - pos_ - 1), n)) {
    *state = Fail(invalid);
    return false;
  }
  pos_ = end + 2;
  return true;
}

RespParser::State RespParser::Inline(std::vector<std::string>* args, bool* empty) {
  *empty = false;
  const size_t nl = buffer_.find('\n', pos_);
  if (nl == std::string::npos) {
    if (buffer_.size() - pos_ > limits_.max_inline_bytes) return Fail("too big inline request");
    Compact();
    return State::kNeedMore;
  }
  if (nl - pos_ > limits_.max_inline_bytes) return Fail("too big inline request");
  std::string_view line = std::string_view(buffer_).substr(pos_, nl - pos_);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  std::vector<std::string> words;
  if (!SplitInline(line, &words)) return Fail("unbalanced quotes in request");
  pos_ = nl + 1;
  if (words.empty()) {
    *empty = true;
    return State::kNeedMore;
  }
  *args = std::move(words);
  return State::kCommand;
}

RespParser::State RespParser::Next(std::vector<std::string>* args) {
  if (!error_.empty()) return State::kError;
  while (remaining_ < 0) {
    if (pos_ == buffer_.size()) {
      Compact();
      return State::kNeedMore;
    }
    if (buffer_[pos_] != '*') {
      bool empty = false;
      const State state = Inline(args, &empty);
      if (empty) continue;  // a blank line, as Redis skips it
      return state;
    }
    int64_t n = 0;
    State state;
    if (!Header(&n, "too big mbulk count string", "invalid multibulk length", &state)) {
      return state;
    }
    if (n > static_cast<int64_t>(limits_.max_args)) return Fail("invalid multibulk length");
    if (n <= 0) continue;  // an empty command: nothing to run, as Redis
    remaining_ = n;
    args_.clear();
    args_.reserve(static_cast<size_t>(std::min<int64_t>(n, 1024)));
  }
  while (remaining_ > 0) {
    if (bulk_ < 0) {
      if (pos_ == buffer_.size()) {
        Compact();
        return State::kNeedMore;
      }
      if (buffer_[pos_] != '$') {
        return Fail(std::string("expected '$', got '") + buffer_[pos_] + "'");
      }
      int64_t n = 0;
      State state;
      if (!Header(&n, "too big bulk count string", "invalid bulk length", &state)) return state;
      if (n < 0 || static_cast<uint64_t>(n) > limits_.max_bulk_bytes) {
        return Fail("invalid bulk length");
      }
      if (partial_bytes_ + static_cast<size_t>(n) > limits_.max_command_bytes) {
        return Fail("command larger than " + std::to_string(limits_.max_command_bytes) +
                    " bytes");
      }
      bulk_ = n;
    }
    const size_t need = static_cast<size_t>(bulk_) + 2;
    if (buffer_.size() - pos_ < need) {
      Compact();
      return State::kNeedMore;
    }
    if (buffer_[pos_ + bulk_] != '\r' || buffer_[pos_ + bulk_ + 1] != '\n') {
      return Fail("expected CRLF after a bulk string");
    }
    args_.emplace_back(buffer_, pos_, static_cast<size_t>(bulk_));
    partial_bytes_ += static_cast<size_t>(bulk_);
    pos_ += need;
    bulk_ = -1;
    --remaining_;
  }
  *args = std::move(args_);
  args_.clear();
  remaining_ = -1;
  partial_bytes_ = 0;
  return State::kCommand;
}

bool SplitInline(std::string_view line, std::vector<std::string>* words) {
  words->clear();
  size_t i = 0;
  const size_t n = line.size();
  while (true) {
    while (i < n && IsSpace(line[i])) ++i;
    if (i == n) return true;
    std::string word;
    bool in_double = false, in_single = false;
    while (true) {
      if (in_double) {
        if (i == n) return false;
        const char c = line[i];
        if (c == '\\' && i + 3 < n && line[i + 1] == 'x' && HexDigit(line[i + 2]) >= 0 &&
            HexDigit(line[i + 3]) >= 0) {
          word += static_cast<char>(HexDigit(line[i + 2]) * 16 + HexDigit(line[i + 3]));
          i += 3;
        } else if (c == '\\' && i + 1 < n) {
          ++i;
          switch (line[i]) {
            case 'n': word += '\n'; break;
            case 'r': word += '\r'; break;
            case 't': word += '\t'; break;
            case 'b': word += '\b'; break;
            case 'a': word += '\a'; break;
            default: word += line[i]; break;
          }
        } else if (c == '"') {
          // A closing quote must be followed by a space or the end.
          if (i + 1 < n && !IsSpace(line[i + 1])) return false;
          in_double = false;
          ++i;
          break;
        } else {
          word += c;
        }
      } else if (in_single) {
        if (i == n) return false;
        const char c = line[i];
        if (c == '\\' && i + 1 < n && line[i + 1] == '\'') {
          word += '\'';
          ++i;
        } else if (c == '\'') {
          if (i + 1 < n && !IsSpace(line[i + 1])) return false;
          in_single = false;
          ++i;
          break;
        } else {
          word += c;
        }
      } else {
        if (i == n || IsSpace(line[i])) break;
        if (line[i] == '"') {
          in_double = true;
        } else if (line[i] == '\'') {
          in_single = true;
        } else {
          word += line[i];
        }
      }
      ++i;
    }
    words->push_back(std::move(word));
  }
}

namespace {

// Matches one pattern item at p (not '*') against c; sets *len to the
// item's length in the pattern. False when it does not match.
bool MatchOne(std::string_view p, size_t i, char c, size_t* len) {
  if (p[i] == '?') {
    *len = 1;
    return true;
  }
  if (p[i] == '\\' && i + 1 < p.size()) {
    *len = 2;
    return p[i + 1] == c;
  }
  if (p[i] != '[') {
    *len = 1;
    return p[i] == c;
  }
  size_t j = i + 1;
  const bool negate = j < p.size() && p[j] == '^';
  if (negate) ++j;
  bool match = false;
  while (j < p.size() && p[j] != ']') {
    if (p[j] == '\\' && j + 1 < p.size()) {
      match |= p[j + 1] == c;
      j += 2;
    } else if (j + 2 < p.size() && p[j + 1] == '-' && p[j + 2] != ']') {
      char lo = p[j], hi = p[j + 2];
      if (lo > hi) std::swap(lo, hi);
      match |= c >= lo && c <= hi;
      j += 3;
    } else {
      match |= p[j] == c;
      ++j;
    }
  }
  *len = (j < p.size() ? j + 1 : j) - i;  // an unclosed class ends the pattern
  return negate ? !match : match;
}

}  // namespace

bool GlobMatch(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0;
  size_t star = std::string_view::npos, star_s = 0;
  while (si < s.size()) {
    size_t len = 0;
    if (pi < p.size() && p[pi] == '*') {
      star = ++pi;
      star_s = si;
    } else if (pi < p.size() && MatchOne(p, pi, s[si], &len)) {
      pi += len;
      ++si;
    } else if (star != std::string_view::npos) {
      pi = star;
      si = ++star_s;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

void AppendSimple(std::string& out, std::string_view s) {
  out += '+';
  out.append(s.data(), s.size());
  out += "\r\n";
}

void AppendError(std::string& out, std::string_view message) {
  out += '-';
  for (char c : message) out += (c == '\r' || c == '\n') ? ' ' : c;
  out += "\r\n";
}

void AppendInteger(std::string& out, int64_t n) {
  out += ':';
  out += std::to_string(n);
  out += "\r\n";
}

void AppendBulk(std::string& out, std::string_view s) {
  out += '$';
  out += std::to_string(s.size());
  out += "\r\n";
  out.append(s.data(), s.size());
  out += "\r\n";
}

void AppendNull(std::string& out, bool resp3) { out += resp3 ? "_\r\n" : "$-1\r\n"; }

void AppendArray(std::string& out, size_t n) {
  out += '*';
  out += std::to_string(n);
  out += "\r\n";
}

void AppendMap(std::string& out, size_t n, bool resp3) {
  if (!resp3) return AppendArray(out, 2 * n);
  out += '%';
  out += std::to_string(n);
  out += "\r\n";
}

void AppendSet(std::string& out, size_t n, bool resp3) {
  if (!resp3) return AppendArray(out, n);
  out += '~';
  out += std::to_string(n);
  out += "\r\n";
}

void AppendBool(std::string& out, bool b, bool resp3) {
  if (!resp3) return AppendInteger(out, b ? 1 : 0);
  out += b ? "#t\r\n" : "#f\r\n";
}

void AppendVerbatim(std::string& out, std::string_view text, bool resp3) {
  if (!resp3) return AppendBulk(out, text);
  out += '=';
  out += std::to_string(text.size() + 4);
  out += "\r\ntxt:";
  out.append(text.data(), text.size());
  out += "\r\n";
}

}  // namespace geokv
