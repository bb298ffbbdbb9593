#include "replication/peer_service.h"

#include <fmt/format.h>
#include <kj/debug.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

#include "replication/anti_entropy.h"
#include "replication/members.h"
#include "replication/peer_wire.h"
#include "replication/set_paging.h"
#include "util/log_limiter.h"
#include "crdt/codec.h"
#include "schema/kv_text.h"
#include "util/coding.h"
#include "util/tls.h"

namespace geokv {
namespace {

void CheckRunning(const PeerServiceContext& c) {
  if (c.stopped) kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "node is shutting down"));
}

// The segments this node vouches for in its acknowledgements
// (HandOver::Vouches): those it owns by its own view, less those it came to
// own and is not settled for yet.
std::string VouchedSegmentSet(const PeerServiceContext& c) {
  std::vector<bool> vouched(kTreeSegments);
  for (size_t s = 0; s < kTreeSegments; ++s) {
    vouched[s] = c.vouches ? c.vouches(s) : c.env.OwnsSegment(s);
  }
  return EncodeSegmentSet(vouched);
}

class PeerSessionImpl final : public peer::PeerSession::Server {
 public:
  // `owned`: the segment set hello sent.
  PeerSessionImpl(PeerServiceContext& c, ReplicaId caller, std::string region, std::string owned)
      : c_(c),
        caller_(caller),
        region_(std::move(region)),
        owned_sent_(std::make_shared<std::string>(std::move(owned))) {}

  kj::Promise<void> pushDeltas(PushDeltasContext context) override {
    CheckRunning(c_);
    auto wire = context.getParams().getBatch();
    DeltaBatch batch;
    batch.origin = wire.getOrigin();
    if (batch.origin != caller_) {
      // Deltas are never relayed: a session ships its caller's own log.
      c_.receiver.refusals().Refuse(
          PeerClaim::kOrigin, region_,
          Status::InvalidArgument(fmt::format(
              "a batch of the log of {:016x} from {:016x}: a node ships only its own log",
              batch.origin, caller_)));
    }
    batch.from = wire.getFrom();
    batch.through = wire.getThrough();
    auto entries = wire.getEntries();
    CheckPeerList(entries.size(), "delta batch entries");
    size_t bytes = 0;
    for (auto e : entries) bytes += e.getKey().size() + e.getValue().size();
    batch.positions.reserve(entries.size());
    batch.deltas.Reserve(entries.size(), bytes);
    for (auto e : entries) {
      batch.positions.push_back(DeltaBatch::Position{e.getSeq(), e.getTimestampMs()});
      batch.deltas.Add(View(e.getKey()), View(e.getValue()));
    }
    auto skipped = wire.getSkipped();
    KJ_REQUIRE(skipped.size() <= kTreeSegments, "more skipped segments than there are",
               skipped.size());
    batch.skipped.reserve(skipped.size());
    for (uint16_t segment : skipped) {
      KJ_REQUIRE(segment < kTreeSegments, "no such tree segment", segment);
      batch.skipped.push_back(segment);
    }
    return c_.receiver.PushDeltas(region_, std::move(batch))
        .then([&c = c_, context, sent = owned_sent_](PushAnswer answer) mutable {
          auto results = context.getResults();
          results.setApplied(answer.applied);
          SendVouched(c, *sent, [&](capnp::Data::Reader d) { results.setOwned(d); });
          auto list = results.initSuperseded(answer.superseded.size());
          for (size_t i = 0; i < answer.superseded.size(); ++i) {
            list[i].setSeq(answer.superseded[i].position);
            list[i].setHeldWallMs(answer.superseded[i].held.wall_ms);
            list[i].setHeldLogical(answer.superseded[i].held.logical);
          }
        });
  }

  kj::Promise<void> heartbeat(HeartbeatContext context) override {
    CheckRunning(c_);
    auto results = context.getResults();
    results.setWallClockMs(static_cast<int64_t>(c_.env.NowMillis()));
    auto params = context.getParams();
    if (params.hasMembers()) LearnMembers(c_.env.options, region_, params.getMembers());
    if (c_.on_stable) {
      c_.on_stable(caller_, HlcTimestamp{params.getStableMs(), params.getStableLogical()});
    }
    std::vector<Member> members = c_.local_members();
    uint64_t hash = ViewHash(members);
    results.setViewHash(hash);
    if (hash != params.getViewHash()) {
      EncodeMembers(members, results.initMembers(members.size()));
    }
    SendVouched(c_, *owned_sent_, [&](capnp::Data::Reader d) { results.setOwned(d); });
    return kj::READY_NOW;
  }

  kj::Promise<void> forward(ForwardContext context) override {
    CheckRunning(c_);
    KJ_REQUIRE(c_.forward != nullptr, "this node does not coordinate requests");
    auto params = context.getParams();
    return c_.forward(params.getRequest(), params.getConsistency(),
                      context.getResults().initReply());
  }

  kj::Promise<void> keyDigests(KeyDigestsContext context) override {
    CheckRunning(c_);
    CheckPeerList(context.getParams().getKeys().size(), "keys of keyDigests");
    std::vector<std::string> keys;
    for (auto k : context.getParams().getKeys()) keys.push_back(String(k));
    std::vector<bool> unsettled;
    for (const std::string& key : keys) {
      unsettled.push_back(c_.settled && !c_.settled(TreeSegmentOf(key)));
    }
    return c_.env.reader
        .Run([keys = std::move(keys)](Store& s) {
          std::vector<uint64_t> out;
          for (const std::string& key : keys) {
            auto digest = s.KeyDigest(key);
            KJ_REQUIRE(digest.ok(), "cannot read a key's digest", digest.status().ToString());
            out.push_back(*digest);
          }
          return out;
        })
        .then([context, unsettled = std::move(unsettled)](std::vector<uint64_t> digests) mutable {
          auto results = context.getResults();
          auto out = results.initDigests(digests.size());
          for (size_t i = 0; i < digests.size(); ++i) out.set(i, digests[i]);
          auto flags = results.initUnsettled(unsettled.size());
          for (size_t i = 0; i < unsettled.size(); ++i) flags.set(i, unsettled[i]);
        });
  }

  kj::Promise<void> treeDigests(TreeDigestsContext context) override {
    CheckRunning(c_);
    // Read before the digests: the state they sum holds at least this.
    LogCoverage::Positions least;
    if (c_.env.coverage != nullptr) {
      least = c_.env.coverage->Least(
          c_.env.Origins(), c_.env.own_segments.empty() ? std::vector<bool>(kTreeSegments, true)
                                                       : c_.env.own_segments);
    }
    std::vector<uint64_t> digests = c_.env.store.TreeDigests();
    auto results = context.getResults();
    auto out = results.initDigests(digests.size());
    for (size_t i = 0; i < digests.size(); ++i) out.set(i, digests[i]);
    results.setOwned(AsData(c_.env.OwnedSegmentSet()));
    SetPositions(results.initCoverage(least.size()), least);
    return kj::READY_NOW;
  }

  kj::Promise<void> segmentKeys(SegmentKeysContext context) override {
    CheckRunning(c_);
    uint32_t segment = context.getParams().getSegment();
    KJ_REQUIRE(segment < kTreeSegments, "no such tree segment", segment);
    // Read before the keys: what they are listed with holds at least this.
    LogCoverage::Positions coverage;
    if (c_.env.coverage != nullptr) coverage = c_.env.coverage->Report(c_.env.Origins(), segment);
    return c_.env.reader.SegmentKeys(segment).then(
        [context, coverage = std::move(coverage)](StatusOr<std::vector<KeyDigest>> keys) mutable {
          KJ_REQUIRE(keys.ok(), "cannot list a tree segment", keys.status().ToString());
          auto results = context.getResults();
          auto out = results.initKeys(keys->size());
          for (size_t i = 0; i < keys->size(); ++i) {
            out[i].setKey(AsData((*keys)[i].key));
            out[i].setDigest((*keys)[i].digest);
          }
          SetPositions(results.initCoverage(coverage.size()), coverage);
        });
  }

  kj::Promise<void> getStates(GetStatesContext context) override {
    CheckRunning(c_);
    auto params = context.getParams();
    CheckPeerList(params.getKeys().size(), "keys of getStates");
    std::vector<std::string> keys;
    for (auto k : params.getKeys()) keys.push_back(String(k));
    const ReplicatorOptions& o = c_.env.options;
    return ReadServedStates(c_.env.reader, std::move(keys), o.batch_bytes, o.max_message_bytes,
                            params.getForRead())
        .then([context](ServedStates served) mutable {
          auto results = context.getResults();
          results.setServed(served.served);
          SetStates(results.initStates(served.found.size()), served.found);
          auto paged = results.initPaged(served.paged.size());
          for (size_t i = 0; i < served.paged.size(); ++i) paged.set(i, AsData(served.paged[i]));
        });
  }

  kj::Promise<void> getSetPage(GetSetPageContext context) override {
    CheckRunning(c_);
    auto params = context.getParams();
    std::optional<std::string> after;
    if (params.getHasAfter()) after = String(params.getAfter());
    std::string key = String(params.getKey());
    return ReadSetPage(c_.env, key, std::move(after))
        .then([context, key](OrSetPage page) mutable {
          EncodeSetPage(key, page, context.getResults().initPage());
        });
  }

  kj::Promise<void> putSetPage(PutSetPageContext context) override {
    CheckRunning(c_);
    auto got = DecodeSetPage(context.getParams().getPage(), c_.env.options.max_message_bytes / 2);
    KJ_REQUIRE(got.ok(), "a bad set page", got.status().ToString());
    RemoteApply apply;
    apply.set_pages.emplace_back(std::move(got->key), std::move(got->page));
    return Commit(std::move(apply));
  }

  kj::Promise<void> putSetContext(PutSetContextContext context) override {
    CheckRunning(c_);
    auto params = context.getParams();
    auto ctx = DecodeContext(View(params.getContext()));
    KJ_REQUIRE(ctx.ok(), "a causal context that does not decode", ctx.status().ToString());
    RemoteApply apply;
    apply.set_contexts.emplace_back(String(params.getKey()), std::move(ctx).value());
    return Commit(std::move(apply));
  }

  kj::Promise<void> putStates(PutStatesContext context) override {
    CheckRunning(c_);
    RemoteApply apply;
    apply.joins = ReceivedStates(context.getParams().getStates());
    return Commit(std::move(apply));
  }

  kj::Promise<void> markRepaired(MarkRepairedContext context) override {
    CheckRunning(c_);
    return c_.receiver.MarkRepaired(region_, caller_, context.getParams().getThrough())
        .then([&c = c_, context, sent = owned_sent_](uint64_t applied) mutable {
          auto results = context.getResults();
          results.setApplied(applied);
          SendVouched(c, *sent, [&](capnp::Data::Reader d) { results.setOwned(d); });
        });
  }

  kj::Promise<void> waitVisible(WaitVisibleContext context) override {
    CheckRunning(c_);
    auto params = context.getParams();
    auto tokens = DecodeTokens(params.getTokens());
    KJ_REQUIRE(tokens.ok(), tokens.status().ToString());
    auto timeout = std::chrono::milliseconds(params.getTimeoutMs());
    KJ_REQUIRE(timeout <= kMaxReplicationWait, "a wait over the limit (ms)", timeout.count(),
               kMaxReplicationWait.count());
    return c_.visibility.WaitVisible(std::move(tokens).value(), std::nullopt, timeout)
        .then([context](Status s) mutable { context.getResults().setVisible(s.ok()); });
  }

 private:
  // Gives `set` the segments this node vouches for now (VouchedSegmentSet)
  // when they differ from what this session last sent (`sent`, updated).
  template <typename Set>
  static void SendVouched(const PeerServiceContext& c, std::string& sent, Set set) {
    std::string vouched = VouchedSegmentSet(c);
    if (vouched == sent) return;
    set(AsData(vouched));
    sent = std::move(vouched);
  }

  kj::Promise<void> Commit(RemoteApply apply) {
    return c_.env.committer.SubmitRemote(std::move(apply)).then([](WriteResult result) {
      KJ_REQUIRE(result.status.ok(), "cannot join states", result.status.ToString());
    });
  }

  PeerServiceContext& c_;
  const ReplicaId caller_;
  const std::string region_;
  // The segment set this session last sent (shared with answers under way).
  std::shared_ptr<std::string> owned_sent_;
};

class PeerServiceImpl final : public peer::Peer::Server {
 public:
  PeerServiceImpl(PeerServiceContext& c, std::optional<std::string> certified)
      : c_(c), certified_(std::move(certified)) {}

  // Every refused hello is logged (at most once per 10 s per thread, with
  // how many were held back) with why.
  kj::Promise<void> hello(HelloContext context) override {
    KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { Hello(context); })) {
      thread_local LogLimiter refusals_logged;
      uint64_t held_back = 0;
      if (refusals_logged.Allow(LogLimiter::Clock::now(), &held_back)) {
        auto theirs = context.getParams().getHello();
        spdlog::info("refused a hello as {} of region {}{}: {}{}",
                     PrintableBytes(std::string_view(theirs.getName().cStr(),
                                                     theirs.getName().size())),
                     PrintableBytes(std::string_view(theirs.getRegion().cStr(),
                                                     theirs.getRegion().size())),
                     certified_ ? " (certificate " + PrintableBytes(*certified_) + ")" : "",
                     e->getDescription().cStr(),
                     held_back == 0 ? std::string()
                                    : fmt::format(" ({} more refused since the last such line)",
                                                  held_back));
      }
      kj::throwFatalException(kj::mv(*e));
    }
    return kj::READY_NOW;
  }

 private:
  void Hello(HelloContext context) {
    CheckRunning(c_);
    auto params = context.getParams();
    auto theirs = params.getHello();
    CheckCertified(theirs);
    KJ_REQUIRE(theirs.getSchemaVersion() == peer::SCHEMA_VERSION,
               "this node speaks peer schema version 1 only", theirs.getSchemaVersion());
    const ReplicaId caller = theirs.getReplicaId();
    CheckKnownId(params);
    KJ_REQUIRE(theirs.getName().size() > 0 && theirs.getName().size() <= kMaxMemberFieldBytes,
               "a hello's name must be 1 to 256 bytes", theirs.getName().size());
    KJ_REQUIRE(theirs.getRegion().size() > 0 && theirs.getRegion().size() <= kMaxMemberFieldBytes,
               "a hello's region must be 1 to 256 bytes", theirs.getRegion().size());
    Store& store = c_.env.store;
    KJ_REQUIRE(caller != store.node_id() && caller != 0,
               "the caller has this node's replica id (a copied data dir?)");
    CheckPlacementSettings(c_.env.options, theirs);
    auto results = context.getResults();
    FillHello(c_.env.options, store.node_id(), static_cast<int64_t>(c_.env.NowMillis()),
              results.initHello());
    auto applied = store.AppliedPositions();
    auto it = applied.find(caller);
    results.setApplied(it == applied.end() ? 0 : it->second);
    std::string vouched = VouchedSegmentSet(c_);
    results.setOwned(AsData(vouched));
    results.setSession(
        kj::heap<PeerSessionImpl>(c_, caller, theirs.getRegion(), std::move(vouched)));
    // Learned only once the hello is accepted: a refused peer teaches nothing.
    if (params.hasMembers()) {
      LearnMembers(c_.env.options, theirs.getRegion().cStr(), params.getMembers());
    }
    std::vector<Member> members = c_.local_members();
    results.setViewHash(ViewHash(members));
    EncodeMembers(members, results.initMembers(members.size()));
    spdlog::debug("peer {} of region {} said hello", theirs.getName().cStr(),
                  theirs.getRegion().cStr());
  }

  // A node speaks only for itself: the name and region of its hello must be
  // those its certificate names.
  void CheckCertified(peer::NodeHello::Reader theirs) const {
    if (!certified_) return;
    const std::string name(theirs.getName().begin(), theirs.getName().size());
    const std::string region(theirs.getRegion().begin(), theirs.getRegion().size());
    if (NodeCommonName(NodeIdentity{name, region}) == *certified_) return;
    KJ_FAIL_REQUIRE("the hello names another node than the caller's certificate",
                    certified_->c_str());
  }

  // A certified node also goes by the replica id this node knows it by.
  void CheckKnownId(peer::Peer::HelloParams::Reader params) const {
    if (!certified_ || !c_.known_nodes) return;
    auto text = [](capnp::Text::Reader t) { return std::string_view(t.cStr(), t.size()); };
    auto theirs = params.getHello();
    const std::string_view region = text(theirs.getRegion());
    std::vector<ReplicaId> retired;
    for (auto m : params.getMembers()) {
      if (m.getState() == peer::MemberState::LEFT && text(m.getRegion()) == region) {
        retired.push_back(m.getReplicaId());
      }
    }
    Status known = CheckHelloIdentity(c_.known_nodes(), theirs.getReplicaId(),
                                      text(theirs.getName()), region, retired);
    if (!known.ok()) c_.receiver.refusals().Refuse(PeerClaim::kReplicaId, region, known);
  }

  PeerServiceContext& c_;
  const std::optional<std::string> certified_;
};

}  // namespace

capnp::Capability::Client NewPeerService(PeerServiceContext& context,
                                         std::optional<std::string> certified) {
  return kj::heap<PeerServiceImpl>(context, std::move(certified));
}

}  // namespace geokv
