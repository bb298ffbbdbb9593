#include "tools/wan_proxy.h"

#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <deque>
#include <vector>

namespace geokv {

using boost::asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

// Bytes taken from a socket in one read; a chunk is at most this long.
constexpr size_t kReadChunkBytes = 64 << 10;
// One write gathers released chunks up to about this many bytes.
constexpr size_t kMaxWriteBytes = 1 << 20;
// Longest control line; a longer one is dropped and answered with an error.
constexpr size_t kMaxControlLineBytes = 4096;
// Delay and jitter accepted by the control protocol, in ms (one hour).
constexpr uint64_t kMaxDelayMs = 3600 * 1000;

// Closes `socket` with an RST instead of a FIN.
void ResetSocket(tcp::socket& socket) {
  error_code ignored;
  if (!socket.is_open()) return;
  socket.set_option(boost::asio::socket_base::linger(true, 0), ignored);
  socket.close(ignored);
}

bool ParseUint(std::string_view text, uint64_t* value) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

Status ParseHostPort(std::string_view address, std::string* host, std::string* port) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("'" + std::string(address) + "' is not HOST:PORT (" + why +
                                   ")");
  };
  std::string_view h, p;
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    if (close == std::string_view::npos) return bad("no ']'");
    if (close + 1 >= address.size() || address[close + 1] != ':') return bad("no port");
    h = address.substr(1, close - 1);
    p = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    h = address.substr(0, colon);
    p = address.substr(colon + 1);
    if (h.find(':') != std::string_view::npos) return bad("an IPv6 host needs brackets");
  }
  if (h.empty()) return bad("no host");
  uint64_t number;
  if (p.size() > 5 || !ParseUint(p, &number) || number > 65535) return bad("bad port");
  *host = std::string(h);
  *port = std::string(p);
  return Status::OK();
}

std::string FormatEndpoint(const tcp::endpoint& endpoint) {
  std::string address = endpoint.address().to_string();
  if (endpoint.address().is_v6()) address = "[" + address + "]";
  return address + ":" + std::to_string(endpoint.port());
}

// One proxied connection: the client's socket, the upstream socket to the
// target, and a pipe for each direction. Lives on the io_context's thread;
// every pending handler holds a reference, and the proxy holds one until
// the connection closes.
class WanProxy::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(WanProxy& proxy, uint64_t id, uint64_t epoch, tcp::socket client)
      : proxy_(proxy),
        id_(id),
        epoch_(epoch),
        client_(std::move(client)),
        upstream_(proxy.io_),
        resolver_(proxy.io_),
        to_target_(client_, upstream_, proxy.io_, &proxy.bytes_to_target_),
        to_client_(upstream_, client_, proxy.io_, &proxy.bytes_to_client_) {}

  uint64_t epoch() const { return epoch_; }

  void Start() {
    auto self = shared_from_this();
    resolver_.async_resolve(
        proxy_.target_host_, proxy_.target_port_,
        [self](const error_code& ec, tcp::resolver::results_type results) {
          if (self->closed_) return;
          if (ec) {
            spdlog::warn("connection {}: cannot resolve {}: {}", self->id_,
                         self->proxy_.options_.target, ec.message());
            self->Reset();
            return;
          }
          boost::asio::async_connect(
              self->upstream_, results, [self](const error_code& ec, const tcp::endpoint&) {
                if (self->closed_) return;
                if (ec) {
                  spdlog::warn("connection {}: cannot connect to {}: {}", self->id_,
                               self->proxy_.options_.target, ec.message());
                  self->Reset();
                  return;
                }
                // Nagle would add its own delay on top of the emulated one.
                error_code ignored;
                self->client_.set_option(tcp::no_delay(true), ignored);
                self->upstream_.set_option(tcp::no_delay(true), ignored);
                spdlog::debug("connection {}: connected to {}", self->id_,
                              self->proxy_.options_.target);
                self->Read(self->to_target_);
                self->Read(self->to_client_);
              });
        });
  }

  // Closes both sides with an RST, dropping whatever is queued.
  void Reset() {
    if (closed_) return;
    closed_ = true;
    ResetSocket(client_);
    ResetSocket(upstream_);
    spdlog::debug("connection {}: reset", id_);
    Forget();
  }

 private:
  struct Chunk {
    Clock::time_point release;
    std::string bytes;
  };

  // One direction: bytes read from `from` wait in `queue` until their
  // release time, then are written to `to`.
  struct Pipe {
    Pipe(tcp::socket& from_socket, tcp::socket& to_socket, boost::asio::io_context& io,
         std::atomic<uint64_t>* delivered_counter)
        : from(from_socket),
          to(to_socket),
          timer(io),
          delivered(delivered_counter),
          read_buffer(new char[kReadChunkBytes]) {}

    tcp::socket& from;
    tcp::socket& to;
    boost::asio::steady_timer timer;
    std::atomic<uint64_t>* delivered;
    std::unique_ptr<char[]> read_buffer;
    // Chunks in order of release; the first `writing` of them are being
    // written (the write refers to their bytes, so they stay until it ends).
    std::deque<Chunk> queue;
    size_t queued_bytes = 0;
    size_t writing = 0;
    Clock::time_point last_release{};
    // When the emulated wire finishes sending what was read so far.
    Clock::time_point wire_free{};
    bool reading = false;
    bool timer_armed = false;
    bool eof = false;        // `from` sent FIN
    bool shut_down = false;  // FIN passed on to `to`
  };

  void Read(Pipe& p) {
    if (closed_ || p.reading || p.eof || p.queued_bytes >= proxy_.options_.max_queued_bytes) {
      return;
    }
    p.reading = true;
    p.from.async_read_some(
        boost::asio::buffer(p.read_buffer.get(), kReadChunkBytes),
        [self = shared_from_this(), &p](const error_code& ec, size_t n) {
          p.reading = false;
          if (self->closed_) return;
          if (n > 0) self->Enqueue(p, n);
          if (ec == boost::asio::error::eof) {
            p.eof = true;
            self->Pump(p);
          } else if (ec) {
            spdlog::debug("connection {}: read failed: {}", self->id_, ec.message());
            self->Reset();
          } else {
            self->Read(p);
          }
        });
  }

  void Enqueue(Pipe& p, size_t n) {
    Shaping shaping = proxy_.CurrentShaping();
    Clock::time_point now = Clock::now();
    Clock::time_point sent = now;
    if (shaping.bandwidth > 0) {
      Clock::time_point start = std::max(now, p.wire_free);
      double seconds = static_cast<double>(n) / static_cast<double>(shaping.bandwidth);
      auto on_wire = std::chrono::nanoseconds(static_cast<int64_t>(seconds * 1e9));
      p.wire_free = start + std::chrono::duration_cast<Clock::duration>(on_wire);
      sent = p.wire_free;
    }
    Clock::time_point release = sent + shaping.delay + proxy_.Jitter(shaping.jitter);
    // Never before the chunk ahead: bytes keep their order.
    release = std::max(release, p.last_release);
    p.last_release = release;
    p.queue.push_back(Chunk{release, std::string(p.read_buffer.get(), n)});
    p.queued_bytes += n;
    proxy_.queued_bytes_ += n;
    proxy_.NoteQueued(p.queued_bytes);
    Pump(p);
  }

  // Writes what is due, arms the timer for what is not, passes EOF on once
  // everything before it is delivered.
  void Pump(Pipe& p) {
    if (closed_ || p.writing > 0) return;
    if (p.queue.empty()) {
      if (p.eof && !p.shut_down) ShutDown(p);
      return;
    }
    Clock::time_point now = Clock::now();
    if (p.queue.front().release > now) {
      Arm(p);
      return;
    }
    std::vector<boost::asio::const_buffer> buffers;
    size_t bytes = 0;
    for (const Chunk& chunk : p.queue) {
      if (chunk.release > now || bytes >= kMaxWriteBytes) break;
      buffers.push_back(boost::asio::buffer(chunk.bytes));
      bytes += chunk.bytes.size();
    }
    p.writing = buffers.size();
    boost::asio::async_write(
        p.to, buffers, [self = shared_from_this(), &p, bytes](const error_code& ec, size_t) {
          size_t chunks = p.writing;
          p.writing = 0;
          if (self->closed_) return;
          if (ec) {
            spdlog::debug("connection {}: write failed: {}", self->id_, ec.message());
            self->Reset();
            return;
          }
          p.queue.erase(p.queue.begin(), p.queue.begin() + static_cast<ptrdiff_t>(chunks));
          p.queued_bytes -= bytes;
          self->proxy_.queued_bytes_ -= bytes;
          *p.delivered += bytes;
          self->Read(p);
          self->Pump(p);
        });
  }

  void Arm(Pipe& p) {
    if (p.timer_armed) return;
    p.timer_armed = true;
    p.timer.expires_at(p.queue.front().release);
    p.timer.async_wait([self = shared_from_this(), &p](const error_code&) {
      p.timer_armed = false;
      if (self->closed_) return;
      self->Pump(p);
    });
  }

  void ShutDown(Pipe& p) {
    p.shut_down = true;
    error_code ec;
    p.to.shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      spdlog::debug("connection {}: shutdown failed: {}", id_, ec.message());
      Reset();
      return;
    }
    if (to_target_.shut_down && to_client_.shut_down) {
      closed_ = true;
      error_code ignored;
      client_.close(ignored);
      upstream_.close(ignored);
      spdlog::debug("connection {}: closed", id_);
      Forget();
    }
  }

  // Cancels what is pending and leaves the proxy's books; the handlers
  // still pending see closed_ and return.
  void Forget() {
    resolver_.cancel();
    to_target_.timer.cancel();
    to_client_.timer.cancel();
    proxy_.queued_bytes_ -= to_target_.queued_bytes + to_client_.queued_bytes;
    // Every caller holds a reference of its own, so this object outlives
    // the proxy dropping its one.
    proxy_.Forget(id_);
  }

  WanProxy& proxy_;
  const uint64_t id_;
  const uint64_t epoch_;
  tcp::socket client_;
  tcp::socket upstream_;
  tcp::resolver resolver_;
  Pipe to_target_;
  Pipe to_client_;
  bool closed_ = false;
};

WanProxy::WanProxy(boost::asio::io_context& io, WanProxyOptions options)
    : io_(io),
      options_(std::move(options)),
      acceptor_(io),
      accept_retry_(io),
      shaping_{options_.delay, options_.jitter, options_.bandwidth} {
  uint64_t seed = options_.seed;
  if (seed == 0) {
    std::random_device device;
    seed = (static_cast<uint64_t>(device()) << 32) | device();
  }
  rng_.seed(seed);
}

WanProxy::~WanProxy() = default;

namespace {

// Opens `acceptor` listening on host:port (`address` names it in errors)
// and sets *bound to the address it got.
Status Listen(boost::asio::io_context& io, const std::string& address, const std::string& host,
              const std::string& port, tcp::acceptor* acceptor, std::string* bound) {
  error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(host, port, tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return Status::InvalidArgument("cannot resolve " + address + ": " + ec.message());
  }
  tcp::endpoint endpoint = results.begin()->endpoint();
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    acceptor->close(ignored);
    return Status::IOError("cannot listen on " + address + ": " + ec.message());
  }
  *bound = FormatEndpoint(acceptor->local_endpoint(ec));
  return Status::OK();
}

}  // namespace

Status WanProxy::Start() {
  std::string host, port;
  GEOKV_RETURN_IF_ERROR(ParseHostPort(options_.listen, &host, &port).WithContext("listen"));
  GEOKV_RETURN_IF_ERROR(
      ParseHostPort(options_.target, &target_host_, &target_port_).WithContext("target"));
  GEOKV_RETURN_IF_ERROR(Listen(io_, options_.listen, host, port, &acceptor_, &listen_address_));
  Accept();
  return Status::OK();
}

void WanProxy::Accept() {
  acceptor_.async_accept([this](const error_code& ec, tcp::socket socket) {
    if (stopped_) return;
    if (ec) {
      if (ec == boost::asio::error::operation_aborted) return;
      // Out of descriptors, most likely: wait instead of spinning.
      spdlog::warn("accept on {} failed: {}", listen_address_, ec.message());
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this](const error_code& ec) {
        if (!ec && !stopped_) Accept();
      });
      return;
    }
    // The epoch is read before the flag; see epoch_.
    uint64_t epoch = epoch_.load();
    if (partitioned_.load()) {
      ++refused_;
      ResetSocket(socket);
      spdlog::debug("refused a connection: partitioned");
    } else {
      uint64_t id = next_id_++;
      auto connection = std::make_shared<Connection>(*this, id, epoch, std::move(socket));
      connections_.emplace(id, connection);
      connection_count_ = connections_.size();
      ++accepted_;
      spdlog::debug("connection {}: accepted", id);
      connection->Start();
    }
    Accept();
  });
}

void WanProxy::Partition() {
  partitioned_ = true;
  uint64_t epoch = ++epoch_;
  spdlog::info("partitioned: resetting every connection and refusing new ones");
  boost::asio::dispatch(io_, [this, epoch] { ResetConnectionsBefore(epoch); });
}

void WanProxy::Heal() {
  partitioned_ = false;
  spdlog::info("healed: accepting connections again");
}

void WanProxy::SetDelay(std::chrono::milliseconds delay, std::chrono::milliseconds jitter) {
  std::lock_guard<std::mutex> lock(shaping_mu_);
  shaping_.delay = delay;
  shaping_.jitter = jitter;
  spdlog::info("delay {} ms, jitter {} ms", delay.count(), jitter.count());
}

void WanProxy::SetBandwidth(uint64_t bytes_per_second) {
  std::lock_guard<std::mutex> lock(shaping_mu_);
  shaping_.bandwidth = bytes_per_second;
  spdlog::info("bandwidth {} bytes/s{}", bytes_per_second,
               bytes_per_second == 0 ? " (unlimited)" : "");
}

WanProxyStats WanProxy::Stats() const {
  WanProxyStats stats;
  stats.partitioned = partitioned_;
  stats.connections = connection_count_;
  stats.accepted = accepted_;
  stats.refused = refused_;
  stats.bytes_to_target = bytes_to_target_;
  stats.bytes_to_client = bytes_to_client_;
  stats.queued_bytes = queued_bytes_;
  stats.peak_queued_bytes = peak_queued_bytes_;
  Shaping shaping = CurrentShaping();
  stats.delay = shaping.delay;
  stats.jitter = shaping.jitter;
  stats.bandwidth = shaping.bandwidth;
  return stats;
}

void WanProxy::Stop() {
  if (stopped_.exchange(true)) return;
  boost::asio::dispatch(io_, [this] {
    error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
    ResetConnectionsBefore(UINT64_MAX);
  });
}

void WanProxy::ResetConnectionsBefore(uint64_t epoch) {
  std::vector<std::shared_ptr<Connection>> doomed;
  for (const auto& [id, connection] : connections_) {
    if (connection->epoch() < epoch) doomed.push_back(connection);
  }
  for (const auto& connection : doomed) connection->Reset();
}

WanProxy::Shaping WanProxy::CurrentShaping() const {
  std::lock_guard<std::mutex> lock(shaping_mu_);
  return shaping_;
}

std::chrono::microseconds WanProxy::Jitter(std::chrono::milliseconds max) {
  if (max.count() <= 0) return std::chrono::microseconds(0);
  std::uniform_int_distribution<int64_t> uniform(0, max.count() * 1000);
  return std::chrono::microseconds(uniform(rng_));
}

void WanProxy::Forget(uint64_t id) {
  connections_.erase(id);
  connection_count_ = connections_.size();
}

void WanProxy::NoteQueued(size_t direction_bytes) {
  uint64_t peak = peak_queued_bytes_.load();
  while (direction_bytes > peak &&
         !peak_queued_bytes_.compare_exchange_weak(peak, direction_bytes)) {
  }
}

std::string RunControlCommand(WanProxy& proxy, std::string_view line) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  if (words.empty()) return "error empty command";
  std::string_view command = words[0];
  size_t args = words.size() - 1;

  if (command == "partition" && args == 0) {
    proxy.Partition();
    return "ok partitioned";
  }
  if (command == "heal" && args == 0) {
    proxy.Heal();
    return "ok healed";
  }
  if (command == "delay" && (args == 1 || args == 2)) {
    uint64_t delay = 0, jitter = 0;
    if (!ParseUint(words[1], &delay) || delay > kMaxDelayMs ||
        (args == 2 && (!ParseUint(words[2], &jitter) || jitter > kMaxDelayMs))) {
      return "error delay and jitter are whole milliseconds from 0 to " +
             std::to_string(kMaxDelayMs);
    }
    proxy.SetDelay(std::chrono::milliseconds(delay), std::chrono::milliseconds(jitter));
    return "ok delay_ms=" + std::to_string(delay) + " jitter_ms=" + std::to_string(jitter);
  }
  if (command == "bandwidth" && args == 1) {
    uint64_t bandwidth = 0;
    if (!ParseUint(words[1], &bandwidth)) {
      return "error bandwidth is whole bytes per second (0: unlimited)";
    }
    proxy.SetBandwidth(bandwidth);
    return "ok bandwidth=" + std::to_string(bandwidth);
  }
  if (command == "status" && args == 0) {
    WanProxyStats s = proxy.Stats();
    return "ok partitioned=" + std::to_string(s.partitioned ? 1 : 0) +
           " connections=" + std::to_string(s.connections) +
           " accepted=" + std::to_string(s.accepted) + " refused=" + std::to_string(s.refused) +
           " bytes_to_target=" + std::to_string(s.bytes_to_target) +
           " bytes_to_client=" + std::to_string(s.bytes_to_client) +
           " queued_bytes=" + std::to_string(s.queued_bytes) +
           " delay_ms=" + std::to_string(s.delay.count()) +
           " jitter_ms=" + std::to_string(s.jitter.count()) +
           " bandwidth=" + std::to_string(s.bandwidth);
  }
  static const char* const kUsage =
      "(commands: partition, heal, delay D [J], bandwidth B, status)";
  for (const char* known : {"partition", "heal", "delay", "bandwidth", "status"}) {
    if (command == known) return "error wrong arguments for " + std::string(command) + " " + kUsage;
  }
  return "error unknown command '" + std::string(command) + "' " + kUsage;
}

// One control connection: reads a line, answers it, reads the next.
class WanProxyControl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(WanProxyControl& control, uint64_t id, tcp::socket socket)
      : control_(control), id_(id), socket_(std::move(socket)), input_(kMaxControlLineBytes) {}

  void ReadLine() {
    boost::asio::async_read_until(
        socket_, input_, '\n', [self = shared_from_this()](const error_code& ec, size_t n) {
          if (self->closed_) return;
          if (ec == boost::asio::error::not_found) {
            // Drop the rest of the line too, then refuse it.
            self->input_.consume(self->input_.size());
            self->overlong_ = true;
            self->ReadLine();
            return;
          }
          if (ec && ec != boost::asio::error::eof) {
            self->Close();
            return;
          }
          // At EOF the last line may lack its newline.
          if (ec == boost::asio::error::eof) n = self->input_.size();
          if (n == 0) {
            self->Close();
            return;
          }
          auto data = self->input_.data();
          std::string line(boost::asio::buffers_begin(data), boost::asio::buffers_begin(data) + n);
          self->input_.consume(n);
          while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
          if (self->overlong_) {
            self->overlong_ = false;
            self->Answer("error line longer than " + std::to_string(kMaxControlLineBytes) +
                         " bytes");
            return;
          }
          if (line.find_first_not_of(" \t") == std::string::npos) {
            self->ReadLine();
            return;
          }
          std::string reply = RunControlCommand(self->control_.proxy_, line);
          spdlog::info("control: '{}' -> '{}'", line, reply);
          self->Answer(std::move(reply));
        });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    error_code ignored;
    socket_.close(ignored);
    control_.sessions_.erase(id_);
  }

 private:
  void Answer(std::string reply) {
    reply_ = std::move(reply) + "\n";
    boost::asio::async_write(socket_, boost::asio::buffer(reply_),
                             [self = shared_from_this()](const error_code& ec, size_t) {
                               if (self->closed_) return;
                               if (ec) {
                                 self->Close();
                               } else {
                                 self->ReadLine();
                               }
                             });
  }

  WanProxyControl& control_;
  const uint64_t id_;
  tcp::socket socket_;
  boost::asio::streambuf input_;
  std::string reply_;
  bool overlong_ = false;  // the current line is being dropped
  bool closed_ = false;
};

WanProxyControl::WanProxyControl(boost::asio::io_context& io, WanProxy& proxy)
    : io_(io), proxy_(proxy), acceptor_(io), accept_retry_(io) {}

WanProxyControl::~WanProxyControl() = default;

Status WanProxyControl::Start(const std::string& listen) {
  std::string host, port;
  GEOKV_RETURN_IF_ERROR(ParseHostPort(listen, &host, &port).WithContext("control"));
  GEOKV_RETURN_IF_ERROR(Listen(io_, listen, host, port, &acceptor_, &listen_address_));
  Accept();
  return Status::OK();
}

void WanProxyControl::Accept() {
  acceptor_.async_accept([this](const error_code& ec, tcp::socket socket) {
    if (stopped_ || ec == boost::asio::error::operation_aborted) return;
    if (ec) {
      spdlog::warn("control accept on {} failed: {}", listen_address_, ec.message());
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this](const error_code& ec) {
        if (!ec && !stopped_) Accept();
      });
      return;
    }
    uint64_t id = next_id_++;
    auto session = std::make_shared<Session>(*this, id, std::move(socket));
    sessions_.emplace(id, session);
    session->ReadLine();
    Accept();
  });
}

void WanProxyControl::Stop() {
  if (stopped_.exchange(true)) return;
  boost::asio::dispatch(io_, [this] {
    error_code ignored;
    acceptor_.close(ignored);
    accept_retry_.cancel();
    std::vector<std::shared_ptr<Session>> sessions;
    for (const auto& [id, session] : sessions_) sessions.push_back(session);
    for (const auto& session : sessions) session->Close();
  });
}

}  // namespace geokv
