// WanProxy: a TCP proxy that makes a loopback link behave like a WAN link
// between regions. This machine's kernel has no netem, so geo-replication
// tests and the demo put one of these between every pair of regions.
//
// Every accepted connection gets its own connection to the target. Each
// chunk of bytes read from one side is held for the one-way delay plus a
// uniform random jitter, then written to the other side; a chunk is never
// released before the one read ahead of it, so bytes are never reordered.
// A bandwidth cap paces each direction of each connection: a chunk of n
// bytes occupies the emulated wire for n / bandwidth seconds before its
// delay starts. EOF on one side becomes shutdown(send) on the other once the
// delayed bytes are delivered; a reset or error on either side resets both.
// A side whose delayed bytes exceed max_queued_bytes is not read until they
// drain, so memory stays bounded whatever the peers do.
//
// A partition resets every proxied connection and refuses new ones (accepts
// and resets them at once) until healed.

#ifndef GEOKV_TOOLS_WAN_PROXY_H_
#define GEOKV_TOOLS_WAN_PROXY_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>

#include "util/status.h"

namespace geokv {

struct WanProxyOptions {
  // HOST:PORT to accept on; port 0 picks a free one (see listen_address()).
  // Default: 127.0.0.1:0.
  std::string listen = "127.0.0.1:0";
  // HOST:PORT every accepted connection is forwarded to, resolved for each
  // connection (a target that is down when the proxy starts is fine).
  // REQUIRES: not empty.
  std::string target;
  // One-way delay added to every chunk in each direction. Default: 0.
  std::chrono::milliseconds delay{0};
  // Extra delay per chunk, uniform in [0, jitter]. Default: 0.
  std::chrono::milliseconds jitter{0};
  // Bytes per second in each direction of each connection; 0 is unlimited.
  // Default: 0.
  uint64_t bandwidth = 0;
  // Seeds the jitter; 0 takes a seed from std::random_device. Default: 0.
  uint64_t seed = 0;
  // Bytes of one direction of one connection held (delayed or being
  // written) beyond which that side is not read. Default: 4 MiB.
  size_t max_queued_bytes = 4 << 20;
};

struct WanProxyStats {
  bool partitioned = false;
  size_t connections = 0;        // open proxied connections
  uint64_t accepted = 0;         // connections accepted and forwarded, ever
  uint64_t refused = 0;          // connections reset at once while partitioned
  uint64_t bytes_to_target = 0;  // delivered from clients to the target
  uint64_t bytes_to_client = 0;  // delivered from the target to clients
  uint64_t queued_bytes = 0;     // read and not yet delivered, all connections
  // The most bytes one direction of one connection has held at once.
  uint64_t peak_queued_bytes = 0;
  std::chrono::milliseconds delay{0};
  std::chrono::milliseconds jitter{0};
  uint64_t bandwidth = 0;
};

// "HOST:PORT" or "[V6HOST]:PORT" split into host and port. InvalidArgument
// if either part is missing or the port is not a number in [0, 65535].
Status ParseHostPort(std::string_view address, std::string* host, std::string* port);

// An endpoint as "1.2.3.4:5" or "[::1]:5".
std::string FormatEndpoint(const boost::asio::ip::tcp::endpoint& endpoint);

// Runs on an io_context owned by the caller, on whichever single thread runs
// it. Partition, Heal, SetDelay, SetBandwidth, Stats and Stop may be called
// from any thread; connections are closed in handlers dispatched to the
// io_context (inline when called on its thread).
//
// Lifetime: the proxy must outlive every run of the io_context that may
// invoke its handlers. After Stop(), it holds no pending operation, so run()
// returns once the caller's own work is done; destroy the proxy after that.
class WanProxy {
 public:
  WanProxy(boost::asio::io_context& io, WanProxyOptions options);
  ~WanProxy();

  WanProxy(const WanProxy&) = delete;
  WanProxy& operator=(const WanProxy&) = delete;

  // Binds the listen address and starts accepting. InvalidArgument for a
  // malformed listen or target address, IOError if binding fails.
  // REQUIRES: called once, before the io_context runs or on its thread.
  Status Start();

  // The address bound by Start(), with the real port.
  std::string listen_address() const { return listen_address_; }

  // Resets every proxied connection and refuses new ones until Heal().
  // Connections accepted after Partition() returns are refused.
  void Partition();
  // Lets new connections through again.
  void Heal();

  // Applies to chunks read from now on; chunks already held keep their
  // release time. REQUIRES: delay and jitter are not negative.
  void SetDelay(std::chrono::milliseconds delay, std::chrono::milliseconds jitter);
  // Bytes per second per direction per connection; 0 is unlimited.
  void SetBandwidth(uint64_t bytes_per_second);

  WanProxyStats Stats() const;

  // Stops accepting and resets every connection. Idempotent.
  void Stop();

 private:
  class Connection;
  friend class Connection;

  struct Shaping {
    std::chrono::milliseconds delay;
    std::chrono::milliseconds jitter;
    uint64_t bandwidth;
  };

  void Accept();
  // Resets the connections accepted before partition epoch `epoch`.
  void ResetConnectionsBefore(uint64_t epoch);
  void ResetAll();

  // For connections, on the io_context's thread.
  Shaping CurrentShaping() const;
  std::chrono::microseconds Jitter(std::chrono::milliseconds max);
  void Forget(uint64_t id);
  void NoteQueued(size_t direction_bytes);

  boost::asio::io_context& io_;
  const WanProxyOptions options_;
  std::string target_host_, target_port_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_retry_;
  std::string listen_address_;
  std::mt19937_64 rng_;

  // Touched only on the io_context's thread.
  std::map<uint64_t, std::shared_ptr<Connection>> connections_;
  uint64_t next_id_ = 1;

  mutable std::mutex shaping_mu_;
  Shaping shaping_;  // guarded by shaping_mu_

  std::atomic<bool> stopped_{false};
  std::atomic<bool> partitioned_{false};
  // Bumped by each Partition(); a connection remembers the epoch it was
  // accepted in, so a partition only resets connections older than itself
  // even if a Heal() and new connections come before its handler runs.
  std::atomic<uint64_t> epoch_{0};
  std::atomic<size_t> connection_count_{0};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> bytes_to_target_{0};
  std::atomic<uint64_t> bytes_to_client_{0};
  std::atomic<uint64_t> queued_bytes_{0};
  std::atomic<uint64_t> peak_queued_bytes_{0};
};

// Executes one line of the control protocol against `proxy` and returns the
// reply, one line without its newline: "ok ..." or "error ...". Commands:
//   partition | heal | delay D [J] | bandwidth B | status
// Thread-safe as WanProxy's methods are.
std::string RunControlCommand(WanProxy& proxy, std::string_view line);

// Serves the control protocol on a TCP listener: each line received is a
// command, answered with one line. Same threading and lifetime rules as
// WanProxy; `proxy` must outlive it.
class WanProxyControl {
 public:
  WanProxyControl(boost::asio::io_context& io, WanProxy& proxy);
  ~WanProxyControl();

  WanProxyControl(const WanProxyControl&) = delete;
  WanProxyControl& operator=(const WanProxyControl&) = delete;

  // Binds `listen` (HOST:PORT, port 0 allowed) and starts serving.
  // REQUIRES: called once, before the io_context runs or on its thread.
  Status Start(const std::string& listen);

  std::string listen_address() const { return listen_address_; }

  // Stops accepting and closes every control connection. Idempotent.
  void Stop();

 private:
  class Session;
  friend class Session;

  void Accept();

  boost::asio::io_context& io_;
  WanProxy& proxy_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer accept_retry_;
  std::string listen_address_;
  std::atomic<bool> stopped_{false};
  std::map<uint64_t, std::shared_ptr<Session>> sessions_;  // io thread only
  uint64_t next_id_ = 1;
};

}  // namespace geokv

#endif  // GEOKV_TOOLS_WAN_PROXY_H_
