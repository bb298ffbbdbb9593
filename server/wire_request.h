// The Cap'n Proto client API (schema/kv.capnp) in and out of the plain
// requests and results of server/request.h: the parser, the encoder that
// forwards a parsed request to another node, and the reply codecs.
//
// The parser reads every pointer of a request once: Cap'n Proto counts each
// read against the message's traversal limit (the message size limit), so
// reading a large value twice could exceed it. A malformed message throws a
// kj::Exception while it is read; ParseBatch reads the whole batch before it
// returns, so such a batch fails before anything of it runs.
//
// Thread safety: plain functions; each call touches only its arguments.

#ifndef GEOKV_SERVER_WIRE_REQUEST_H_
#define GEOKV_SERVER_WIRE_REQUEST_H_

#include <cstddef>
#include <vector>

#include "schema/kv.capnp.h"
#include "server/request.h"

namespace geokv {

// CheckKey (server/request.h) of a key as the wire holds it.
Status CheckKey(capnp::Data::Reader key, const RequestLimits& limits);

ParsedRequest ParseRequest(rpc::SetRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::GetRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::DelRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::MvSetRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::MvGetRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::MvDelRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::SAddRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::SRemRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::SIsMemberRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::SMembersRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::SCardRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::IncrByRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::CounterGetRequest::Reader r, const RequestLimits& limits);
ParsedRequest ParseRequest(rpc::TypeRequest::Reader r, const RequestLimits& limits);
// A batch member; kUnknown (InvalidArgument) for a kind this server does
// not know.
ParsedRequest ParseRequest(rpc::Request::Reader r, const RequestLimits& limits);
// Every member of a batch, in order. A batch of more than
// limits.max_batch_requests throws (FAILED) before any member is read.
std::vector<ParsedRequest> ParseBatch(capnp::List<rpc::Request>::Reader requests,
                                      const RequestLimits& limits);

// Writes `request` as the batch member it was parsed from (its consistency
// field set to `request.consistency`), to forward it.
// REQUIRES: request.status.ok() and request.kind != kUnknown.
void EncodeRequest(const ParsedRequest& request, rpc::Request::Builder out);

rpc::Consistency WireConsistency(Consistency level);
// OK, or InvalidArgument for a level the schema does not name (a newer
// client's, or garbage).
Status CheckConsistency(rpc::Consistency level);
// REQUIRES: CheckConsistency(level) is OK.
Consistency PlainConsistency(rpc::Consistency level);

// The reply to a request of `kind` that ended as `result` says.
void EncodeReply(const Result& result, rpc::WriteReply::Builder out);
void EncodeReply(const Result& result, rpc::ValueReply::Builder out);
void EncodeReply(const Result& result, rpc::MvReply::Builder out);
void EncodeReply(const Result& result, rpc::BoolReply::Builder out);
void EncodeReply(const Result& result, rpc::MembersReply::Builder out);
void EncodeReply(const Result& result, rpc::CountReply::Builder out);
void EncodeReply(const Result& result, rpc::CounterReply::Builder out);
void EncodeReply(const Result& result, rpc::TypeReply::Builder out);
void EncodeReply(RequestKind kind, const Result& result, rpc::Reply::Builder out);
// The result an owner's reply to a forwarded request of `kind` carries;
// Unavailable when it answered another kind of reply.
StatusOr<Result> DecodeReply(RequestKind kind, rpc::Reply::Reader reply);

// Sets an outcome from a status (logging internal errors).
void SetOutcome(const Status& status, rpc::Outcome::Builder out);
// The outcome code a status is answered with.
rpc::Outcome::Code OutcomeCode(const Status& status);

}  // namespace geokv

#endif  // GEOKV_SERVER_WIRE_REQUEST_H_
