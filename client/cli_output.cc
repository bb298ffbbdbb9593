#include "client/cli_output.h"

#include <cstdio>
#include <iostream>
#include <string>

#include "util/json.h"

namespace geokv {

bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
    if (n == 9 || (n > 0 && i + n >= s.size())) return false;
    for (size_t k = 1; k <= n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n + 1;
  }
  return true;
}

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void PrintInfo(rpc::NodeInfo::Reader reply, bool json) {
  JsonObject j;
  j.Text("name", reply.getName().cStr());
  j.Text("region", reply.getRegion().cStr());
  j.Text("replica_id", Hex64(reply.getReplicaId()));
  j.Text("version", reply.getVersion().cStr());
  j.Unsigned("api_version", reply.getApiVersion());
  j.Text("state_digest", Hex64(reply.getStateDigest()));
  j.Unsigned("last_seq", reply.getLastSeq());
  // Without samples there is no offset to show: null, and "no samples".
  const bool sampled = reply.getClockSamples() > 0;
  if (sampled) {
    j.Number("clock_offset_ms", reply.getClockOffsetMs());
  } else {
    j.Raw("clock_offset_ms", "null");
  }
  j.Unsigned("clock_samples", reply.getClockSamples());
  j.Text("writes_refused", reply.getWritesRefused().cStr());
  j.Unsigned("key_count", reply.getKeyCount());
  j.Unsigned("hints_stored", reply.getHintsStored());
  j.Unsigned("hints_replayed", reply.getHintsReplayed());
  j.Unsigned("hints_dropped", reply.getHintsDropped());
  j.Unsigned("hints_pending", reply.getHintsPending());
  j.Unsigned("forwarded", reply.getForwarded());
  j.Unsigned("read_repairs", reply.getReadRepairs());
  j.Unsigned("unsettled_segments", reply.getUnsettledSegments());
  std::string peers_json = "[";
  std::string peers_text;
  for (auto p : reply.getPeers()) {
    JsonObject pj;
    pj.Text("region", p.getRegion().cStr());
    pj.Text("address", p.getAddress().cStr());
    pj.Text("name", p.getName().cStr());
    pj.Bool("connected", p.getConnected());
    pj.Bool("repairing", p.getRepairing());
    pj.Unsigned("acked", p.getAcked());
    pj.Unsigned("backlog_bytes", p.getBacklogBytes());
    if (p.getClockSampled()) {
      pj.Number("clock_offset_ms", p.getClockOffsetMs());
    } else {
      pj.Raw("clock_offset_ms", "null");
    }
    if (peers_json.size() > 1) peers_json += ",";
    peers_json += pj.str();
    peers_text += std::string("peer: ") + p.getRegion().cStr() + " " + p.getAddress().cStr() +
                  (p.getConnected() ? " connected" : " disconnected") +
                  (p.getRepairing() ? " repairing" : "") +
                  " acked=" + std::to_string(p.getAcked()) +
                  " backlog_bytes=" + std::to_string(p.getBacklogBytes()) +
                  " clock_offset_ms=" +
                  (p.getClockSampled() ? std::to_string(p.getClockOffsetMs())
                                       : std::string("no-samples")) +
                  "\n";
  }
  j.Raw("peers", peers_json + "]");
  if (json) {
    std::cout << j.str() << "\n";
  } else {
    std::cout << "name: " << reply.getName().cStr() << "\nregion: " << reply.getRegion().cStr()
              << "\nreplica_id: " << Hex64(reply.getReplicaId())
              << "\nversion: " << reply.getVersion().cStr()
              << "\napi_version: " << reply.getApiVersion()
              << "\nstate_digest: " << Hex64(reply.getStateDigest())
              << "\nlast_seq: " << reply.getLastSeq()
              << "\nclock_offset_ms: "
              << (sampled ? std::to_string(reply.getClockOffsetMs())
                          : std::string("no samples (no peer's clock measured yet)"))
              << "\nkey_count: " << reply.getKeyCount()
              << "\nhints: stored=" << reply.getHintsStored()
              << " replayed=" << reply.getHintsReplayed()
              << " dropped=" << reply.getHintsDropped()
              << " pending=" << reply.getHintsPending()
              << "\nforwarded: " << reply.getForwarded()
              << "\nread_repairs: " << reply.getReadRepairs()
              << "\nunsettled_segments: " << reply.getUnsettledSegments() << "\n";
    if (reply.getWritesRefused().size() > 0) {
      std::cout << "writes_refused: " << reply.getWritesRefused().cStr() << "\n";
    }
    std::cout << peers_text;
  }
}

}  // namespace geokv
