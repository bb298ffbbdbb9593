#include "replication/set_paging.h"

#include <kj/debug.h>

#include <algorithm>

#include "crdt/codec.h"
#include "schema/kv_text.h"
#include "util/coding.h"

namespace geokv {
namespace {

std::optional<std::string> Bound(bool has, capnp::Data::Reader bytes) {
  if (!has) return std::nullopt;
  return std::string(String(bytes));
}

std::string EncodePageState(const OrSetPage& page) {
  return EncodeCrdt(Crdt(std::in_place_type<OrSet>, OrSet(page.entries, page.context)));
}

void FillSetPage(std::string_view key, const OrSetPage& page, std::string_view state,
                 peer::SetPage::Builder out) {
  out.setKey(AsData(key));
  out.setHasAfter(page.after.has_value());
  if (page.after) out.setAfter(AsData(*page.after));
  out.setHasThrough(page.through.has_value());
  if (page.through) out.setThrough(AsData(*page.through));
  out.setState(AsData(state));
}

bool Absent(const OrSetPage& page) {
  return page.entries.empty() && !page.more() && page.context.empty();
}

kj::Promise<void> Commit(ReplicationEnv& env, RemoteApply apply) {
  return env.committer.SubmitRemote(std::move(apply)).then([](WriteResult r) {
    KJ_REQUIRE(r.status.ok(), "cannot join a set page", r.status.ToString());
  });
}

kj::Promise<size_t> PullFrom(ReplicationEnv& env, peer::PeerSession::Client session,
                             std::string key, std::optional<std::string> after,
                             PageThrottle throttle, std::optional<CausalContext> first,
                             size_t pages) {
  auto req = session.getSetPageRequest();
  req.setKey(AsData(key));
  req.setHasAfter(after.has_value());
  if (after) req.setAfter(AsData(*after));
  return req.send().then([&env, session, key = std::move(key), after = std::move(after),
                          throttle = std::move(throttle), first = std::move(first),
                          pages](auto&& resp) mutable -> kj::Promise<size_t> {
    size_t bytes = resp.totalSize().wordCount * sizeof(capnp::word);
    StatusOr<ReceivedSetPage> got = DecodeSetPage(resp.getPage(), env.options.max_message_bytes / 2);
    KJ_REQUIRE(got.ok(), "peer sent a bad set page", got.status().ToString());
    KJ_REQUIRE(got->key == key && got->page.after == after, "peer sent another set page than asked",
               PrintableBytes(key));
    if (!first) {
      if (Absent(got->page)) return pages;
      first = got->page.context;
    }
    std::optional<std::string> next = got->page.through;
    RemoteApply apply;
    apply.set_pages.emplace_back(key, std::move(got->page));
    return Commit(env, std::move(apply))
        .then([throttle, bytes]() { return throttle(bytes); })
        .then([&env, session = kj::mv(session), key = std::move(key), next = std::move(next),
               throttle, first = std::move(first), pages]() mutable -> kj::Promise<size_t> {
          if (next) {
            return PullFrom(env, kj::mv(session), std::move(key), std::move(next),
                            std::move(throttle), std::move(first), pages + 1);
          }
          RemoteApply end;
          end.set_contexts.emplace_back(std::move(key), std::move(*first));
          return Commit(env, std::move(end)).then([pages] { return pages + 1; });
        });
  });
}

kj::Promise<size_t> PushFrom(ReplicationEnv& env, std::vector<peer::PeerSession::Client> sessions,
                             std::string key, std::optional<std::string> after,
                             PageThrottle throttle, std::optional<CausalContext> first,
                             size_t pages) {
  return ReadSetPage(env, key, std::move(after))
      .then([&env, sessions = std::move(sessions), key = std::move(key),
             throttle = std::move(throttle), first = std::move(first),
             pages](OrSetPage page) mutable -> kj::Promise<size_t> {
        if (!first) {
          if (Absent(page)) return pages;
          first = page.context;
        }
        std::string state = EncodePageState(page);
        kj::Vector<kj::Promise<void>> puts;
        for (auto& session : sessions) {
          auto req = session.putSetPageRequest();
          FillSetPage(key, page, state, req.initPage());
          puts.add(env.timer.timeoutAfter(30 * kj::SECONDS, req.send()).ignoreResult());
        }
        const size_t bytes = state.size() + key.size();
        return kj::joinPromises(puts.releaseAsArray())
            .then([throttle, bytes] { return throttle(bytes); })
            .then([&env, sessions = std::move(sessions), key = std::move(key),
                   next = std::move(page.through), throttle, first = std::move(first),
                   pages]() mutable -> kj::Promise<size_t> {
              if (next) {
                return PushFrom(env, std::move(sessions), std::move(key), std::move(next),
                                std::move(throttle), std::move(first), pages + 1);
              }
              std::string ctx = EncodeContext(*first);
              kj::Vector<kj::Promise<void>> ends;
              for (auto& session : sessions) {
                auto req = session.putSetContextRequest();
                req.setKey(AsData(key));
                req.setContext(AsData(ctx));
                ends.add(env.timer.timeoutAfter(30 * kj::SECONDS, req.send()).ignoreResult());
              }
              return kj::joinPromises(ends.releaseAsArray()).then([pages] { return pages + 1; });
            });
      });
}

}  // namespace

size_t SetPageBytes(const ReplicatorOptions& options) {
  return std::max<size_t>(std::min(options.batch_bytes, options.max_message_bytes / 4), 1);
}

void EncodeSetPage(std::string_view key, const OrSetPage& page, peer::SetPage::Builder out) {
  FillSetPage(key, page, EncodePageState(page), out);
}

StatusOr<ReceivedSetPage> DecodeSetPage(peer::SetPage::Reader in, size_t max_bytes) {
  ReceivedSetPage out;
  out.key = std::string(String(in.getKey()));
  out.page.after = Bound(in.getHasAfter(), in.getAfter());
  out.page.through = Bound(in.getHasThrough(), in.getThrough());
  if (out.page.after && out.page.through && !(*out.page.after < *out.page.through)) {
    return Status::InvalidArgument("set page: its range ends before it starts");
  }
  if (in.getState().size() > max_bytes) {
    return Status::InvalidArgument("set page: " + std::to_string(in.getState().size()) +
                                   " bytes, over the limit of " + std::to_string(max_bytes));
  }
  GEOKV_ASSIGN_OR_RETURN(Crdt state, DecodeCrdt(View(in.getState())));
  OrSet* set = std::get_if<OrSet>(&state);
  if (set == nullptr) return Status::InvalidArgument("set page: its state is not an OR-set");
  if (set->size() > kSetPageMaxElements) {
    return Status::InvalidArgument("set page: " + std::to_string(set->size()) +
                                   " elements, over the limit of " +
                                   std::to_string(kSetPageMaxElements));
  }
  for (const auto& [element, dots] : set->entries()) {
    if (!out.page.InRange(element)) {
      return Status::InvalidArgument("set page: element '" + PrintableBytes(element) +
                                     "' outside its range");
    }
  }
  out.page.entries = set->entries();
  out.page.context = set->context();
  return out;
}

kj::Promise<OrSetPage> ReadSetPage(ReplicationEnv& env, std::string key,
                                   std::optional<std::string> after) {
  return env.reader.SetStatePage(std::move(key), std::move(after), kSetPageMaxElements,
                                 SetPageBytes(env.options))
      .then([](StatusOr<OrSetPage> page) {
        KJ_REQUIRE(page.ok(), "cannot read a set page", page.status().ToString());
        return std::move(page).value();
      });
}

kj::Promise<size_t> PullSet(ReplicationEnv& env, peer::PeerSession::Client session,
                            std::string key, PageThrottle throttle) {
  return PullFrom(env, kj::mv(session), std::move(key), std::nullopt, std::move(throttle),
                  std::nullopt, 0);
}

kj::Promise<size_t> PushSet(ReplicationEnv& env, std::vector<peer::PeerSession::Client> sessions,
                            std::string key, PageThrottle throttle) {
  return PushFrom(env, std::move(sessions), std::move(key), std::nullopt, std::move(throttle),
                  std::nullopt, 0);
}

kj::Promise<void> PushSets(ReplicationEnv& env, std::vector<peer::PeerSession::Client> sessions,
                           std::vector<std::string> keys, PageThrottle throttle) {
  if (keys.empty()) return kj::READY_NOW;
  std::string key = std::move(keys.back());
  keys.pop_back();
  // Pushes to fresh copies of the sessions, keeping these for the rest.
  std::vector<peer::PeerSession::Client> these;
  for (auto& session : sessions) these.emplace_back(session);
  return PushSet(env, std::move(these), std::move(key), throttle)
      .then([&env, sessions = std::move(sessions), keys = std::move(keys),
             throttle](size_t) mutable {
        return PushSets(env, std::move(sessions), std::move(keys), std::move(throttle));
      });
}

kj::Promise<void> PullSets(ReplicationEnv& env, peer::PeerSession::Client session,
                           std::vector<std::string> keys, PageThrottle throttle) {
  kj::Promise<void> done = kj::READY_NOW;
  for (std::string& key : keys) {
    done = done.then([&env, session, key = std::move(key), throttle]() mutable {
      return PullSet(env, kj::mv(session), std::move(key), std::move(throttle)).ignoreResult();
    });
  }
  return done;
}

}  // namespace geokv
