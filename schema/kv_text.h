// Small conversions around schema/kv.capnp shared by the server, the CLI,
// the benchmark and the tests: bytes in and out of capnp::Data, and the
// names of outcome codes, types and member states.

#ifndef GEOKV_SCHEMA_KV_TEXT_H_
#define GEOKV_SCHEMA_KV_TEXT_H_

#include <string>
#include <string_view>

#include "schema/kv.capnp.h"

namespace geokv {

// A Data reader over `s`'s bytes; `s` must outlive it.
inline capnp::Data::Reader AsData(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

// The bytes of `d`, viewed (valid while the message is) or copied.
inline std::string_view View(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}
inline std::string String(capnp::Data::Reader d) { return std::string(View(d)); }

// "OK", "NOT_FOUND", "WRONG_TYPE", "TOO_LARGE", "INVALID", "UNAVAILABLE",
// "INTERNAL", "TIMEOUT", "UNAUTHENTICATED", "PERMISSION_DENIED": the names the CLI prints and scripts match.
inline const char* OutcomeName(rpc::Outcome::Code code) {
  switch (code) {
    case rpc::Outcome::Code::OK: return "OK";
    case rpc::Outcome::Code::NOT_FOUND: return "NOT_FOUND";
    case rpc::Outcome::Code::WRONG_TYPE: return "WRONG_TYPE";
    case rpc::Outcome::Code::TOO_LARGE: return "TOO_LARGE";
    case rpc::Outcome::Code::INVALID: return "INVALID";
    case rpc::Outcome::Code::UNAVAILABLE: return "UNAVAILABLE";
    case rpc::Outcome::Code::INTERNAL: return "INTERNAL";
    case rpc::Outcome::Code::TIMEOUT: return "TIMEOUT";
    case rpc::Outcome::Code::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case rpc::Outcome::Code::PERMISSION_DENIED: return "PERMISSION_DENIED";
  }
  return "UNKNOWN";
}

// "none", "lww", "mvregister", "orset", "counter" (as crdt/crdt.h names them).
inline const char* TypeName(rpc::Type type) {
  switch (type) {
    case rpc::Type::NONE: return "none";
    case rpc::Type::LWW: return "lww";
    case rpc::Type::MV_REGISTER: return "mvregister";
    case rpc::Type::OR_SET: return "orset";
    case rpc::Type::COUNTER: return "counter";
  }
  return "unknown";
}

// "alive", "suspect", "dead", "left" (as domain/member.h names them).
inline const char* MemberStateName(rpc::MemberState state) {
  switch (state) {
    case rpc::MemberState::ALIVE: return "alive";
    case rpc::MemberState::SUSPECT: return "suspect";
    case rpc::MemberState::DEAD: return "dead";
    case rpc::MemberState::LEFT: return "left";
  }
  return "unknown";
}

}  // namespace geokv

#endif  // GEOKV_SCHEMA_KV_TEXT_H_
