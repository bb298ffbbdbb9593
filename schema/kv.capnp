# The client API of a geokv node.
#
# Every operation is a method taking one request struct and returning one
# reply struct; `batch` carries many of the same requests in one call. A
# reply's `outcome` says how that operation ended: errors about the request
# or the data (not found, wrong type, too large, invalid) are outcomes, never
# exceptions. A call fails with an exception only when the transport fails
# (DISCONNECTED) or the node sheds load (OVERLOADED).
#
# Keys, values and set elements are byte strings. Tokens and contexts are
# opaque bytes made by the server: pass them back unchanged.
#
# Evolution rules (docs/api.md): ordinals only grow; nothing is renumbered,
# retyped or reused; a new operation is a new method ordinal and a new member
# at the end of the Request and Reply unions.

@0xb199c91ca1b0df97;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("geokv::rpc");

# How one operation ended.
struct Outcome {
  code @0 :Code;
  # Empty when `code` is ok; otherwise says what was wrong, naming the
  # limit or the type involved.
  message @1 :Text;

  enum Code {
    ok @0;
    # The key holds no live value of the type asked for.
    notFound @1;
    # The key holds a live value of another type.
    wrongType @2;
    # A configured limit would be exceeded (key, value or element size,
    # multi-value siblings).
    tooLarge @3;
    # The request is malformed: an empty key, a token or context that does
    # not decode or belongs to another key, an empty element list, a
    # counter that would overflow.
    invalid @4;
    # Not now: the node is shutting down, refuses writes while its clock
    # is too far off its peers' (--max-clock-offset), or fewer owners of the
    # key are alive than the consistency level needs. Nothing was applied.
    # Retrying later may succeed.
    unavailable @5;
    # The node failed (a disk error, a stored row that does not decode).
    # Nothing of the operation was applied.
    internal @6;
    # A wait ran out: a read's tokens did not become visible here within
    # --token-wait, waitReplicated's regions did not all get the writes
    # within its timeout, or fewer owners than the consistency level needs
    # answered within --request-timeout. A write that timed out is durable
    # on at least one owner (its token is set) and will reach the others,
    # except a write forwarded to an owner that did not answer in time
    # (no token): it may or may not have been applied.
    timeout @7;
    # The connection has not logged in (the node has --users), or a login's
    # user and secret do not match. Nothing was applied.
    unauthenticated @8;
    # The connection's role does not allow the operation (a `read` user's
    # write, a `write` user's leave). Nothing was applied.
    permissionDenied @9;
  }
}

# The CRDT type of a value (values agree with the storage format).
enum Type {
  none @0;
  lww @1;
  mvRegister @2;
  orSet @3;
  counter @4;
}

# How many of a key's owners in this region (the replication factor N of
# them) an operation waits for. A write waits for W owners to have it
# durably, a read for R owners' answers, which it joins (repairing owners
# that were behind). R + W > N, as with quorum and quorum, means a read
# sees every write acknowledged before it in this region.
enum Consistency {
  default @0;  # the node's --consistency (quorum unless configured)
  one @1;      # 1
  quorum @2;   # N / 2 + 1
  all @3;      # N
}

# ---- requests -------------------------------------------------------------

# Reads accept `tokens` from earlier writes (anywhere): the read answers only
# once every named write is visible on this node, waiting up to the node's
# --token-wait for them to arrive, else `timeout`.
#
# Writes accept `tokens` too (a session's earlier writes): the write is
# ordered after them, its LWW stamp above theirs, without waiting for them
# (docs/api.md, Tokens). Nodes before this field ignore it.

# Sets an LWW register to `value`.
struct SetRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  value @1 :Data;  # up to max-value-bytes bytes; may be empty
  consistency @2 :Consistency;  # see Consistency
  tokens @3 :List(Data);  # of earlier writes this one is ordered after; may be empty
}

# Reads an LWW register; notFound when it was never set or is deleted.
struct GetRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  tokens @1 :List(Data);  # from earlier writes (see above); may be empty
  consistency @2 :Consistency;  # see Consistency
}

# Deletes an LWW register (a write: it wins or loses by timestamp), and the
# key's PN counter as this node has seen it (concurrent increments survive).
struct DelRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  consistency @1 :Consistency;  # see Consistency
  tokens @2 :List(Data);  # of earlier writes this one is ordered after; may be empty
}

# Writes a multi-value register sibling that supersedes the siblings
# `context` saw (empty `context`: supersedes nothing).
struct MvSetRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  value @1 :Data;  # up to max-value-bytes bytes; may be empty
  # From an MvReply of the same key, or empty.
  context @2 :Data;
  consistency @3 :Consistency;  # see Consistency
  tokens @4 :List(Data);  # of earlier writes this one is ordered after; may be empty
}

# Reads a multi-value register: its siblings and the context to write with.
struct MvGetRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  tokens @1 :List(Data);  # from earlier writes (see above); may be empty
  consistency @2 :Consistency;  # see Consistency
}

# Removes the siblings `context` saw from a multi-value register.
struct MvDelRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  # From an MvReply of the same key.
  context @1 :Data;
  consistency @2 :Consistency;  # see Consistency
  tokens @3 :List(Data);  # of earlier writes this one is ordered after; may be empty
}

# Adds elements to an add-wins OR-set. At least one element.
struct SAddRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  elements @1 :List(Data);  # at least one; each up to max-key-bytes bytes
  consistency @2 :Consistency;  # see Consistency
  tokens @3 :List(Data);  # of earlier writes this one is ordered after; may be empty
}

# Removes the elements this node has seen added. At least one element.
struct SRemRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  elements @1 :List(Data);  # at least one; each up to max-key-bytes bytes
  consistency @2 :Consistency;  # see Consistency
  tokens @3 :List(Data);  # of earlier writes this one is ordered after; may be empty
}

# Whether `element` is in the set.
struct SIsMemberRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  element @1 :Data;  # the element asked about
  tokens @2 :List(Data);  # from earlier writes (see above); may be empty
  consistency @3 :Consistency;  # see Consistency
}

# A page of the set's elements in byte order.
struct SMembersRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  from :union {
    # From the smallest element.
    start @1 :Void;
    # From the first element greater than this one (the last of a page).
    after @2 :Data;
  }
  # Most elements to return; 0 means the server's default page (1000).
  limit @3 :UInt32;
  tokens @4 :List(Data);  # from earlier writes (see above); may be empty
  consistency @5 :Consistency;  # see Consistency
}

# The number of elements in the set.
struct SCardRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  tokens @1 :List(Data);  # from earlier writes (see above); may be empty
  consistency @2 :Consistency;  # see Consistency
}

# Adds `delta` (negative to decrement) to a PN counter.
struct IncrByRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  delta @1 :Int64;  # negative to subtract; the sum must fit in 64 bits
  consistency @2 :Consistency;  # see Consistency
  tokens @3 :List(Data);  # of earlier writes this one is ordered after; may be empty
}

# Reads a PN counter; notFound when it was never changed.
struct CounterGetRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  tokens @1 :List(Data);  # from earlier writes (see above); may be empty
  consistency @2 :Consistency;  # see Consistency
}

# The types of the live values at a key.
struct TypeRequest {
  key @0 :Data;  # 1 to max-key-bytes bytes
  tokens @1 :List(Data);  # from earlier writes (see above); may be empty
  consistency @2 :Consistency;  # see Consistency
}

# ---- replies --------------------------------------------------------------

# Every write's reply.
struct WriteReply {
  outcome @0 :Outcome;  # how the operation ended
  # Names this write (when ok): pass it to reads to see at least this write.
  token @1 :Data;
}

# get
struct ValueReply {
  outcome @0 :Outcome;  # how the operation ended
  value @1 :Data;  # the value, when ok
}

# mvGet
struct MvReply {
  outcome @0 :Outcome;  # how the operation ended
  # The concurrent values, in a deterministic order; empty when notFound.
  values @1 :List(Data);
  # What this read saw; present even when notFound (the register may have
  # been cleared), so a write with it supersedes everything read.
  context @2 :Data;
}

# sIsMember
struct BoolReply {
  outcome @0 :Outcome;  # how the operation ended
  value @1 :Bool;  # whether the element is in the set
}

# sMembers
struct MembersReply {
  outcome @0 :Outcome;  # how the operation ended
  elements @1 :List(Data);  # the page, in byte order
  # More elements follow the last one: ask again with `from.after` set to it.
  more @2 :Bool;
}

# sCard
struct CountReply {
  outcome @0 :Outcome;  # how the operation ended
  count @1 :UInt64;  # the number of elements
}

# counterGet
struct CounterReply {
  outcome @0 :Outcome;  # how the operation ended
  value @1 :Int64;  # the counter's value, when ok
}

# type
struct TypeReply {
  outcome @0 :Outcome;  # how the operation ended
  # Empty when the key holds nothing; more than one only after concurrent
  # writes of different types in different regions.
  types @1 :List(Type);
}

# ---- batches --------------------------------------------------------------

# One operation of a batch.
struct Request {
  union {
    set @0 :SetRequest;
    get @1 :GetRequest;
    del @2 :DelRequest;
    mvSet @3 :MvSetRequest;
    mvGet @4 :MvGetRequest;
    mvDel @5 :MvDelRequest;
    sAdd @6 :SAddRequest;
    sRem @7 :SRemRequest;
    sIsMember @8 :SIsMemberRequest;
    sMembers @9 :SMembersRequest;
    sCard @10 :SCardRequest;
    incrBy @11 :IncrByRequest;
    counterGet @12 :CounterGetRequest;
    type @13 :TypeRequest;
  }
}

# The reply to the request at the same index.
struct Reply {
  union {
    write @0 :WriteReply;
    value @1 :ValueReply;
    mv @2 :MvReply;
    boolean @3 :BoolReply;
    members @4 :MembersReply;
    count @5 :CountReply;
    counter @6 :CounterReply;
    type @7 :TypeReply;
    # A request of a kind this server does not know (a newer client).
    unknown @8 :Outcome;
  }
}

# Who answers.
struct NodeInfo {
  # The node's name (--node-id).
  name @0 :Text;
  region @1 :Text;  # the region this node belongs to (--region)
  # The random replica id that names this node's writes in dots and tokens.
  replicaId @2 :UInt64;
  # The geokv version, e.g. "0.1.0".
  version @3 :Text;
  # The client API version this node serves (1 for this file).
  apiVersion @4 :UInt32;
  # A digest of the node's whole state (of its anti-entropy tree): two
  # nodes holding the same data show the same digest.
  stateDigest @5 :UInt64;
  # The sequence of the last entry of this node's replication log.
  lastSeq @6 :UInt64;
  # The other regions' nodes this node replicates with.
  peers @7 :List(PeerInfo);
  # This node's clock minus the median of its peers' clocks (and its own),
  # estimated from heartbeats.
  clockOffsetMs @8 :Int64;
  # Why client writes are refused now; empty when they are accepted.
  writesRefused @9 :Text;
  # Keys with state on this node (an exact count: it reads every key).
  keyCount @10 :UInt64;
  # Writes acknowledged while one of their owners was away, whose log
  # entries are kept for it: in all, since replayed to their owner, left to
  # anti-entropy (past --max-backlog), and waiting now.
  hintsStored @11 :UInt64;
  hintsReplayed @12 :UInt64;
  hintsDropped @13 :UInt64;
  hintsPending @14 :UInt64;
  # Requests this node sent on to an owner of their key, and quorum reads
  # that found owners differing and repaired them.
  forwarded @15 :UInt64;
  readRepairs @16 :UInt64;
  # The connected peers whose clock offset is measured, on which
  # clockOffsetMs rests. 0: no samples yet, and clockOffsetMs (then 0) says
  # nothing about this node's clock.
  clockSamples @17 :UInt32;
  # Segments this node owns but is still catching up on (since it started
  # or came to own them): quorum reads do not count it for their keys
  # until it has been in step with their other owners. 0 when settled.
  unsettledSegments @18 :UInt32;
}

struct PeerInfo {
  region @0 :Text;
  address @1 :Text;     # as configured (--peers)
  name @2 :Text;        # the peer's --node-id, once connected
  connected @3 :Bool;
  # The peer is being brought up to date by anti-entropy instead of the
  # log (it fell behind by more than --max-backlog, or entries it needs
  # were trimmed).
  repairing @4 :Bool;
  acked @5 :UInt64;          # the peer's durable position in this node's log
  backlogBytes @6 :UInt64;   # estimated log bytes the peer has not acknowledged
  clockOffsetMs @7 :Int64;   # the peer's clock minus this node's
  # Whether clockOffsetMs is measured; false: no sample of the peer's clock
  # yet (the offset reads 0).
  clockSampled @8 :Bool;
}

struct WaitReplicatedRequest {
  # Causal tokens of writes (from WriteReply.token), made in any region.
  tokens @0 :List(Data);
  # The regions that must have them, this node's own among them or not;
  # empty: every region this node replicates with, and its own.
  regions @1 :List(Text);
  # How long to wait; 0: the node's --token-wait.
  timeoutMs @2 :UInt32;
}

struct WaitReplicatedReply {
  # ok once every named region has every token's write; timeout when the
  # wait ran out; invalid for a bad token or a region this node does not
  # know.
  outcome @0 :Outcome;
  # The regions that did not have them in time (outcome timeout).
  missing @1 :List(Text);
}

enum MemberState {
  alive @0;
  suspect @1;  # missed its probes; dead unless it answers in time
  dead @2;     # declared dead; still an owner (it gets hinted writes)
  left @3;     # left the cluster; owns nothing
}

# A node of the cluster as this node sees it.
struct MemberInfo {
  name @0 :Text;
  region @1 :Text;
  replicaId @2 :UInt64;
  state @3 :MemberState;
  incarnation @4 :UInt64;
  gossipAddress @5 :Text;  # empty for members of other regions
  clientAddress @6 :Text;
  peerAddress @7 :Text;    # the address this node uses to reach it
  # Of its region's segments, the fraction it owns (as one of N owners).
  ownedShare @8 :Float64;
  # Of its region's hash space, the fraction where it is the first owner.
  primaryShare @9 :Float64;
}

struct ClusterInfo {
  replicationFactor @0 :UInt32;  # N: owners per key in each region
  vnodes @1 :UInt32;             # ring tokens per node
  members @2 :List(MemberInfo);  # every region's, this node's first
  # Members this node's gossip declared dead since it started.
  failureDetections @3 :UInt64;
}

struct OwnersRequest {
  key @0 :Data;
}

struct OwnersReply {
  outcome @0 :Outcome;
  segment @1 :UInt32;  # the key's segment (docs/formats.md)
  regions @2 :List(RegionOwners);
}

struct RegionOwners {
  region @0 :Text;
  owners @1 :List(MemberInfo);  # in preference order
}

# What a connection to a node with users (--users) is given before it logs
# in: the bootstrap capability is a Login and nothing else, so every other
# call fails until `login` hands out a GeoKv. A connection whose client
# certificate names a user, and every connection to a node without users,
# is given a GeoKv at once (a GeoKv is a Login too, to change users).
interface Login {
  # `unauthenticated` (no `kv`) when the user is unknown or the secret is
  # wrong; `invalid` when the node has no users; `unavailable` when too many
  # logins are being checked at once. `role` is "read", "write" or "admin"
  # (docs/api.md, Users and roles).
  login @0 (user :Text, secret :Text) -> (outcome :Outcome, role :Text, kv :GeoKv);
}

interface GeoKv extends(Login) {
  set @0 SetRequest -> WriteReply;
  get @1 GetRequest -> ValueReply;
  del @2 DelRequest -> WriteReply;
  mvSet @3 MvSetRequest -> WriteReply;
  mvGet @4 MvGetRequest -> MvReply;
  mvDel @5 MvDelRequest -> WriteReply;
  sAdd @6 SAddRequest -> WriteReply;
  sRem @7 SRemRequest -> WriteReply;
  sIsMember @8 SIsMemberRequest -> BoolReply;
  sMembers @9 SMembersRequest -> MembersReply;
  sCard @10 SCardRequest -> CountReply;
  incrBy @11 IncrByRequest -> WriteReply;
  counterGet @12 CounterGetRequest -> CounterReply;
  type @13 TypeRequest -> TypeReply;

  # Runs the requests and answers them in order. A batch is not a
  # transaction: each write is atomic on its own. The batch's writes are
  # committed together (one group), and its reads run after them, so they
  # see them.
  batch @14 (requests :List(Request)) -> (replies :List(Reply));

  info @15 () -> NodeInfo;

  # Answers once the named regions have the writes the tokens name (each
  # region's node reached through this node's peer links).
  waitReplicated @16 WaitReplicatedRequest -> WaitReplicatedReply;

  # The members of every region this node knows, with their states.
  cluster @17 () -> ClusterInfo;

  # Which nodes own a key, in every region this node knows.
  owners @18 OwnersRequest -> OwnersReply;

  # Makes this node leave the cluster for good: it announces it through
  # gossip, hands every key it holds over to the key's other owners, waits
  # until they hold its whole log, and exits. The answer comes at once;
  # `unavailable` when the node runs no gossip (a one-node region).
  leave @19 () -> (outcome :Outcome);

  # Removes a dead member of this node's region for good, on the operator's
  # word (a node that died and will not come back): gossip marks it left,
  # every ring drops it, and its keys get their new owners from the nodes
  # that hold them. `member` is its name or its replica id in 16 hex
  # digits. `notFound` when this region has no such member, `invalid` when
  # it is not dead (a running node leaves instead), `unavailable` when this
  # node runs no gossip. If the member was in fact running, it refutes and
  # comes back alive.
  remove @20 (member :Text) -> (outcome :Outcome);
}
