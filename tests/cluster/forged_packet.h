// Gossip packets made by hand and sent from a socket of their own, as an
// outsider who read schema/gossip.capnp would: well formed and framed, and
// sealed by no one.

#ifndef GEOKV_TESTS_CLUSTER_FORGED_PACKET_H_
#define GEOKV_TESTS_CLUSTER_FORGED_PACKET_H_

#include <capnp/message.h>

#include <boost/asio/ip/udp.hpp>

#include <cstdint>
#include <string>

#include "domain/member.h"
#include "schema/framing.h"
#include "schema/gossip.capnp.h"

namespace geokv {

// A framed ping from `sender` with `magic` and `version`, carrying the
// sender's own entry (alive, incarnation 0): a receiver that takes it
// learns the sender as a member.
inline std::string ForgedPacket(uint32_t magic, uint32_t version, const Member& sender) {
  capnp::MallocMessageBuilder message;
  auto p = message.initRoot<gossip::Packet>();
  p.setMagic(magic);
  p.setVersion(version);
  p.setSenderId(sender.id);
  p.initPing().setSeq(1);
  auto u = p.initUpdates(1)[0];
  u.setId(sender.id);
  if (!sender.name.empty()) u.setName(sender.name.c_str());
  u.setRegion(sender.region.c_str());
  u.setGossipAddress(sender.gossip_address.c_str());
  return FrameMessage(message);
}

// The same with the magic and version this build speaks.
inline std::string ForgedPacket(const Member& sender) {
  return ForgedPacket(gossip::GOSSIP_MAGIC, gossip::GOSSIP_VERSION, sender);
}

// Sends `bytes` to `address` (127.0.0.1:PORT) from a socket of its own.
inline void SendDatagram(const std::string& address, const std::string& bytes) {
  boost::asio::io_context io;
  boost::asio::ip::udp::socket socket(
      io, boost::asio::ip::udp::endpoint(boost::asio::ip::udp::v4(), 0));
  const auto port = static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
  socket.send_to(boost::asio::buffer(bytes),
                 boost::asio::ip::udp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
}

}  // namespace geokv

#endif  // GEOKV_TESTS_CLUSTER_FORGED_PACKET_H_
