# The gossip protocol: SWIM membership between the nodes of one region, over
# UDP (cluster/membership.h has the protocol, cluster/gossip.h the driver).
#
# Packet format. Each UDP datagram carries one `Packet`, framed as every
# geokv message is (schema/framing.h): a format version byte, the flat
# Cap'n Proto message (segment table and words, unpacked) and a CRC-32C of
# both, so a flipped bit is a dropped packet rather than a wrong member. A
# packet is at most `max_packet_bytes` (default 1400, under a typical path
# MTU, so it is never fragmented); a single member entry too large for that
# still travels, alone in its packet. A node with gossip keys sends the
# framed packet sealed in an envelope with a MAC, a key id, the recipient
# and a stamp (cluster/gossip_auth.h; docs/formats.md).
#
# Every packet names its sender (`senderId`, `senderIncarnation`), is one of
# the kinds below, and piggybacks member entries in `updates`:
#   ping      "are you there?"; answered by an ack with the same `seq`.
#             `targetId`, when not 0, is the member the sender means, so a
#             different node now at that address does not answer for it.
#   ack       answers the ping (or relayed ping) numbered `seq`.
#   pingReq   asks the receiver to ping member `targetId` on the sender's
#             behalf and, if the target acks, to send the sender an ack
#             with the sender's `seq`. The receiver pings the address it
#             knows for `targetId` and ignores the request for a member it
#             does not know; `targetAddress` is informational.
#   join      asks for the receiver's member list; `updates` holds at
#             least the sender's own entry.
#   joinReply the receiver's member list, split over as many packets as it
#             takes; also sent unsolicited by the periodic push-pull sync.
#   nack      from the receiver of a pingReq whose own ping of the target
#             got no ack within its ping timeout: the pingReq's `seq`.
# A receiver merges `updates` first, then acts on the kind. Entries are
# merged by the SWIM rules (Supersedes in domain/member.h): the higher
# incarnation wins, and at equal incarnation alive < suspect < dead < left.
#
# Evolution rules are those of kv.capnp (docs/api.md): ordinals only grow;
# nothing is renumbered, retyped or reused. `gossipVersion` changes only for
# an incompatible change; a node drops packets of a version it does not
# speak, as it drops packets without `gossipMagic`.

@0xb662576965df6898;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("geokv::gossip");

# The version of this file that a node speaks.
const gossipVersion :UInt32 = 1;
# "GKVG": tells gossip packets from stray datagrams that happen to decode.
const gossipMagic :UInt32 = 0x474b5647;

enum MemberState {
  alive @0;
  suspect @1;
  dead @2;
  left @3;
}

# The peer API address a member advertises to the nodes of one other region.
struct PeerRoute {
  region @0 :Text;
  address @1 :Text;  # HOST:PORT
}

# What is known about one member; fields as in geokv::Member.
struct MemberUpdate {
  id @0 :UInt64;  # the member's replica id, never 0
  incarnation @1 :UInt64;
  state @2 :MemberState;
  name @3 :Text;
  region @4 :Text;
  gossipAddress @5 :Text;  # HOST:PORT, UDP
  clientAddress @6 :Text;  # HOST:PORT
  peerAddress @7 :Text;    # HOST:PORT, for nodes of the member's own region
  peerRoutes @8 :List(PeerRoute);
  # For a suspect entry: the member whose failed probe raised the
  # suspicion, 0 when not said (an older sender). Two different ones are
  # two witnesses (cluster/membership.h).
  suspectedBy @9 :UInt64;
}

struct Packet {
  magic @0 :UInt32;    # gossipMagic
  version @1 :UInt32;  # gossipVersion
  senderId @2 :UInt64;
  senderIncarnation @3 :UInt64;
  updates @4 :List(MemberUpdate);

  union {
    ping :group {
      seq @5 :UInt64;
      targetId @6 :UInt64;
    }
    ack :group {
      seq @7 :UInt64;
    }
    pingReq :group {
      seq @8 :UInt64;
      targetId @9 :UInt64;
      targetAddress @10 :Text;
    }
    join @11 :Void;
    joinReply @12 :Void;
    # From a member asked by a ping-req whose own ping of the target got no
    # ack within its ping timeout: a second witness of the target's silence
    # (cluster/membership.h). An older node drops the packet.
    nack :group {
      seq @13 :UInt64;  # the ping-req's seq
    }
  }
}
