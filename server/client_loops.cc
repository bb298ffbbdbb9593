#include "server/client_loops.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/debug.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

#include "server/kv_service.h"
#include "util/thread.h"

namespace geokv {
namespace {

// `reader`'s pointer as the root of a flat message of its own.
kj::Array<capnp::word> Flatten(capnp::AnyPointer::Reader reader) {
  capnp::MallocMessageBuilder message;
  message.getRoot<capnp::AnyPointer>().set(reader);
  return capnp::messageToFlatArray(message);
}

// A flat message this process made, read back whole.
capnp::ReaderOptions Unlimited(const kj::Array<capnp::word>& flat) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = flat.size() * 2 + 64;
  return options;
}

// One connection's service on its loop: each call goes to the node's loop
// (ClientCalls::Call) and its results come back into the reply.
class ProxyService final : public capnp::Capability::Server {
 public:
  ProxyService(ClientCalls& calls, std::shared_ptr<CallLimit> limit)
      : calls_(calls), id_(calls.NewId()), limit_(std::move(limit)) {}

  ~ProxyService() noexcept(false) { calls_.Closed(id_); }

  DispatchCallResult dispatchCall(
      uint64_t interface_id, uint16_t method_id,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    kj::Array<capnp::word> params = Flatten(context.getParams());
    context.releaseParams();
    limit_->Begin();
    auto call = [&calls = calls_, id = id_, interface_id, method_id,
                 params = kj::mv(params)]() mutable {
      return calls.Call(id, interface_id, method_id, kj::mv(params));
    };
    auto done = calls_.executor()
                    .executeAsync(kj::mv(call))
                    .then([context](kj::Array<capnp::word> results) mutable {
                      capnp::FlatArrayMessageReader reader(results, Unlimited(results));
                      context.getResults().set(reader.getRoot<capnp::AnyPointer>());
                    })
                    .attach(kj::defer([limit = limit_] { limit->End(); }));
    return {kj::mv(done), false};
  }

 private:
  ClientCalls& calls_;
  const uint64_t id_;
  std::shared_ptr<CallLimit> limit_;
};

}  // namespace

StatusOr<std::vector<kj::AutoCloseFd>> ListenSharing(const std::string& address, size_t count) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return Status::InvalidArgument("no port in " + address);
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.empty() || host == "*" ? nullptr : host.c_str(), port.c_str(),
                           &hints, &found);
      rc != 0) {
    return Status::InvalidArgument("cannot resolve " + address + ": " + gai_strerror(rc));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(found, freeaddrinfo);
  sockaddr_storage bound{};
  socklen_t bound_len = static_cast<socklen_t>(found->ai_addrlen);
  std::memcpy(&bound, found->ai_addr, found->ai_addrlen);
  auto fail = [&address](const char* what) {
    return Status::IOError("cannot listen on " + address + ": " + what + ": " +
                           std::strerror(errno));
  };
  std::vector<kj::AutoCloseFd> fds;
  for (size_t i = 0; i < count; ++i) {
    kj::AutoCloseFd fd(socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) return fail("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
      return fail("setsockopt");
    }
    if (bind(fd, reinterpret_cast<sockaddr*>(&bound), bound_len) != 0) return fail("bind");
    if (listen(fd, SOMAXCONN) != 0) return fail("listen");
    if (i == 0) {
      // Port 0 picked one: the others share it.
      bound_len = sizeof(bound);
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
        return fail("getsockname");
      }
    }
    fds.push_back(kj::mv(fd));
  }
  return fds;
}

kj::Own<kj::ConnectionReceiver> WrapListening(kj::LowLevelAsyncIoProvider& io,
                                              kj::AutoCloseFd fd) {
  return io.wrapListenSocketFd(kj::mv(fd), kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK |
                                               kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC);
}

ClientCalls::ClientCalls(std::function<capnp::Capability::Client()> open)
    : open_(std::move(open)), executor_(kj::getCurrentThreadExecutor()) {}

ClientCalls::~ClientCalls() = default;

kj::Promise<kj::Array<capnp::word>> ClientCalls::Call(uint64_t id, uint64_t interface_id,
                                                      uint16_t method_id,
                                                      kj::Array<capnp::word> params) {
  {
    std::lock_guard<std::mutex> lock(closed_mu_);
    for (uint64_t gone : closed_) services_.erase(gone);
    closed_.clear();
  }
  auto it = services_.find(id);
  if (it == services_.end()) it = services_.emplace(id, open_()).first;
  auto request = it->second.typelessRequest(interface_id, method_id, nullptr);
  {
    capnp::FlatArrayMessageReader reader(params, Unlimited(params));
    request.set(reader.getRoot<capnp::AnyPointer>());
  }
  return request.send().then(
      [](capnp::Response<capnp::AnyPointer>&& results) { return Flatten(results); });
}

void ClientCalls::Closed(uint64_t id) {
  std::lock_guard<std::mutex> lock(closed_mu_);
  closed_.push_back(id);
}

struct ClientLoops::Loop {
  // What the thread hands back once its loop runs.
  struct Started {
    kj::Own<const kj::Executor> executor;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> exit;  // ends the thread
  };

  Loop(kj::AutoCloseFd fd, ClientCalls& calls, const RpcListenerOptions& options,
       size_t calls_per_connection, size_t index) {
    std::promise<Started> started;
    auto started_future = started.get_future();
    // The promise moves into the thread, which alone touches it from then.
    // (The descriptor crosses bare: a thread's callable must not throw
    // when destroyed, as an AutoCloseFd may.)
    thread = std::thread([this, fd = fd.release(), &calls, options, calls_per_connection, index,
                          started = std::move(started)]() mutable {
      const std::string name = "geokv-client-" + std::to_string(index);
      NameThisThread(name.c_str());
      Run(kj::AutoCloseFd(fd), calls, options, calls_per_connection, started);
      finished.store(true, std::memory_order_release);
    });
    Started got = started_future.get();
    executor = kj::mv(got.executor);
    exit = kj::mv(got.exit);
  }

  ~Loop() {
    if (thread.joinable()) thread.join();
  }

  // The thread: serves until Stop has closed everything.
  void Run(kj::AutoCloseFd fd, ClientCalls& calls, const RpcListenerOptions& options,
           size_t calls_per_connection, std::promise<Started>& started) {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    auto receiver = WrapListening(*io.lowLevelProvider, kj::mv(fd));
    auto sessions = [&calls, calls_per_connection](kj::PeerIdentity&) {
      auto limit = std::make_shared<CallLimit>(calls_per_connection);
      return RpcSession{kj::heap<ProxyService>(calls, limit),
                        [limit] { return limit->Wait(); },
                        [limit] { return limit->under_way() > 0; }};
    };
    timer = &io.provider->getTimer();
    listener = std::make_unique<RpcListener>(kj::mv(receiver), sessions, *timer, options);
    auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
    started.set_value(Started{kj::getCurrentThreadExecutor().addRef(), kj::mv(paf.fulfiller)});
    paf.promise.wait(io.waitScope);
    listener.reset();
    // What the loop still holds goes with it: a call to the node's loop
    // among it waits for that loop to take its cancellation, which it does
    // while Stop's promise is pending there.
  }

  // On the loop's thread: waits for the replies given to be sent (at most
  // until `deadline`), then closes every connection.
  kj::Promise<void> Drain(kj::TimePoint deadline) {
    if (!listener->RepliesSent() && timer->now() < deadline) {
      return timer->afterDelay(10 * kj::MILLISECONDS).then([this, deadline] {
        return Drain(deadline);
      });
    }
    listener.reset();
    return kj::READY_NOW;
  }

  std::thread thread;
  std::atomic<bool> finished{false};
  kj::Own<const kj::Executor> executor;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> exit;
  // On the loop's thread.
  kj::Timer* timer = nullptr;
  std::unique_ptr<RpcListener> listener;
};

ClientLoops::ClientLoops(std::vector<kj::AutoCloseFd> fds,
                         std::function<capnp::Capability::Client()> open,
                         RpcListenerOptions options, size_t calls_per_connection)
    : calls_(std::move(open)) {
  KJ_REQUIRE(!options.wrap, "client loops serve no TLS");
  options.slots = nullptr;  // each loop its own
  for (size_t i = 0; i < fds.size(); ++i) {
    loops_.push_back(
        std::make_unique<Loop>(kj::mv(fds[i]), calls_, options, calls_per_connection, i + 1));
  }
}

ClientLoops::~ClientLoops() = default;

void ClientLoops::StopAccepting() {
  for (auto& loop : loops_) {
    loop->executor->executeAsync([l = loop.get()] { l->listener->StopAccepting(); })
        .detach([](kj::Exception&& e) {
          spdlog::warn("client loop: stop accepting: {}", e.getDescription().cStr());
        });
  }
}

kj::Promise<void> ClientLoops::Stop(kj::Timer& timer) {
  kj::Vector<kj::Promise<void>> stops;
  for (auto& loop : loops_) {
    stops.add(loop->executor->executeAsync([l = loop.get()] {
      return l->Drain(l->timer->now() + 2 * kj::SECONDS);
    }));
  }
  return kj::joinPromises(stops.releaseAsArray()).then([this, &timer] {
    for (auto& loop : loops_) loop->exit->fulfill();
    return Finished(timer);
  });
}

kj::Promise<void> ClientLoops::Finished(kj::Timer& timer) {
  for (auto& loop : loops_) {
    if (!loop->finished.load(std::memory_order_acquire)) {
      return timer.afterDelay(2 * kj::MILLISECONDS).then([this, &timer] {
        return Finished(timer);
      });
    }
  }
  return kj::READY_NOW;
}

}  // namespace geokv
