// Encodes CRDT states and deltas through the Cap'n Proto structs of
// schema/crdt.capnp. Encoding is deterministic: equal states give equal
// bytes. Decoding validates everything (sorted, duplicate-free, canonical
// contexts) and returns Corruption for any malformed input; it never crashes.

#ifndef GEOKV_CRDT_CODEC_H_
#define GEOKV_CRDT_CODEC_H_

#include <string>
#include <string_view>

#include "crdt/crdt.h"
#include "schema/crdt.capnp.h"
#include "util/status.h"

namespace geokv {

// Framed bytes (schema/framing.h) of one state or delta.
std::string EncodeCrdt(const Crdt& value);
StatusOr<Crdt> DecodeCrdt(std::string_view bytes);

// Framed bytes of a causal context, as handed to clients of multi-value
// registers.
std::string EncodeContext(const CausalContext& ctx);
StatusOr<CausalContext> DecodeContext(std::string_view bytes);

// Builders and readers, for messages that embed these structs. The readers
// may throw kj::Exception on malformed pointers; call them inside
// ReadFramed (or an RPC handler), which turns that into an error.
void WriteCrdt(const Crdt& value, schema::Value::Builder out);
StatusOr<Crdt> ReadCrdt(schema::Value::Reader in);
void WriteContext(const CausalContext& ctx, schema::CausalContext::Builder out);
StatusOr<CausalContext> ReadContext(schema::CausalContext::Reader in);
void WriteDots(const DotSet& dots, capnp::List<schema::Dot>::Builder out);
// Returns Corruption unless the list is strictly increasing with counters >= 1.
StatusOr<DotSet> ReadDots(capnp::List<schema::Dot>::Reader in);
void WriteTimestamp(HlcTimestamp ts, schema::HlcTimestamp::Builder out);
HlcTimestamp ReadTimestamp(schema::HlcTimestamp::Reader in);

}  // namespace geokv

#endif  // GEOKV_CRDT_CODEC_H_
