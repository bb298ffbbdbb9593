#include "crdt/codec.h"

#include <capnp/message.h>

#include <type_traits>

#include "schema/framing.h"

namespace geokv {
namespace {

std::string ToString(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

capnp::Data::Reader AsData(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(s.data()), s.size());
}

void WriteLww(const LwwRegister& r, schema::LwwRegister::Builder out) {
  WriteTimestamp(r.timestamp(), out.initTimestamp());
  out.setNode(r.node());
  if (r.value()) {
    out.setValue(AsData(*r.value()));
  } else {
    out.setDeleted();
  }
}

StatusOr<LwwRegister> ReadLww(schema::LwwRegister::Reader in) {
  std::optional<std::string> value;
  if (in.isValue()) value = ToString(in.getValue());
  LwwRegister r(ReadTimestamp(in.getTimestamp()), in.getNode(), std::move(value));
  if (!r.timestamp().IsValid()) {
    return Status::Corruption("lww register: stamp " + DescribeStamp(r.timestamp()) +
                              " has a wall part above the maximum " +
                              std::to_string(kMaxHlcWallMs) + " ms");
  }
  if (r.timestamp().IsZero() && r.node() == 0 && r.value()) {
    return Status::Corruption("lww register: value without a write stamp");
  }
  return r;
}

void WriteMv(const MvRegister& r, schema::MvRegister::Builder out) {
  auto siblings = out.initSiblings(static_cast<unsigned>(r.entries().size()));
  unsigned i = 0;
  for (const auto& [dot, value] : r.entries()) {
    auto s = siblings[i++];
    s.initDot().setReplica(dot.replica);
    s.getDot().setCounter(dot.counter);
    s.setValue(AsData(value));
  }
  WriteContext(r.context(), out.initContext());
}

StatusOr<MvRegister> ReadMv(schema::MvRegister::Reader in) {
  MvRegister::Entries entries;
  for (auto s : in.getSiblings()) {
    Dot dot{s.getDot().getReplica(), s.getDot().getCounter()};
    if (dot.counter == 0 || dot.counter == kMaxDotCounter) {
      return Status::Corruption("mv register: dot counter out of range");
    }
    if (!entries.empty() && !(entries.rbegin()->first < dot)) {
      return Status::Corruption("mv register: siblings not strictly sorted");
    }
    entries.emplace_hint(entries.end(), dot, ToString(s.getValue()));
  }
  GEOKV_ASSIGN_OR_RETURN(CausalContext ctx, ReadContext(in.getContext()));
  for (const auto& [dot, value] : entries) {
    if (!ctx.Contains(dot)) return Status::Corruption("mv register: sibling outside its context");
  }
  return MvRegister(std::move(entries), std::move(ctx));
}

void WriteSet(const OrSet& s, schema::OrSet::Builder out) {
  auto entries = out.initEntries(static_cast<unsigned>(s.entries().size()));
  unsigned i = 0;
  for (const auto& [element, dots] : s.entries()) {
    auto e = entries[i++];
    e.setElement(AsData(element));
    WriteDots(dots, e.initDots(static_cast<unsigned>(dots.size())));
  }
  WriteContext(s.context(), out.initContext());
}

StatusOr<OrSet> ReadSet(schema::OrSet::Reader in) {
  OrSet::Entries entries;
  DotSet all_dots;  // a dot belongs to one element only
  for (auto e : in.getEntries()) {
    std::string element = ToString(e.getElement());
    if (!entries.empty() && !(entries.rbegin()->first < element)) {
      return Status::Corruption("or-set: elements not strictly sorted");
    }
    GEOKV_ASSIGN_OR_RETURN(DotSet dots, ReadDots(e.getDots()));
    if (dots.empty()) return Status::Corruption("or-set: element without dots");
    for (const Dot& d : dots) {
      if (!all_dots.insert(d).second) return Status::Corruption("or-set: dot under two elements");
    }
    entries.emplace_hint(entries.end(), std::move(element), std::move(dots));
  }
  GEOKV_ASSIGN_OR_RETURN(CausalContext ctx, ReadContext(in.getContext()));
  for (const auto& [element, dots] : entries) {
    for (const Dot& d : dots) {
      if (!ctx.Contains(d)) return Status::Corruption("or-set: dot outside its context");
    }
  }
  return OrSet(std::move(entries), std::move(ctx));
}

bool HasFloors(const PnCounter& c) {
  for (const auto& [replica, totals] : c.entries()) {
    if (totals.HasFloors()) return true;
  }
  return false;
}

// Writes a counter's entries in either form; the reset form adds the floors.
template <typename CounterBuilder>
void WriteCounter(const PnCounter& c, CounterBuilder out) {
  auto entries = out.initEntries(static_cast<unsigned>(c.entries().size()));
  unsigned i = 0;
  for (const auto& [replica, totals] : c.entries()) {
    auto e = entries[i++];
    e.setReplica(replica);
    e.setAdded(totals.added);
    e.setSubtracted(totals.subtracted);
    if constexpr (std::is_same_v<CounterBuilder, schema::ResetPnCounter::Builder>) {
      e.setResetAdded(totals.reset_added);
      e.setResetSubtracted(totals.reset_subtracted);
    }
  }
}

// Reads either form of a counter's entries; the reset form must hold a floor.
template <typename EntryList>
StatusOr<PnCounter> ReadCounterEntries(EntryList in, bool reset_form) {
  PnCounter::Entries entries;
  bool floors = false;
  for (auto e : in) {
    if (!entries.empty() && entries.rbegin()->first >= e.getReplica()) {
      return Status::Corruption("counter: replicas not strictly sorted");
    }
    PnCounter::Totals t{e.getAdded(), e.getSubtracted()};
    if constexpr (std::is_same_v<EntryList,
                                 capnp::List<schema::ResetPnCounter::Entry>::Reader>) {
      t.reset_added = e.getResetAdded();
      t.reset_subtracted = e.getResetSubtracted();
    }
    if (t.added == 0 && t.subtracted == 0) {
      return Status::Corruption("counter: entry without totals");
    }
    if (t.reset_added > t.added || t.reset_subtracted > t.subtracted) {
      return Status::Corruption("counter: reset floor above its total");
    }
    floors = floors || t.HasFloors();
    entries.emplace_hint(entries.end(), e.getReplica(), t);
  }
  if (reset_form && !floors) return Status::Corruption("counter: reset form without floors");
  return PnCounter(std::move(entries));
}

}  // namespace

void WriteTimestamp(HlcTimestamp ts, schema::HlcTimestamp::Builder out) {
  out.setWallMs(ts.wall_ms);
  out.setLogical(ts.logical);
}

HlcTimestamp ReadTimestamp(schema::HlcTimestamp::Reader in) {
  return HlcTimestamp{in.getWallMs(), in.getLogical()};
}

void WriteDots(const DotSet& dots, capnp::List<schema::Dot>::Builder out) {
  unsigned i = 0;
  for (const Dot& d : dots) {
    out[i].setReplica(d.replica);
    out[i].setCounter(d.counter);
    ++i;
  }
}

StatusOr<DotSet> ReadDots(capnp::List<schema::Dot>::Reader in) {
  DotSet dots;
  for (auto d : in) {
    Dot dot{d.getReplica(), d.getCounter()};
    if (dot.counter == 0 || dot.counter == kMaxDotCounter) {
      return Status::Corruption("dot counter out of range");
    }
    if (!dots.empty() && !(*dots.rbegin() < dot)) {
      return Status::Corruption("dots not strictly sorted");
    }
    dots.insert(dots.end(), dot);
  }
  return dots;
}

void WriteContext(const CausalContext& ctx, schema::CausalContext::Builder out) {
  const CausalContext::Parts parts = ctx.Encoded();
  auto vv = out.initVersionVector(static_cast<unsigned>(parts.vv.size()));
  unsigned i = 0;
  for (const auto& [replica, counter] : parts.vv) {
    vv[i].setReplica(replica);
    vv[i].setCounter(counter);
    ++i;
  }
  WriteDots(parts.cloud, out.initCloud(static_cast<unsigned>(parts.cloud.size())));
  if (parts.ranges.empty()) return;
  auto ranges = out.initRanges(static_cast<unsigned>(parts.ranges.size()));
  for (i = 0; i < parts.ranges.size(); ++i) {
    ranges[i].setReplica(parts.ranges[i].replica);
    ranges[i].setFirst(parts.ranges[i].first);
    ranges[i].setLast(parts.ranges[i].last);
  }
}

StatusOr<CausalContext> ReadContext(schema::CausalContext::Reader in) {
  std::map<ReplicaId, uint64_t> vv;
  for (auto e : in.getVersionVector()) {
    if (!vv.empty() && vv.rbegin()->first >= e.getReplica()) {
      return Status::Corruption("version vector not strictly sorted");
    }
    vv.emplace_hint(vv.end(), e.getReplica(), e.getCounter());
  }
  GEOKV_ASSIGN_OR_RETURN(DotSet cloud, ReadDots(in.getCloud()));
  std::vector<DotRange> ranges;
  ranges.reserve(in.getRanges().size());
  for (auto r : in.getRanges()) {
    ranges.push_back(DotRange{r.getReplica(), r.getFirst(), r.getLast()});
  }
  return CausalContext::FromParts(std::move(vv), std::move(cloud), ranges);
}

void WriteCrdt(const Crdt& value, schema::Value::Builder out) {
  std::visit(
      [&out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, LwwRegister>) {
          WriteLww(v, out.initLww());
        } else if constexpr (std::is_same_v<T, MvRegister>) {
          WriteMv(v, out.initMvRegister());
        } else if constexpr (std::is_same_v<T, OrSet>) {
          WriteSet(v, out.initOrSet());
        } else {
          static_assert(std::is_same_v<T, PnCounter>);
          if (HasFloors(v)) {
            WriteCounter(v, out.initResetCounter());
          } else {
            WriteCounter(v, out.initCounter());
          }
        }
      },
      value);
}

StatusOr<Crdt> ReadCrdt(schema::Value::Reader in) {
  switch (in.which()) {
    case schema::Value::LWW: {
      GEOKV_ASSIGN_OR_RETURN(LwwRegister r, ReadLww(in.getLww()));
      return Crdt(std::in_place_type<LwwRegister>, std::move(r));
    }
    case schema::Value::MV_REGISTER: {
      GEOKV_ASSIGN_OR_RETURN(MvRegister r, ReadMv(in.getMvRegister()));
      return Crdt(std::in_place_type<MvRegister>, std::move(r));
    }
    case schema::Value::OR_SET: {
      GEOKV_ASSIGN_OR_RETURN(OrSet s, ReadSet(in.getOrSet()));
      return Crdt(std::in_place_type<OrSet>, std::move(s));
    }
    case schema::Value::COUNTER: {
      GEOKV_ASSIGN_OR_RETURN(PnCounter c,
                             ReadCounterEntries(in.getCounter().getEntries(), false));
      return Crdt(std::in_place_type<PnCounter>, std::move(c));
    }
    case schema::Value::RESET_COUNTER: {
      GEOKV_ASSIGN_OR_RETURN(PnCounter c,
                             ReadCounterEntries(in.getResetCounter().getEntries(), true));
      return Crdt(std::in_place_type<PnCounter>, std::move(c));
    }
  }
  return Status::Corruption("unknown value type " + std::to_string(static_cast<int>(in.which())));
}

std::string EncodeCrdt(const Crdt& value) {
  capnp::MallocMessageBuilder message(kFirstSegmentWords);
  WriteCrdt(value, message.initRoot<schema::Value>());
  return FrameMessage(message);
}

StatusOr<Crdt> DecodeCrdt(std::string_view bytes) {
  std::optional<Crdt> out;
  GEOKV_RETURN_IF_ERROR(ReadFramed(bytes, [&out](capnp::MessageReader& m) {
    GEOKV_ASSIGN_OR_RETURN(out, ReadCrdt(m.getRoot<schema::Value>()));
    return Status::OK();
  }));
  return std::move(*out);
}

std::string EncodeContext(const CausalContext& ctx) {
  capnp::MallocMessageBuilder message(kFirstSegmentWords);
  WriteContext(ctx, message.initRoot<schema::CausalContext>());
  return FrameMessage(message);
}

StatusOr<CausalContext> DecodeContext(std::string_view bytes) {
  std::optional<CausalContext> out;
  GEOKV_RETURN_IF_ERROR(ReadFramed(bytes, [&out](capnp::MessageReader& m) {
    GEOKV_ASSIGN_OR_RETURN(out, ReadContext(m.getRoot<schema::CausalContext>()));
    return Status::OK();
  }));
  return std::move(*out);
}

}  // namespace geokv
