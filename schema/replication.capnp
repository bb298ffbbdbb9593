# The peer API: what geokv nodes call on each other, within a region and
# across regions.
#
# Each node serves `Peer` on its --peer-listen address and calls it on every
# other node it knows of (from gossip in its own region, and from the member
# lists that nodes of other regions send back). The bootstrap capability has one method, `hello`, which
# answers with the session capability that carries every other call, so
# nothing happens on a connection before the two nodes know each other. Values travel as framed `Value`s of
# crdt.capnp (docs/formats.md), so every delta and state is checksummed and
# validated on arrival.
#
# Evolution rules are those of kv.capnp (docs/api.md): ordinals only grow;
# nothing is renumbered, retyped or reused. `schemaVersion` changes only for
# an incompatible change; a node refuses a peer whose version it does not
# speak.

@0x9f7e6a46e1c430c8;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("geokv::peer");

# The version of this file that a node speaks.
const schemaVersion :UInt32 = 2;

using Kv = import "/schema/kv.capnp";

# Who a node is; exchanged by `hello`.
struct NodeHello {
  # The random replica id that names the node's writes (its log's origin).
  replicaId @0 :UInt64;
  name @1 :Text;    # --node-id
  region @2 :Text;  # --region
  schemaVersion @3 :UInt32;
  # The sender's wall clock when it sent this, in milliseconds since the
  # Unix epoch; feeds the clock-offset estimate.
  wallClockMs @4 :Int64;
  # The sender's --replication-factor and --vnodes. Every node computes
  # every ring, so all must agree; a node refuses a hello whose settings
  # differ from its own. 0: not said.
  replicationFactor @5 :UInt32;
  vnodes @6 :UInt32;
  # Whether the sender's peer port takes packed connections
  # (util/packed_stream.h). An older build leaves it false; a node that
  # reached such a peer over a plain connection keeps to plain ones.
  packedStreams @7 :Bool;
  # Whether the sender's peer port takes compressed connections (packed,
  # then Zstandard: util/zstd_stream.h). An older build leaves it false.
  compressedStreams @8 :Bool;
}

# One entry of the origin's replication log.
struct Delta {
  seq @0 :UInt64;   # the entry's position in the origin's log
  key @1 :Data;
  value @2 :Data;   # a framed Value: the delta
  # When the origin made the entry (its HLC's wall milliseconds), for the
  # replication lag metric; 0 when unknown.
  timestampMs @3 :UInt64;
}

# The part of one origin's log positions from+1..through that the callee
# owns (by its region's ring as the caller sees it), oldest first: entries
# for keys the callee does not own are left out, so a batch may hold none
# and still advance the callee's position.
struct DeltaBatch {
  origin @0 :UInt64;  # the replica id of the node whose log this is
  entries @1 :List(Delta);
  from @2 :UInt64;     # the position before this batch's range
  through @3 :UInt64;  # the last position this batch covers
  # The segments of the entries of the range left out of `entries` (the
  # caller took the callee not to own them), each once; at most
  # kTreeSegments, each below it. Empty from older nodes.
  skipped @4 :List(UInt16);
}

# How far a node holds an origin's log in a segment
# (replication/log_coverage.h).
struct LogPosition {
  origin @0 :UInt64;
  through @1 :UInt64;
}

# An entry of a DeltaBatch joined under a newer register (pushDeltas).
struct Superseded {
  seq @0 :UInt64;          # the entry's position in the origin's log
  heldWallMs @1 :UInt64;   # the stamp of the register the callee held
  heldLogical @2 :UInt32;
}

enum MemberState {
  alive @0;
  suspect @1;
  dead @2;
  left @3;
}

# A peer address a member advertises to the nodes of one other region.
struct Route {
  region @0 :Text;
  address @1 :Text;
}

# One member of a region as its region's gossip knows it.
struct Member {
  replicaId @0 :UInt64;
  name @1 :Text;
  region @2 :Text;
  peerAddress @3 :Text;    # for nodes of its own region
  clientAddress @4 :Text;
  routes @5 :List(Route);  # peer addresses for nodes of other regions
  incarnation @6 :UInt64;
  state @7 :MemberState;
}

# The members of other regions a node learned through member exchange, and
# where its own region's other members gossip, as it keeps them in its data
# dir (the `peer_members` metadata row, docs/formats.md), so that a restart
# depends neither on its --peers nor on its --seeds alone.
struct LearnedMembers {
  members @0 :List(Member);
  regionSeeds @1 :List(Text);  # HOST:PORT, gossip addresses of its region's other members
}

struct KeyDigest {
  key @0 :Data;
  digest @1 :UInt64;  # of all the key's state rows (docs/formats.md)
}

# The full state of every type stored at one key.
struct KeyStates {
  key @0 :Data;
  states @1 :List(Data);  # framed Values
}

# One page of the OR-set at `key` (docs/formats.md, paged transfer): the
# sender's elements in the byte range (after, through], with its whole causal
# context at the read that made the page. A missing bound is open.
struct SetPage {
  key @0 :Data;
  hasAfter @1 :Bool;
  after @2 :Data;
  hasThrough @3 :Bool;  # false: the range runs through the last element
  through @4 :Data;
  # A framed Value: an OR-set of the range's elements (strictly sorted, each
  # inside the range) under the sender's whole context.
  state @5 :Data;
}

interface Peer {
  # Introduces the caller. Answers with the callee's own introduction,
  # `applied`: the callee's durable position in the caller's log (every
  # entry through it is applied), where the caller's shipper resumes, and
  # the session for everything else. Fails when the schema versions differ
  # or both nodes are one replica.
  # `members` is the callee's region as its gossip knows it, and `viewHash`
  # a hash of that list (see heartbeat). The caller's `members`, when it is
  # of another region, are its region's likewise: the callee learns that
  # region from every node that connects to it, not only from the nodes it
  # dials (an older caller sends none).
  # `owned`: the segments the callee vouches for (see pushDeltas).
  hello @0 (hello :NodeHello, members :List(Member))
      -> (hello :NodeHello, applied :UInt64, session :PeerSession,
          members :List(Member), viewHash :UInt64, owned :Data);
}

# What one node asks of another, after hello. `caller` below is the node
# that said hello.
interface PeerSession {
  # Joins the entries and answers with the callee's durable position in the
  # origin's log once they are committed. Entries at or below the position
  # are replays and are skipped; a batch starting past the position + 1
  # (a gap) applies nothing, and the answer tells the caller where to
  # resume. Fails with OVERLOADED when the callee's writes are backed up.
  # `owned`: the segments the callee vouches for when it answered: those it
  # owns by its own view of its region's ring, less those it came to own
  # and is not settled for yet (replication/hand_over.h)
  # (kTreeSegments bits, bit s of byte s / 8, as the `dropped_segments` row
  # of docs/formats.md), sent in hello and then only when it changed since
  # this session last sent it; empty: unchanged. A coordinator counts a
  # node's position toward a write's quorum only while the node vouches for
  # the write's segment (a node that heard of a join or leave before the
  # coordinator did no longer vouches for segments it hands over, and a new
  # owner not before a coordinator that has not heard of the change would
  # read it). A hello without it (an older node): its view is not known.
  # `superseded`: entries of the batch's range that the callee joined
  # under a newer LWW register it already held for their keys (their
  # write loses to it), as far as the callee remembers (its last 1,024 of
  # each origin): the coordinator of such a write makes it again above
  # that stamp before it answers its client.
  pushDeltas @0 (batch :DeltaBatch)
      -> (applied :UInt64, owned :Data, superseded :List(Superseded));

  # A liveness and clock probe: answers with the callee's wall clock, and
  # with its region's members when their hash differs from `viewHash`, the
  # hash of the list the caller last received. The caller's `members` (of
  # another region) are its region's, sent when they changed since it last
  # sent them on this session; empty otherwise.
  # `stableMs`.`stableLogical`: the caller's stable stamp (every node it
  # ships to holds every entry of its log stamped at or below it; zero:
  # none, and from older nodes), for the collection of its tombstones
  # (replication/tombstone_collector.h).
  # `owned` as in pushDeltas, so that a new owner's vouching reaches the
  # coordinators waiting on it without another write.
  heartbeat @1 (wallClockMs :Int64, viewHash :UInt64, members :List(Member),
                stableMs :UInt64, stableLogical :UInt32)
      -> (wallClockMs :Int64, viewHash :UInt64, members :List(Member), owned :Data);

  # Anti-entropy: the digests of every segment of the callee's hash tree
  # (kTreeSegments entries, segment order), and the segments it owns by its
  # own view (kTreeSegments bits as in pushDeltas, always sent; empty from
  # older nodes). `coverage`: per origin, the least position through which
  # the callee held that origin's entries in any segment it owns, just
  # before it summed the digests (as in segmentKeys; empty from older
  # nodes).
  treeDigests @2 () -> (digests :List(UInt64), owned :Data, coverage :List(LogPosition));
  # Every key of one segment with its digest, in byte order. `coverage`:
  # through where the callee held each origin's entries of the segment
  # just before it listed them (origins held through 0 left out; empty
  # from older nodes): a caller brought in step with the listed keys holds
  # them too.
  segmentKeys @3 (segment :UInt32) -> (keys :List(KeyDigest), coverage :List(LogPosition));
  # The full states of the first `served` named keys (keys with no state
  # are left out): the callee stops where the reply would pass its batch
  # size, and the caller asks again for the rest.
  # `paged` names the served keys whose OR-set is too large for one message
  # and was left out of `states`: the caller moves it with getSetPage (a
  # callee that predates paging leaves it empty and skips such keys).
  # `forRead`: a client read waits for the answer (read repair), so the
  # callee reads the states ahead of its bulk replication reads.
  getStates @4 (keys :List(Data), forRead :Bool) -> (states :List(KeyStates), served :UInt32,
                                                     paged :List(Data));
  # Joins full states into the callee; answers once they are committed.
  putStates @5 (states :List(KeyStates)) -> ();

  # After a complete anti-entropy pass begun when the caller's last log
  # entry was `through`, the callee holds every write of the caller through
  # it: records that as its position in the caller's log (never lowers it).
  # `owned` as in pushDeltas.
  markRepaired @6 (through :UInt64) -> (applied :UInt64, owned :Data);

  # Answers true once every token's write (causal tokens of kv.capnp) is
  # visible on the callee, or false after `timeoutMs`.
  waitVisible @7 (tokens :List(Data), timeoutMs :UInt32) -> (visible :Bool);

  # Runs a client request as its coordinator, without forwarding it again:
  # the caller is a node of the callee's region that does not own the key.
  # `consistency` is the level the client asked for, already resolved.
  forward @8 (request :Kv.Request, consistency :Kv.Consistency) -> (reply :Kv.Reply);

  # The digests of the named keys (0 for a key with no state), in order:
  # a quorum read compares them before it reads states. `unsettled[i]`: the
  # callee does not count toward a quorum read of key i (it does not own the
  # key's segment, or has not been in step with its other owners since it
  # started or came to own it); absent from older nodes.
  keyDigests @9 (keys :List(Data)) -> (digests :List(UInt64), unsettled :List(Bool));

  # Paged transfer of a large OR-set. The page of the OR-set at `key` after
  # `after` (from the first element unless `hasAfter`), within the callee's
  # batch size; `page.hasThrough` false: it was the last.
  getSetPage @10 (key :Data, hasAfter :Bool, after :Data) -> (page :SetPage);
  # Joins one page into the callee (each page is a delta on its own);
  # answers once it is committed.
  putSetPage @11 (page :SetPage) -> ();
  # Ends a paged transfer: joins `context` (an encoded causal context, that
  # of the transfer's FIRST page) into the OR-set at `key`, removing no
  # element. Only after pages covering the whole range were put.
  putSetContext @12 (key :Data, context :Data) -> ();
}
