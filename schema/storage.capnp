# Rows that only the storage layer writes (see docs/formats.md for the key
# layout). Evolution rules as in crdt.capnp.

@0xc06187f5687caf09;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("geokv::schema");

using Crdt = import "crdt.capnp";

# One delta this node coordinated, in the replication log under its sequence.
struct LogEntry {
  seq @0 :UInt64;               # this node's log sequence, from 1, gapless
  origin @1 :UInt64;            # the node that coordinated the write
  timestamp @2 :Crdt.HlcTimestamp;
  key @3 :Data;
  delta @4 :Crdt.Value;
}

# The per-set row of an OR-set stored one row per element.
struct SetHeader {
  context @0 :Crdt.CausalContext;
  cardinality @1 :UInt64;
}

# The dots of one OR-set element.
struct ElementDots {
  dots @0 :List(Crdt.Dot);      # sorted, non-empty
}

# The writer's durable position, rewritten with every committed group.
struct WriterState {
  lastSeq @0 :UInt64;           # highest log sequence ever assigned
  clock @1 :Crdt.HlcTimestamp;  # the HLC at commit: at least every stored stamp
}
