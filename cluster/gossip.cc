#include "cluster/gossip.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <string_view>
#include <utility>

#include "util/thread.h"

namespace geokv {
namespace {

using boost::asio::ip::udp;

// A name resolves again after this, so a moved host is found.
constexpr std::chrono::seconds kResolveTtl{30};
// The largest UDP payload.
constexpr size_t kReceiveBufferBytes = 65536;

// "HOST:PORT" or "[V6HOST]:PORT".
Status SplitHostPort(std::string_view address, std::string* host, std::string* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) {
    return Status::InvalidArgument("'" + std::string(address) + "' is not HOST:PORT");
  }
  std::string_view h = address.substr(0, colon);
  std::string_view p = address.substr(colon + 1);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (p.size() > 5 || !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoul(std::string(p)) > 65535) {
    return Status::InvalidArgument("'" + std::string(address) + "' has no port in [0, 65535]");
  }
  *host = std::string(h);
  *port = std::string(p);
  return Status::OK();
}

std::string FormatEndpoint(const udp::endpoint& e) {
  std::string host = e.address().to_string();
  if (e.address().is_v6()) host = "[" + host + "]";
  return host + ":" + std::to_string(e.port());
}

// Checks the keys' options against the membership's and keeps a sealed
// datagram within the membership's packet budget.
Status ValidateAuth(const GossipAuthOptions& auth, MembershipOptions* membership) {
  if (auth.keys.empty()) return Status::OK();
  if (auth.start_slack > auth.window) {
    return Status::InvalidArgument("the gossip start slack must not exceed the replay window");
  }
  for (auto [forget, name] : {std::pair{membership->dead_forget, "dead_forget"},
                              std::pair{membership->left_forget, "left_forget"}}) {
    if (forget.count() != 0 && forget <= auth.window) {
      return Status::InvalidArgument(std::string(name) +
                                     " must exceed the gossip replay window, or a replayed "
                                     "datagram could bring back a member forgotten");
    }
  }
  if (membership->max_packet_bytes <= 2 * GossipAuthenticator::kMaxOverheadBytes) {
    return Status::InvalidArgument("max_packet_bytes leaves no room for a sealed packet");
  }
  membership->max_packet_bytes -= GossipAuthenticator::kMaxOverheadBytes;
  return Status::OK();
}

std::string Describe(const Member& m) {
  return fmt::format("{} ({:016x}) at {}", m.name.empty() ? "?" : m.name, m.id, m.gossip_address);
}

}  // namespace

Gossip::Gossip(GossipOptions options)
    : options_(std::move(options)),
      socket_(io_),
      timer_(io_),
      resolver_(io_),
      drop_probability_(options_.drop_probability),
      receive_buffer_(kReceiveBufferBytes),
      drop_rng_(std::random_device{}()) {}

Gossip::~Gossip() { Stop(); }

Status Gossip::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_ || stopped_) return Status::FailedPrecondition("gossip already started");
    started_ = true;
  }
  Member self = options_.self;
  if (self.gossip_address.empty()) self.gossip_address = options_.listen;
  MembershipOptions membership = options_.membership;
  GEOKV_RETURN_IF_ERROR(ValidateAuth(options_.auth, &membership));
  GEOKV_RETURN_IF_ERROR(ValidateMembership(membership, self));
  std::string host, port;
  GEOKV_RETURN_IF_ERROR(
      SplitHostPort(options_.listen, &host, &port).WithContext("gossip listen address"));

  boost::system::error_code ec;
  auto results = resolver_.resolve(host, port, udp::resolver::passive, ec);
  if (ec || results.empty()) {
    return Status::InvalidArgument("cannot resolve gossip listen address " + options_.listen +
                                   ": " + (ec ? ec.message() : "no address"));
  }
  udp::endpoint endpoint = *results.begin();
  if (options_.self.gossip_address.empty() && endpoint.address().is_unspecified()) {
    return Status::InvalidArgument("gossip listens on the wildcard address " + options_.listen +
                                   ": set the member's gossip address to one other nodes reach");
  }
  socket_.open(endpoint.protocol(), ec);
  if (!ec) socket_.bind(endpoint, ec);
  if (ec) {
    boost::system::error_code ignored;
    socket_.close(ignored);
    return Status::IOError("cannot bind gossip address " + options_.listen + ": " + ec.message());
  }
  bound_address_ = FormatEndpoint(socket_.local_endpoint(ec));
  if (options_.self.gossip_address.empty()) self.gossip_address = bound_address_;

  auth_ = std::make_unique<GossipAuthenticator>(options_.auth, self.id);
  {
    std::lock_guard<std::mutex> lock(mu_);
    membership_ = std::make_unique<Membership>(membership, self);
    membership_->Join(options_.seeds);
  }
  spdlog::info("gossip: {} of region {} listening on {}", Describe(self), self.region,
               bound_address_);
  if (auth_->enabled()) {
    spdlog::info("gossip: datagrams sealed under key '{}'; accepted under {} key(s){}",
                 options_.auth.keys.front().id, options_.auth.keys.size(),
                 options_.auth.accept_unauthenticated ? " and unauthenticated ones too" : "");
  } else if (!endpoint.address().is_loopback()) {
    spdlog::warn("gossip: {} is not a loopback address and gossip has no key: anyone who can "
                 "send it a datagram can change this region's members (--gossip-key-file, "
                 "docs/operations.md)",
                 bound_address_);
  }
  StartReceive();
  boost::asio::post(io_, [this] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      membership_->Tick(Clock::now());
    }
    AfterEvent();
  });
  thread_ = std::thread([this] {
    NameThisThread("geokv-gossip");
    io_.run();
  });
  return Status::OK();
}

std::string Gossip::bound_address() const {
  std::lock_guard<std::mutex> lock(mu_);
  return membership_ ? bound_address_ : std::string();
}

void Gossip::Leave(std::chrono::milliseconds wait) {
  const auto deadline = Clock::now() + wait;
  std::unique_lock<std::mutex> lock(mu_);
  if (!membership_ || stopped_) return;
  boost::asio::post(io_, [this] {
    {
      std::lock_guard<std::mutex> inner(mu_);
      membership_->Leave(Clock::now());
    }
    AfterEvent();
  });
  cv_.wait_until(lock, deadline,
                 [this] { return stopped_ || membership_->LeaveAcknowledged(); });
}

Status Gossip::Remove(ReplicaId id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!membership_ || stopped_) return Status::Unavailable("gossip is not running");
  // Times fed to the membership come from the gossip thread, in order: the
  // check is repeated there.
  GEOKV_RETURN_IF_ERROR(membership_->CanRemove(id));
  boost::asio::post(io_, [this, id] {
    {
      std::lock_guard<std::mutex> inner(mu_);
      Status s = membership_->Remove(id, Clock::now());
      if (!s.ok()) spdlog::warn("cannot remove member {:016x}: {}", id, s.ToString());
    }
    AfterEvent();
  });
  return Status::OK();
}

void Gossip::SetKeys(std::vector<GossipKey> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!membership_ || stopped_) return;
  boost::asio::post(io_, [this, keys = std::move(keys)]() mutable {
    const std::string first = keys.front().id;
    const size_t count = keys.size();
    auth_->SetKeys(std::move(keys));
    spdlog::info("gossip: datagrams sealed under key '{}' from now on; accepted under {} key(s)",
                 first, count);
  });
}

void Gossip::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  cv_.notify_all();
  io_.stop();
  if (thread_.joinable()) thread_.join();
  boost::system::error_code ignored;
  socket_.close(ignored);
}

std::vector<Member> Gossip::Members() const {
  std::lock_guard<std::mutex> lock(mu_);
  return membership_ ? membership_->Members() : std::vector<Member>();
}

Member Gossip::Self() const {
  std::lock_guard<std::mutex> lock(mu_);
  return membership_ ? membership_->self() : options_.self;
}

std::optional<Member> Gossip::Find(ReplicaId id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return membership_ ? membership_->Find(id) : std::nullopt;
}

uint64_t Gossip::failure_detections() const {
  std::lock_guard<std::mutex> lock(mu_);
  return membership_ ? membership_->failure_detections() : 0;
}

uint64_t Gossip::version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return membership_ ? membership_->version() : 0;
}

std::array<uint64_t, kGossipRefusals> Gossip::refused() const {
  std::array<uint64_t, kGossipRefusals> out{};
  for (size_t i = 0; i < kGossipRefusals; ++i) out[i] = refused_[i].load();
  return out;
}

MembershipStats Gossip::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return membership_ ? membership_->stats() : MembershipStats();
}

void Gossip::OnChange(std::function<void()> callback) {
  std::lock_guard<std::mutex> lock(mu_);
  on_change_ = std::move(callback);
}

void Gossip::StartReceive() {
  socket_.async_receive_from(
      boost::asio::buffer(receive_buffer_), receive_from_,
      [this](const boost::system::error_code& ec, size_t bytes) {
        if (ec == boost::asio::error::operation_aborted) return;
        if (ec) {
          spdlog::debug("gossip: receive failed: {}", ec.message());
        } else if (!Drop()) {
          std::string from = FormatEndpoint(receive_from_);
          std::string_view packet;
          std::string detail;
          if (auto refusal = auth_->Open(std::string_view(receive_buffer_.data(), bytes), &packet,
                                         &detail)) {
            Refuse(*refusal, from, detail);
          } else {
            {
              std::lock_guard<std::mutex> lock(mu_);
              membership_->Receive(from, packet, Clock::now());
            }
            AfterEvent();
          }
        }
        StartReceive();
      });
}

void Gossip::OnTimer(uint64_t generation, const boost::system::error_code& ec) {
  // A superseded wait may still complete without error; the newer one runs.
  if (ec || generation != timer_generation_) return;
  timer_armed_ = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    membership_->Tick(Clock::now());
  }
  AfterEvent();
}

void Gossip::AfterEvent() {
  std::vector<Membership::Outgoing> out;
  bool changed = false;
  std::vector<Member> members;
  std::function<void()> callback;
  Clock::time_point deadline;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out = membership_->TakeOutgoing();
    if (membership_->version() != reported_version_) {
      changed = true;
      reported_version_ = membership_->version();
      members = membership_->Members();
      callback = on_change_;
    }
    deadline = membership_->NextDeadline();
  }
  for (const Membership::Outgoing& o : out) SendTo(o);
  cv_.notify_all();
  if (changed) {
    LogChanges(members);
    if (callback) callback();
  }
  ArmTimer(deadline);
}

void Gossip::ArmTimer(Clock::time_point deadline) {
  const auto now = Clock::now();
  // At least a millisecond apart, and at least once a second.
  deadline = std::clamp(deadline, now + std::chrono::milliseconds(1), now + std::chrono::seconds(1));
  if (timer_armed_ && timer_deadline_ <= deadline) return;
  timer_armed_ = true;
  timer_deadline_ = deadline;
  uint64_t generation = ++timer_generation_;
  timer_.expires_at(deadline);
  timer_.async_wait([this, generation](const boost::system::error_code& ec) {
    OnTimer(generation, ec);
  });
}

void Gossip::SendTo(const Membership::Outgoing& out) {
  if (Drop()) return;
  udp::endpoint endpoint;
  if (!Resolve(out.to, &endpoint)) return;
  const std::string datagram = auth_->Seal(out.bytes, out.recipient);
  boost::system::error_code ec;
  socket_.send_to(boost::asio::buffer(datagram), endpoint, 0, ec);
  if (ec) spdlog::debug("gossip: sending to {} failed: {}", out.to, ec.message());
}

bool Gossip::Resolve(const std::string& address, udp::endpoint* endpoint) {
  const auto now = Clock::now();
  auto cached = resolved_.find(address);
  if (cached != resolved_.end() && cached->second.expires > now) {
    *endpoint = cached->second.endpoint;
    return true;
  }
  std::string host, port;
  Status split = SplitHostPort(address, &host, &port);
  if (!split.ok()) {
    if (unresolvable_.insert(address).second) {
      spdlog::warn("gossip: cannot send to {}", split.ToString());
    }
    return false;
  }
  boost::system::error_code ec;
  auto ip = boost::asio::ip::make_address(host, ec);
  if (!ec) {
    // Numeric addresses are cheap to parse, so they are not remembered.
    *endpoint = udp::endpoint(ip, static_cast<uint16_t>(std::stoul(port)));
    return true;
  }
  boost::system::error_code ignored;
  const udp protocol = socket_.local_endpoint(ignored).protocol();
  auto results = resolver_.resolve(host, port, ec);
  std::optional<udp::endpoint> match;
  if (!ec) {
    for (const auto& r : results) {
      if (r.endpoint().protocol() == protocol) {
        match = r.endpoint();
        break;
      }
    }
  }
  if (!match) {
    if (unresolvable_.insert(address).second) {
      spdlog::warn("gossip: cannot resolve {}: {}", address,
                   ec ? ec.message() : "no address of the socket's family");
    }
    return false;
  }
  unresolvable_.erase(address);
  *endpoint = *match;
  resolved_[address] = Resolved{*match, now + kResolveTtl};
  return true;
}

bool Gossip::Drop() {
  double p = drop_probability_.load();
  if (p <= 0) return false;
  if (p >= 1) return true;
  return std::uniform_real_distribution<double>(0, 1)(drop_rng_) < p;
}

void Gossip::Refuse(GossipRefusal refusal, const std::string& from, const std::string& detail) {
  const auto i = static_cast<size_t>(refusal);
  refused_[i].fetch_add(1);
  uint64_t held_back = 0;
  if (!refusal_log_[i].Allow(LogLimiter::Clock::now(), &held_back)) return;
  spdlog::warn("gossip: refused a datagram from {} ({}): {}{}", from, GossipRefusalName(refusal),
               detail,
               held_back == 0
                   ? ""
                   : fmt::format(" (and {} more for this reason since the last message)", held_back));
}

void Gossip::LogChanges(const std::vector<Member>& members) {
  std::map<ReplicaId, Member> now;
  for (const Member& m : members) {
    auto old = logged_.find(m.id);
    if (old == logged_.end()) {
      if (!logged_.empty() || m.id != options_.self.id) {
        spdlog::info("gossip: member {} is {} (incarnation {})", Describe(m),
                     MemberStateName(m.state), m.incarnation);
      }
    } else if (old->second.state != m.state) {
      spdlog::info("gossip: member {} is {} (incarnation {}), was {}", Describe(m),
                   MemberStateName(m.state), m.incarnation, MemberStateName(old->second.state));
    } else if (old->second != m) {
      spdlog::info("gossip: member {} changed (incarnation {})", Describe(m), m.incarnation);
    }
    now.emplace(m.id, m);
  }
  for (const auto& [id, m] : logged_) {
    if (now.count(id) == 0) spdlog::info("gossip: forgot member {}", Describe(m));
  }
  logged_ = std::move(now);
}

}  // namespace geokv
