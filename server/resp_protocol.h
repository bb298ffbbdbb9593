// The Redis serialization protocol (RESP2 and RESP3) as plain byte work: an
// incremental parser of client commands and the encoders of replies. No
// sockets and no store: the Redis front end (server/resp_server.h) feeds it
// what it reads and writes what it encodes.
//
// Commands arrive as multibulk arrays ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or
// inline lines ("GET k\n", as telnet and nc send). The parser holds at most
// one command's bytes beyond what it was fed and checks every length the
// peer sends against RespLimits before it buffers anything for it: a
// stranger's stream costs at most the limits. Any protocol error is final:
// the stream cannot be resynchronised, so the connection is to be closed
// after the error reply (as Redis does).
//
// Thread safety: a parser is a plain value; use each from one thread.

#ifndef GEOKV_SERVER_RESP_PROTOCOL_H_
#define GEOKV_SERVER_RESP_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace geokv {

struct RespLimits {
  // The largest bulk string (an argument). Default: 8 MiB + 64 KiB, room for
  // the largest value with the default --max-value-bytes.
  size_t max_bulk_bytes = (size_t{8} << 20) + (64 << 10);
  // Arguments of one command. Default: 1024 * 1024, as Redis.
  size_t max_args = size_t{1} << 20;
  // An inline command line, and a multibulk or bulk header line. Default:
  // 64 KiB, as Redis.
  size_t max_inline_bytes = 64 << 10;
  // The bytes of all the arguments of one command. Default: 64 MiB, as the
  // client API's --max-message-bytes.
  size_t max_command_bytes = 64 << 20;
};

class RespParser {
 public:
  enum class State { kCommand, kNeedMore, kError };

  explicit RespParser(RespLimits limits = RespLimits()) : limits_(limits) {}

  // Appends bytes read from the peer.
  void Feed(std::string_view bytes);

  // kCommand: `*args` holds the next complete command (never empty).
  // kNeedMore: no complete command is buffered yet; nothing is returned.
  // kError: the stream is malformed or over a limit; error() says why, as
  // "Protocol error: ..."; every later call returns kError.
  State Next(std::vector<std::string>* args);

  const std::string& error() const { return error_; }
  // Bytes held: fed and not yet returned as commands.
  size_t buffered() const { return buffer_.size() - pos_ + partial_bytes_; }

 private:
  State Fail(std::string why);
  // The number of the header line ("*3", "$5") at pos_, moving past it; or
  // false with *state: kNeedMore (no complete line yet) or kError (a line
  // over max_inline_bytes, or no number).
  bool Header(int64_t* n, const char* too_big, const char* invalid, State* state);
  // An inline command; `*empty` when its line was blank (skipped).
  State Inline(std::vector<std::string>* args, bool* empty);
  void Compact();

  const RespLimits limits_;
  std::string buffer_;
  size_t pos_ = 0;
  // A multibulk command under way: its remaining argument count (-1: none)
  // and the arguments read so far.
  int64_t remaining_ = -1;
  int64_t bulk_ = -1;  // the length of the bulk string awaited, -1: its header
  std::vector<std::string> args_;
  size_t partial_bytes_ = 0;
  std::string error_;
};

// Splits an inline command line as redis-cli and Redis do: words separated
// by spaces, "double quotes" with \n \r \t \b \a \\ \" \xHH escapes, 'single
// quotes' with \'. False on unbalanced quotes.
bool SplitInline(std::string_view line, std::vector<std::string>* words);

// Whether `s` matches the glob `pattern` as Redis's MATCH does: * ? [abc]
// [^a] [a-z] and \ escapes. O(pattern * s) at worst; never recursive.
bool GlobMatch(std::string_view pattern, std::string_view s);

// Reply encoders: each appends one value to `out`. `resp3` selects RESP3
// types where RESP2 has none (a map is a flat array there, a null a null
// bulk string, a double a bulk string, a boolean an integer).
void AppendSimple(std::string& out, std::string_view s);
// `message` starts with its prefix ("ERR ...", "WRONGTYPE ..."); line
// breaks in it become spaces.
void AppendError(std::string& out, std::string_view message);
void AppendInteger(std::string& out, int64_t n);
void AppendBulk(std::string& out, std::string_view s);
void AppendNull(std::string& out, bool resp3);
void AppendArray(std::string& out, size_t n);
void AppendMap(std::string& out, size_t n, bool resp3);  // n pairs follow
void AppendSet(std::string& out, size_t n, bool resp3);
void AppendBool(std::string& out, bool b, bool resp3);
void AppendVerbatim(std::string& out, std::string_view text, bool resp3);

}  // namespace geokv

#endif  // GEOKV_SERVER_RESP_PROTOCOL_H_
