// A blocking Redis protocol client for tests: raw bytes in and out, and
// commands with their parsed replies, over plain TCP (tls_resp_client.h
// adds TLS). Not thread-safe.

#ifndef GEOKV_TESTS_RESP_RESP_CLIENT_H_
#define GEOKV_TESTS_RESP_RESP_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace geokv::testing {

// One reply: `type` is its RESP type byte ('+', '-', ':', '$', '*', '~',
// '%', '_', ...); `null` for a null; `text` for strings and errors.
struct RespReply {
  char type = 0;
  bool null = false;
  std::string text;
  int64_t integer = 0;
  std::vector<RespReply> elements;

  bool error() const { return type == '-'; }
  // The elements' texts, as a set.
  std::set<std::string> Texts() const {
    std::set<std::string> out;
    for (const auto& e : elements) out.insert(e.text);
    return out;
  }
};

class RespClient {
 public:
  // Connects to 127.0.0.1:port; reads time out after 5 s.
  explicit RespClient(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    timeval tv{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  virtual ~RespClient() { close(fd_); }
  RespClient(const RespClient&) = delete;
  RespClient& operator=(const RespClient&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  void Send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = SendSome(bytes.data() + done, bytes.size() - done);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }

  // Reads until `bytes` bytes arrived, the peer closed or 5 s passed.
  std::string Read(size_t bytes) {
    std::string out;
    while (out.size() < bytes && Fill()) {
      const size_t n = std::min(bytes - out.size(), buffer_.size());
      out += buffer_.substr(0, n);
      buffer_.erase(0, n);
    }
    return out;
  }
  // Until what was read ends with `suffix` (or the peer closes, or 5 s pass).
  std::string ReadUntil(const std::string& suffix) {
    std::string out;
    while (out.size() < suffix.size() ||
           out.compare(out.size() - suffix.size(), suffix.size(), suffix) != 0) {
      std::string c = Read(1);
      if (c.empty()) break;
      out += c;
    }
    return out;
  }
  // Everything until the peer closes (or 5 s pass).
  std::string ReadToEnd() { return Read(SIZE_MAX); }

  // Sends `args` as a multibulk command and reads its reply; a reply of
  // type 0 when the connection ended first.
  RespReply Call(const std::vector<std::string>& args) {
    std::string out = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    Send(out);
    return ReadReply();
  }

  RespReply ReadReply() {
    RespReply r;
    std::string line = ReadUntil("\r\n");
    if (line.size() < 3) return r;
    line.resize(line.size() - 2);
    r.type = line[0];
    const std::string rest = line.substr(1);
    switch (r.type) {
      case '+':
      case '-': r.text = rest; break;
      case ':': r.integer = std::stoll(rest); break;
      case '_': r.null = true; break;
      case '#': r.integer = rest == "t"; break;
      case '$':
      case '=': {
        const long n = std::stol(rest);
        if (n < 0) {
          r.null = true;
          break;
        }
        r.text = Read(static_cast<size_t>(n) + 2);
        r.text.resize(static_cast<size_t>(n));
        if (r.type == '=') r.text.erase(0, 4);  // the format, "txt:"
        break;
      }
      case '*':
      case '~':
      case '%': {
        const long n = std::stol(rest) * (r.type == '%' ? 2 : 1);
        if (n < 0) {
          r.null = true;
          break;
        }
        for (long i = 0; i < n; ++i) r.elements.push_back(ReadReply());
        break;
      }
      default: break;
    }
    return r;
  }

 protected:
  // Writes some of `data` to the connection: how much, or <= 0 when it
  // failed.
  virtual ssize_t SendSome(const char* data, size_t size) {
    return send(fd_, data, size, MSG_NOSIGNAL);
  }
  // Reads what came, up to `size` bytes: how much, or <= 0 when the peer
  // closed, the read failed or timed out.
  virtual ssize_t ReceiveSome(char* buffer, size_t size) { return recv(fd_, buffer, size, 0); }

  bool connected_ = false;

 private:
  // Reads more into buffer_ when it is empty; false when nothing came.
  bool Fill() {
    if (!buffer_.empty()) return true;
    char buf[65536];
    ssize_t n = ReceiveSome(buf, sizeof(buf));
    if (n <= 0) return false;
    buffer_.assign(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_;
  std::string buffer_;
};

}  // namespace geokv::testing

#endif  // GEOKV_TESTS_RESP_RESP_CLIENT_H_
