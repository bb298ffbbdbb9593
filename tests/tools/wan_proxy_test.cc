// geokv-wan-proxy between real sockets on loopback, in-process and as the
// real binary: bytes arrive intact and in order (with jitter larger than the
// delay too) and half-closes pass through after them; the delay and the
// bandwidth cap show in the timings; a side that is not read holds the
// proxy to its queue limit; partitions cut open connections and refuse new
// ones until healed; the control protocol, SIGTERM and usage errors of the
// binary.

#include "tools/wan_proxy.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <mutex>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "testing/process.h"
#include "testing/test_dir.h"

namespace geokv {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using testing::ChildProcess;
using testing::CommandResult;
using testing::PollUntil;
using testing::RunCommand;
using testing::TestDir;

// A chunk the proxy reads at once; a direction may exceed its queue limit
// by at most one.
constexpr size_t kProxyReadChunk = 64 << 10;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// A socket descriptor closed on destruction.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_;
};

// A listening socket on 127.0.0.1 with a free port; `rcvbuf` > 0 shrinks
// the receive buffer of the connections it accepts.
Fd Listen(int* port, int rcvbuf = 0) {
  Fd fd(socket(AF_INET, SOCK_STREAM, 0));
  if (rcvbuf > 0) setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd.get(), 64) != 0) {
    return Fd();
  }
  socklen_t len = sizeof(addr);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

Fd ConnectTo(int port, int sndbuf = 0) {
  Fd fd(socket(AF_INET, SOCK_STREAM, 0));
  if (sndbuf > 0) setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
  int one = 1;
  setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return Fd();
  return fd;
}

bool WaitReadable(int fd, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left < 0) return false;
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left) + 1);
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return true;  // let the read report it
  }
}

Fd AcceptWithin(int listen_fd, milliseconds timeout) {
  if (!WaitReadable(listen_fd, Clock::now() + timeout)) return Fd();
  return Fd(accept(listen_fd, nullptr, nullptr));
}

bool WriteAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadExactly(int fd, size_t n, std::string* out, Clock::time_point deadline) {
  char buf[64 << 10];
  while (n > 0) {
    if (!WaitReadable(fd, deadline)) return false;
    ssize_t r = recv(fd, buf, std::min(n, sizeof(buf)), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    out->append(buf, static_cast<size_t>(r));
    n -= static_cast<size_t>(r);
  }
  return true;
}

enum class End { kEof, kReset, kTimeout };

// Reads until the peer closes; what was read is appended to *out.
End ReadToEnd(int fd, std::string* out, Clock::time_point deadline) {
  char buf[64 << 10];
  for (;;) {
    if (!WaitReadable(fd, deadline)) return End::kTimeout;
    ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return End::kEof;
    if (r < 0) return End::kReset;
    out->append(buf, static_cast<size_t>(r));
  }
}

// Sends a small message and waits for its echo; the time it took, or a
// negative duration if it did not come back within 5 s.
Clock::duration RoundTrip(int fd) {
  const std::string message = "ping1234";
  auto start = Clock::now();
  std::string reply;
  if (!WriteAll(fd, message.data(), message.size()) ||
      !ReadExactly(fd, message.size(), &reply, start + std::chrono::seconds(5)) ||
      reply != message) {
    return Clock::duration(-1);
  }
  return Clock::now() - start;
}

// Echoes every connection on its own thread; at EOF it shuts down its
// sending side after echoing everything.
class EchoServer {
 public:
  EchoServer() {
    listen_fd_ = Listen(&port_);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~EchoServer() {
    shutdown(listen_fd_.get(), SHUT_RDWR);  // wakes accept()
    acceptor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (const Fd& fd : fds_) shutdown(fd.get(), SHUT_RDWR);
    for (std::thread& t : threads_) t.join();
  }

  int port() const { return port_; }
  int open_connections() const { return open_; }

 private:
  void AcceptLoop() {
    for (;;) {
      int fd = accept(listen_fd_.get(), nullptr, nullptr);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      fds_.emplace_back(fd);
      ++open_;
      threads_.emplace_back([this, fd] {
        Echo(fd);
        --open_;
      });
    }
  }

  static void Echo(int fd) {
    std::vector<char> buf(64 << 10);
    for (;;) {
      ssize_t r = recv(fd, buf.data(), buf.size(), 0);
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) shutdown(fd, SHUT_WR);
      if (r <= 0 || !WriteAll(fd, buf.data(), static_cast<size_t>(r))) return;
    }
  }

  Fd listen_fd_;
  int port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<Fd> fds_;
  std::vector<std::thread> threads_;
  std::atomic<int> open_{0};
};

// A WanProxy running on its own io_context thread.
class ProxyThread {
 public:
  explicit ProxyThread(WanProxyOptions options) : proxy_(io_, std::move(options)) {}
  ~ProxyThread() {
    proxy_.Stop();
    // run() returns only once the proxy holds no pending operation.
    if (thread_.joinable()) thread_.join();
  }

  Status Start() {
    GEOKV_RETURN_IF_ERROR(proxy_.Start());
    std::string host, port;
    GEOKV_RETURN_IF_ERROR(ParseHostPort(proxy_.listen_address(), &host, &port));
    port_ = std::stoi(port);
    thread_ = std::thread([this] { io_.run(); });
    return Status::OK();
  }

  WanProxy& proxy() { return proxy_; }
  int port() const { return port_; }

 private:
  boost::asio::io_context io_;
  WanProxy proxy_;
  std::thread thread_;
  int port_ = 0;
};

WanProxyOptions ProxyTo(int target_port, int delay_ms = 0, int jitter_ms = 0,
                        uint64_t bandwidth = 0) {
  WanProxyOptions options;
  options.listen = "127.0.0.1:0";
  options.target = "127.0.0.1:" + std::to_string(target_port);
  options.delay = milliseconds(delay_ms);
  options.jitter = milliseconds(jitter_ms);
  options.bandwidth = bandwidth;
  options.seed = 42;
  return options;
}

#define START_PROXY(p)                      \
  do {                                      \
    Status _s = (p).Start();                \
    ASSERT_TRUE(_s.ok()) << _s.ToString();  \
  } while (0)

// Sends `bytes` random bytes through the proxy to the echo server in pieces
// of random sizes, half-closes, and reads the echo until EOF.
void CheckEchoIntact(int delay_ms, int jitter_ms, size_t bytes) {
  EchoServer echo;
  ProxyThread proxy(ProxyTo(echo.port(), delay_ms, jitter_ms));
  START_PROXY(proxy);
  const std::string payload = RandomBytes(bytes, 7);
  Fd client = ConnectTo(proxy.port());
  ASSERT_TRUE(client.ok());

  std::atomic<bool> wrote{false};
  std::thread writer([&] {
    std::mt19937 rng(3);
    size_t offset = 0;
    while (offset < payload.size()) {
      size_t n = std::min<size_t>(1 + rng() % 200000, payload.size() - offset);
      if (!WriteAll(client.get(), payload.data() + offset, n)) return;
      offset += n;
    }
    shutdown(client.get(), SHUT_WR);
    wrote = true;
  });
  std::string echoed;
  End end = ReadToEnd(client.get(), &echoed, Clock::now() + std::chrono::seconds(20));
  writer.join();
  EXPECT_TRUE(wrote);
  // The half-close came through only after every byte, and as a FIN.
  EXPECT_EQ(end, End::kEof);
  ASSERT_EQ(echoed.size(), payload.size());
  auto mismatch = std::mismatch(echoed.begin(), echoed.end(), payload.begin());
  EXPECT_TRUE(mismatch.first == echoed.end())
      << "first differing byte at offset " << (mismatch.first - echoed.begin());

  // FIN both ways closes the proxied connection.
  EXPECT_TRUE(PollUntil([&] { return proxy.proxy().Stats().connections == 0; },
                        std::chrono::seconds(5)));
  WanProxyStats stats = proxy.proxy().Stats();
  EXPECT_EQ(stats.bytes_to_target, bytes);
  EXPECT_EQ(stats.bytes_to_client, bytes);
  EXPECT_EQ(stats.queued_bytes, 0u);
  EXPECT_EQ(stats.accepted, 1u);
}

TEST(WanProxy, BytesArriveIntactAndInOrder) { CheckEchoIntact(0, 0, 4 << 20); }

TEST(WanProxy, BytesArriveIntactAndInOrderWithJitterLargerThanDelay) {
  CheckEchoIntact(2, 30, 3 << 20);
}

TEST(WanProxy, DelayAddsTwiceToTheRoundTrip) {
  EchoServer echo;
  ProxyThread proxy(ProxyTo(echo.port()));
  START_PROXY(proxy);
  Fd client = ConnectTo(proxy.port());
  ASSERT_TRUE(client.ok());

  std::vector<double> fast;
  for (int i = 0; i < 5; ++i) {
    Clock::duration rtt = RoundTrip(client.get());
    ASSERT_GE(rtt.count(), 0) << "no echo";
    fast.push_back(Seconds(rtt));
  }
  std::sort(fast.begin(), fast.end());
  EXPECT_LT(fast[2], 0.050) << "median round trip without delay";

  proxy.proxy().SetDelay(milliseconds(100), milliseconds(0));
  for (int i = 0; i < 3; ++i) {
    Clock::duration rtt = RoundTrip(client.get());
    ASSERT_GE(rtt.count(), 0) << "no echo";
    EXPECT_GE(rtt, milliseconds(200));
    EXPECT_LT(rtt, milliseconds(200 + 1500));
  }
}

TEST(WanProxy, BandwidthCapPacesEachDirection) {
  int target_port = 0;
  Fd target_listener = Listen(&target_port);
  ASSERT_TRUE(target_listener.ok());
  ProxyThread proxy(ProxyTo(target_port, 0, 0, 1 << 20));
  START_PROXY(proxy);
  Fd client = ConnectTo(proxy.port());
  ASSERT_TRUE(client.ok());
  Fd target = AcceptWithin(target_listener.get(), std::chrono::seconds(5));
  ASSERT_TRUE(target.ok());

  // Sends 2 MiB each way at once; the time until each receiver has all of it.
  auto transfer = [&](uint32_t seed) -> std::pair<double, double> {
    const std::string up = RandomBytes(2 << 20, seed);
    const std::string down = RandomBytes(2 << 20, seed + 1);
    auto start = Clock::now();
    auto deadline = start + std::chrono::seconds(10);
    double up_seconds = -1;
    std::thread up_writer([&] { WriteAll(client.get(), up.data(), up.size()); });
    std::thread down_writer([&] { WriteAll(target.get(), down.data(), down.size()); });
    std::thread up_reader([&] {
      std::string got;
      if (ReadExactly(target.get(), up.size(), &got, deadline) && got == up) {
        up_seconds = Seconds(Clock::now() - start);
      }
    });
    std::string got;
    double down_seconds = -1;
    if (ReadExactly(client.get(), down.size(), &got, deadline) && got == down) {
      down_seconds = Seconds(Clock::now() - start);
    }
    up_writer.join();
    down_writer.join();
    up_reader.join();
    EXPECT_GE(up_seconds, 0) << "client to target: bytes missing or changed";
    EXPECT_GE(down_seconds, 0) << "target to client: bytes missing or changed";
    return {up_seconds, down_seconds};
  };
  auto [up, down] = transfer(1);
  EXPECT_GE(up, 1.8) << "2 MiB at 1 MiB/s";
  EXPECT_LT(up, 5.0);
  EXPECT_GE(down, 1.8) << "2 MiB at 1 MiB/s";
  EXPECT_LT(down, 5.0);

  proxy.proxy().SetBandwidth(0);
  auto [up_unlimited, down_unlimited] = transfer(3);
  EXPECT_LT(up_unlimited, 1.0);
  EXPECT_LT(down_unlimited, 1.0);
}

TEST(WanProxy, JitterAddsUpToItsBound) {
  EchoServer echo;
  ProxyThread proxy(ProxyTo(echo.port(), /*delay_ms=*/0, /*jitter_ms=*/100));
  START_PROXY(proxy);
  Fd client = ConnectTo(proxy.port());
  ASSERT_TRUE(client.ok());
  Clock::duration longest{0};
  for (int i = 0; i < 6; ++i) {
    Clock::duration rtt = RoundTrip(client.get());
    ASSERT_GE(rtt.count(), 0) << "no echo";
    EXPECT_LT(rtt, milliseconds(200 + 1500));
    longest = std::max(longest, rtt);
  }
  // Two draws from [0, 100] ms sum to under 50 ms one time in 8; six
  // times in a row one time in 262144 (and the seed is fixed).
  EXPECT_GE(longest, milliseconds(50));
}

TEST(WanProxy, UnreadSideStopsTheProxyReadingBeyondItsQueueLimit) {
  constexpr size_t kLimit = 256 << 10;
  constexpr size_t kBytes = 16 << 20;
  int target_port = 0;
  // Small kernel buffers on both ends, so that without the limit nearly
  // all of kBytes would pile up inside the proxy.
  Fd target_listener = Listen(&target_port, /*rcvbuf=*/64 << 10);
  ASSERT_TRUE(target_listener.ok());
  WanProxyOptions options = ProxyTo(target_port);
  options.max_queued_bytes = kLimit;
  ProxyThread proxy(options);
  START_PROXY(proxy);
  Fd client = ConnectTo(proxy.port(), /*sndbuf=*/64 << 10);
  ASSERT_TRUE(client.ok());
  Fd target = AcceptWithin(target_listener.get(), std::chrono::seconds(5));
  ASSERT_TRUE(target.ok());

  const std::string payload = RandomBytes(kBytes, 5);
  std::thread writer([&] { WriteAll(client.get(), payload.data(), payload.size()); });
  // Nobody reads the target yet: the proxy fills its queue up to the limit.
  EXPECT_TRUE(PollUntil([&] { return proxy.proxy().Stats().queued_bytes >= kLimit; },
                        std::chrono::seconds(10)));
  std::string got;
  EXPECT_TRUE(ReadExactly(target.get(), kBytes, &got, Clock::now() + std::chrono::seconds(20)));
  writer.join();
  EXPECT_TRUE(got == payload);
  WanProxyStats stats = proxy.proxy().Stats();
  EXPECT_GE(stats.peak_queued_bytes, kLimit);
  EXPECT_LE(stats.peak_queued_bytes, kLimit + kProxyReadChunk);
}

TEST(WanProxy, PartitionCutsConnectionsAndRefusesNewOnesUntilHealed) {
  EchoServer echo;
  ProxyThread proxy(ProxyTo(echo.port()));
  START_PROXY(proxy);
  Fd before = ConnectTo(proxy.port());
  ASSERT_TRUE(before.ok());
  ASSERT_GE(RoundTrip(before.get()).count(), 0);
  ASSERT_EQ(echo.open_connections(), 1);

  proxy.proxy().Partition();
  std::string ignored;
  EXPECT_NE(ReadToEnd(before.get(), &ignored, Clock::now() + std::chrono::seconds(2)),
            End::kTimeout);
  // The target's side is cut too.
  EXPECT_TRUE(PollUntil([&] { return echo.open_connections() == 0; }, std::chrono::seconds(2)));

  // The kernel completes the handshake; the proxy then resets at once.
  Fd during = ConnectTo(proxy.port());
  if (during.ok()) {
    WriteAll(during.get(), "x", 1);
    std::string got;
    EXPECT_NE(ReadToEnd(during.get(), &got, Clock::now() + std::chrono::seconds(2)),
              End::kTimeout);
    EXPECT_EQ(got, "");
  }
  WanProxyStats stats = proxy.proxy().Stats();
  EXPECT_TRUE(stats.partitioned);
  EXPECT_EQ(stats.connections, 0u);
  EXPECT_EQ(stats.refused, during.ok() ? 1u : 0u);
  EXPECT_EQ(stats.accepted, 1u);

  proxy.proxy().Heal();
  EXPECT_FALSE(proxy.proxy().Stats().partitioned);
  Fd after = ConnectTo(proxy.port());
  ASSERT_TRUE(after.ok());
  EXPECT_GE(RoundTrip(after.get()).count(), 0);
}

TEST(WanProxy, UnreachableTargetClosesTheClient) {
  int dead_port = 0;
  {
    Fd gone = Listen(&dead_port);
    ASSERT_TRUE(gone.ok());
  }
  ProxyThread proxy(ProxyTo(dead_port));
  START_PROXY(proxy);
  Fd client = ConnectTo(proxy.port());
  ASSERT_TRUE(client.ok());
  std::string got;
  EXPECT_NE(ReadToEnd(client.get(), &got, Clock::now() + std::chrono::seconds(5)),
            End::kTimeout);
  EXPECT_TRUE(PollUntil([&] { return proxy.proxy().Stats().connections == 0; },
                        std::chrono::seconds(2)));
}

TEST(WanProxy, ParsesHostPort) {
  std::string host, port;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:80", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, "80");
  ASSERT_TRUE(ParseHostPort("[::1]:0", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, "0");
  ASSERT_TRUE(ParseHostPort("region-b:7400", &host, &port).ok());
  EXPECT_EQ(host, "region-b");
  for (const char* bad : {"", "localhost", ":80", "host:", "host:65536", "host:8x", "::1:80",
                          "[::1]80", "[::1"}) {
    EXPECT_FALSE(ParseHostPort(bad, &host, &port).ok()) << bad;
  }
}

// The real binary.

class WanProxyBinaryTest : public ::testing::Test {
 protected:
  CommandResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), GEOKV_WAN_PROXY_BIN);
    return RunCommand(args, dir_.path(), std::chrono::seconds(10));
  }

  TestDir dir_;
};

// Sends one control line and returns the reply line (without newline), or
// "" if none came within 5 s.
std::string Control(int fd, const std::string& line) {
  std::string with_newline = line + "\n";
  if (!WriteAll(fd, with_newline.data(), with_newline.size())) return "";
  std::string reply;
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (reply.empty() || reply.back() != '\n') {
    if (!ReadExactly(fd, 1, &reply, deadline)) return "";
  }
  reply.pop_back();
  return reply;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

TEST_F(WanProxyBinaryTest, ControlProtocolAndSigterm) {
  EchoServer echo;
  auto started = ChildProcess::Start(
      {GEOKV_WAN_PROXY_BIN, "--listen", "127.0.0.1:0", "--target",
       "127.0.0.1:" + std::to_string(echo.port()), "--control", "127.0.0.1:0", "--delay-ms", "100",
       "--seed", "9", "--log-level", "debug"},
      testing::LogTo(dir_.Sub("proxy.log")));
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ChildProcess& child = **started;
  auto listen_port = child.WaitForLog(std::regex("listening on 127\\.0\\.0\\.1:([0-9]+)"),
                                      std::chrono::seconds(10));
  auto control_port = child.WaitForLog(std::regex("control on 127\\.0\\.0\\.1:([0-9]+)"),
                                       std::chrono::seconds(10));
  ASSERT_TRUE(listen_port && control_port) << child.Log();
  const int port = std::stoi(*listen_port);
  Fd control = ConnectTo(std::stoi(*control_port));
  ASSERT_TRUE(control.ok());

  EXPECT_TRUE(StartsWith(Control(control.get(), "status"), "ok partitioned=0 connections=0 "));

  // --delay-ms holds each direction.
  Fd first = ConnectTo(port);
  ASSERT_TRUE(first.ok());
  Clock::duration rtt = RoundTrip(first.get());
  EXPECT_GE(rtt, milliseconds(200));
  EXPECT_LT(rtt, milliseconds(200 + 1500));
  std::string status;
  EXPECT_TRUE(PollUntil(
      [&] {
        status = Control(control.get(), "status");
        return status.find(" bytes_to_target=8 bytes_to_client=8 ") != std::string::npos;
      },
      std::chrono::seconds(5)))
      << status;
  EXPECT_TRUE(StartsWith(status, "ok partitioned=0 connections=1 accepted=1 refused=0 "))
      << status;
  EXPECT_NE(status.find(" delay_ms=100 jitter_ms=0 bandwidth=0"), std::string::npos) << status;

  EXPECT_EQ(Control(control.get(), "delay 0 0"), "ok delay_ms=0 jitter_ms=0");
  rtt = RoundTrip(first.get());
  EXPECT_GE(rtt.count(), 0);
  EXPECT_LT(rtt, milliseconds(100));
  EXPECT_EQ(Control(control.get(), "bandwidth 1048576"), "ok bandwidth=1048576");
  EXPECT_EQ(Control(control.get(), "bandwidth 0"), "ok bandwidth=0");

  EXPECT_EQ(Control(control.get(), "partition"), "ok partitioned");
  std::string ignored;
  EXPECT_NE(ReadToEnd(first.get(), &ignored, Clock::now() + std::chrono::seconds(2)),
            End::kTimeout);
  Fd during = ConnectTo(port);
  if (during.ok()) {
    std::string got;
    EXPECT_NE(ReadToEnd(during.get(), &got, Clock::now() + std::chrono::seconds(2)),
              End::kTimeout);
  }
  EXPECT_TRUE(StartsWith(Control(control.get(), "status"),
                         "ok partitioned=1 connections=0 accepted=1 refused=" +
                             std::string(during.ok() ? "1" : "0") + " "));

  EXPECT_EQ(Control(control.get(), "heal"), "ok healed");
  Fd after = ConnectTo(port);
  ASSERT_TRUE(after.ok());
  EXPECT_GE(RoundTrip(after.get()).count(), 0);

  for (const char* bad : {"frobnicate", "delay", "delay abc", "delay 1 2 3", "delay -1",
                          "bandwidth", "bandwidth 1MiB", "partition now"}) {
    EXPECT_TRUE(StartsWith(Control(control.get(), bad), "error ")) << bad;
  }
  EXPECT_TRUE(StartsWith(Control(control.get(), std::string(10000, 'x')), "error line longer"));
  // Errors leave the session usable.
  EXPECT_TRUE(StartsWith(Control(control.get(), "status"), "ok partitioned=0 connections=1 "));

  child.Signal(SIGTERM);
  auto status_code = child.Wait(std::chrono::seconds(5));
  ASSERT_TRUE(status_code.has_value()) << "still running after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*status_code) && WEXITSTATUS(*status_code) == 0) << child.Log();
  // Its connections went with it.
  EXPECT_NE(ReadToEnd(after.get(), &ignored, Clock::now() + std::chrono::seconds(2)),
            End::kTimeout);
}

TEST_F(WanProxyBinaryTest, HelpExitsZeroAndUsageErrorsExitTwo) {
  CommandResult help = Run({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--listen", "--target", "--delay-ms", "--jitter-ms", "--bandwidth",
                           "--control", "--seed", "--log-level", "--max-queued-bytes"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }

  const std::vector<std::string> ok = {"--listen", "127.0.0.1:0", "--target", "127.0.0.1:1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = ok;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const std::vector<std::vector<std::string>> usage_errors = {
      {},
      {"--listen", "127.0.0.1:0"},
      {"--target", "127.0.0.1:1"},
      {"--listen", "127.0.0.1", "--target", "127.0.0.1:1"},
      {"--listen", "127.0.0.1:0", "--target", "127.0.0.1:65536"},
      with({"--delay-ms", "-1"}),
      with({"--delay-ms", "abc"}),
      with({"--jitter-ms", "x"}),
      with({"--bandwidth", "lots"}),
      with({"--control", "nowhere"}),
      with({"--log-level", "loud"}),
      with({"--bogus"}),
  };
  for (const auto& args : usage_errors) {
    CommandResult r = Run(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << r.err;
  }

  // A port already taken is a failure to start, not a usage error.
  int taken = 0;
  Fd listener = Listen(&taken);
  ASSERT_TRUE(listener.ok());
  CommandResult busy = Run({"--listen", "127.0.0.1:" + std::to_string(taken), "--target",
                            "127.0.0.1:1"});
  EXPECT_EQ(busy.exit_code, 1) << busy.err;
  EXPECT_NE(busy.err.find("cannot listen"), std::string::npos) << busy.err;
}

}  // namespace
}  // namespace geokv
