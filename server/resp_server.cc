#include "server/resp_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <utility>
#include <vector>

#include "server/read_deadlines.h"
#include "util/tls.h"

namespace geokv {
namespace {

constexpr size_t kReadBytes = 64 << 10;

std::string PeerName(kj::AsyncIoStream& stream) {
  struct sockaddr_storage addr {};
  kj::uint len = sizeof(addr);
  std::string out = "?";
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    stream.getpeername(reinterpret_cast<struct sockaddr*>(&addr), &len);
  })) {
    return out;
  }
  char host[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<struct sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    auto* in = reinterpret_cast<struct sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof(host));
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in->sin6_port));
  }
  return out;
}

}  // namespace

struct RespServer::Connection {
  Connection(kj::AuthenticatedStream accepted, ConnectionSlots::Slot slot, RespNode& node,
             uint64_t id, const RespLimits& limits, kj::TimePoint now)
      : slot(std::move(slot)),
        stream(kj::mv(accepted.stream)),
        parser(limits),
        session(node, id, PeerName(*stream), CertifiedName(*accepted.peerIdentity)),
        since(now) {}

  ConnectionSlots::Slot slot;
  kj::Own<kj::AsyncIoStream> stream;
  RespParser parser;
  RespSession session;
  kj::byte buffer[kReadBytes];
  std::string out;  // replies being written
  // When the parser last held no partial command, or when the partial
  // command it holds began (partial).
  kj::TimePoint since;
  bool partial = false;
};

RespServer::RespServer(kj::Own<kj::ConnectionReceiver> receiver, RespNode node, kj::Timer& timer,
                       RespServerOptions options)
    : node_(std::move(node)),
      options_(std::move(options)),
      timer_(timer),
      tasks_(*this),
      acceptor_(kj::mv(receiver), timer,
                [this](kj::AuthenticatedStream accepted, ConnectionSlots::Slot slot) {
                  Serve(kj::mv(accepted), std::move(slot));
                },
                "redis",
                options_.slots ? options_.slots
                               : std::make_shared<ConnectionSlots>(options_.max_connections),
                options_.wrap) {
  node_.client_list = [this] { return ClientList(); };
  node_.connections = [this] { return connections_.size(); };
}

RespServer::~RespServer() = default;

void RespServer::StopAccepting() { acceptor_.Stop(); }

std::string RespServer::ClientList() const {
  std::string out;
  for (const auto& c : connections_) out += c->session.Describe() + "\n";
  return out;
}

void RespServer::Serve(kj::AuthenticatedStream accepted, ConnectionSlots::Slot slot) {
  connections_.push_back(kj::heap<Connection>(kj::mv(accepted), std::move(slot), node_, next_id_++,
                                              options_.limits, timer_.now()));
  auto it = std::prev(connections_.end());
  tasks_.add(Read(**it).then([] { return kj::evalLater([] {}); })
                 .then([this, it] { connections_.erase(it); },
                       [this, it](kj::Exception&& e) {
                         if (e.getType() != kj::Exception::Type::DISCONNECTED) {
                           spdlog::debug("redis connection ended: {}",
                                         e.getDescription().cStr());
                         }
                         connections_.erase(it);
                       }));
}

kj::Promise<void> RespServer::Read(Connection& c) {
  const kj::TimePoint now = timer_.now();
  const size_t buffered = c.parser.buffered();
  if ((buffered > 0) != c.partial) {
    c.partial = buffered > 0;
    c.since = now;
  }
  kj::Promise<size_t> read = c.stream->tryRead(c.buffer, 1, kReadBytes);
  const auto limit = c.partial ? options_.read_timeout : options_.idle_timeout;
  if (limit.count() != 0) {
    kj::TimePoint deadline = c.since + limit.count() * kj::MILLISECONDS;
    if (c.partial) deadline += buffered / ReadDeadlines::kMinBytesPerSecond * kj::SECONDS;
    const bool partial = c.partial;
    read = read.exclusiveJoin(timer_.atTime(deadline).then([&c, partial]() -> size_t {
      spdlog::info("redis client {}: {}; closing", c.session.Describe(),
                   partial ? "did not send a whole command within --read-timeout"
                           : "sent no command within --idle-timeout");
      return 0;
    }));
  }
  return read.then([this, &c](size_t n) -> kj::Promise<void> {
    if (n == 0) return kj::READY_NOW;  // the client closed, or timed out
    c.parser.Feed(std::string_view(reinterpret_cast<const char*>(c.buffer), n));
    return Process(c);
  });
}

kj::Promise<void> RespServer::Process(Connection& c) {
  std::vector<std::vector<std::string>> commands;
  RespParser::State state = RespParser::State::kNeedMore;
  while (commands.size() < options_.max_commands) {
    std::vector<std::string> args;
    state = c.parser.Next(&args);
    if (state != RespParser::State::kCommand) break;
    commands.push_back(std::move(args));
  }
  if (state == RespParser::State::kError) {
    spdlog::info("redis client {}: {}; closing", c.session.Describe(), c.parser.error());
  }
  if (commands.empty() && state == RespParser::State::kNeedMore) return Read(c);
  // What follows the commands run now is idle time, or a new partial one.
  c.since = timer_.now();
  c.partial = c.parser.buffered() > 0;
  auto flush = [&c](std::string replies) {
    c.out = std::move(replies);
    return c.stream->write(c.out.data(), c.out.size());
  };
  return c.session.Execute(std::move(commands), flush)
      .then([this, &c, state](std::string replies) -> kj::Promise<void> {
        const bool close = state == RespParser::State::kError || c.session.closing();
        if (state == RespParser::State::kError) AppendError(replies, "ERR " + c.parser.error());
        c.out = std::move(replies);
        // The next read waits until these replies are written: a client
        // that does not read them stops being read.
        auto written = c.out.empty() ? kj::Promise<void>(kj::READY_NOW)
                                     : c.stream->write(c.out.data(), c.out.size());
        return written.then([this, &c, close]() -> kj::Promise<void> {
          c.out.clear();
          if (close) {
            c.stream->shutdownWrite();
            return kj::READY_NOW;
          }
          return Process(c);
        });
      });
}

void RespServer::taskFailed(kj::Exception&& exception) {
  spdlog::warn("redis connection task failed: {}", exception.getDescription().cStr());
}

}  // namespace geokv
