# CRDT states and deltas as stored on disk and sent between nodes.
#
# Evolution rules (see docs/formats.md): field ordinals only grow; no field is
# renumbered, retyped or reused; a new union member is a new ordinal. Bytes
# that carry one of these structs are framed by schema/framing.h, whose
# leading format byte changes only for an incompatible encoding.

@0xac5593dd4529a182;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("geokv::schema");

# The n-th event of a replica in one object; also a version-vector entry
# (replica, highest contiguous counter).
struct Dot {
  replica @0 :UInt64;
  counter @1 :UInt64;
}

# Consecutive dots first..last of one replica.
struct DotRange {
  replica @0 :UInt64;
  first @1 :UInt64;
  last @2 :UInt64;
}

# A set of dots in canonical form (crdt/causal_context.h): a version vector
# (the runs from 1), the dots of the runs beyond it of at most 64 dots, and
# the longer runs as ranges; each list sorted and without duplicates.
# Builds before `ranges` wrote every run beyond the vector in `cloud`.
struct CausalContext {
  versionVector @0 :List(Dot);
  cloud @1 :List(Dot);
  ranges @2 :List(DotRange);
}

struct HlcTimestamp {
  wallMs @0 :UInt64;
  logical @1 :UInt32;
}

struct LwwRegister {
  timestamp @0 :HlcTimestamp;
  node @1 :UInt64;
  union {
    deleted @2 :Void;
    value @3 :Data;
  }
}

struct MvRegister {
  struct Sibling {
    dot @0 :Dot;
    value @1 :Data;
  }
  siblings @0 :List(Sibling);   # sorted by dot
  context @1 :CausalContext;
}

struct OrSet {
  struct Entry {
    element @0 :Data;
    dots @1 :List(Dot);        # sorted, non-empty
  }
  entries @0 :List(Entry);      # sorted by element
  context @1 :CausalContext;
}

struct PnCounter {
  struct Entry {
    replica @0 :UInt64;
    added @1 :UInt64;
    subtracted @2 :UInt64;
  }
  entries @0 :List(Entry);      # sorted by replica
}

# A PN counter that a delete has reset: each replica's totals and its reset
# floors (at most the totals). Written instead of `PnCounter` exactly when
# some floor is not 0, so a counter never deleted keeps its bytes.
struct ResetPnCounter {
  struct Entry {
    replica @0 :UInt64;
    added @1 :UInt64;
    subtracted @2 :UInt64;
    resetAdded @3 :UInt64;
    resetSubtracted @4 :UInt64;
  }
  entries @0 :List(Entry);      # sorted by replica
}

# One CRDT state or delta of any type.
struct Value {
  union {
    lww @0 :LwwRegister;
    mvRegister @1 :MvRegister;
    orSet @2 :OrSet;
    counter @3 :PnCounter;
    resetCounter @4 :ResetPnCounter;   # a counter with reset floors
  }
}
