#include "util/packed_stream.h"

#include <capnp/message.h>
#include <capnp/serialize-packed.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/io.h>
#include <kj/vector.h>

#include <zstd.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "schema/replication.capnp.h"
#include "util/zstd_stream.h"

namespace geokv {
namespace {

using Bytes = std::vector<kj::byte>;

// Whole words: runs of zero words, dense words, sparse ones, as Cap'n
// Proto messages have them.
Bytes RandomWords(std::mt19937_64& rng, size_t words) {
  Bytes out(words * 8, 0);
  size_t w = 0;
  while (w < words) {
    const size_t run = std::min<size_t>(words - w, 1 + rng() % 300);
    const int kind = static_cast<int>(rng() % 3);
    for (size_t i = w; i < w + run; ++i) {
      for (size_t b = 0; b < 8; ++b) {
        kj::byte v = static_cast<kj::byte>(rng());
        if (kind == 0) v = 0;                      // zero words
        if (kind == 1 && v == 0) v = 1;            // dense words
        if (kind == 2 && rng() % 4 != 0) v = 0;    // sparse words
        out[i * 8 + b] = v;
      }
    }
    w += run;
  }
  return out;
}

// A DeltaBatch as a node ships it: the peer API's usual message.
// `first` numbers its positions and keys.
kj::Array<capnp::word> BatchMessage(unsigned first = 41) {
  capnp::MallocMessageBuilder message;
  auto batch = message.initRoot<peer::DeltaBatch>();
  batch.setOrigin(0x8f3a5c7d1e2b4a69);
  batch.setFrom(first);
  batch.setThrough(first + 2);
  auto entries = batch.initEntries(3);
  for (unsigned i = 0; i < 3; ++i) {
    std::string key = "key-" + std::to_string(first + i);
    // A framed Value is mostly the zero bytes of pointers and small ints.
    std::string value(100 + i, '\0');
    for (size_t b = 0; b < value.size(); b += 6) value[b] = static_cast<char>('a' + i);
    entries[i].setSeq(first + i);
    entries[i].setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(key.data()),
                                          key.size()));
    entries[i].setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(value.data()),
                                            value.size()));
    entries[i].setTimestampMs(1796613361152 + i);
  }
  return capnp::messageToFlatArray(message);
}

class PackedStreamTest : public ::testing::Test {
 protected:
  PackedStreamTest() : io_(kj::setupAsyncIo()) {}
  ~PackedStreamTest() noexcept override {}

  kj::WaitScope& ws() { return io_.waitScope; }

  // Writes `chunks` in order into `writer` while reading `total` bytes
  // from `reader` in reads of random sizes (at least one byte each);
  // returns what was read.
  Bytes Carry(kj::AsyncIoStream& writer, kj::AsyncIoStream& reader,
              const std::vector<Bytes>& chunks, size_t total, std::mt19937_64& rng) {
    kj::Promise<void> writes = kj::READY_NOW;
    for (const Bytes& c : chunks) {
      writes = writes.then([&writer, &c] { return writer.write(c.data(), c.size()); });
    }
    writes = writes.eagerlyEvaluate(nullptr);
    Bytes got(total);
    size_t done = 0;
    while (done < total) {
      const size_t max = std::min<size_t>(total - done, 1 + rng() % 5000);
      const size_t min = 1 + rng() % max;
      const size_t n = reader.tryRead(got.data() + done, min, max).wait(ws());
      EXPECT_GE(n, min);
      EXPECT_LE(n, max);
      if (n == 0) break;
      done += n;
    }
    writes.wait(ws());
    got.resize(done);
    return got;
  }

  kj::AsyncIoContext io_;
};

TEST_F(PackedStreamTest, CapnProtosPackedReaderReadsWhatPackWordsWrites) {
  kj::Array<capnp::word> flat = BatchMessage();
  kj::Vector<kj::byte> packed;
  PackWords(flat.asBytes(), packed);
  EXPECT_LT(packed.size(), flat.asBytes().size() * 3 / 4);

  kj::ArrayInputStream in(packed.asPtr());
  capnp::PackedMessageReader reader(in);
  auto batch = reader.getRoot<peer::DeltaBatch>();
  EXPECT_EQ(batch.getOrigin(), 0x8f3a5c7d1e2b4a69u);
  EXPECT_EQ(batch.getThrough(), 43u);
  ASSERT_EQ(batch.getEntries().size(), 3u);
  EXPECT_EQ(batch.getEntries()[2].getValue().size(), 102u);
  EXPECT_EQ(batch.getEntries()[2].getValue()[96], 'c');
  EXPECT_EQ(batch.getEntries()[2].getValue()[97], 0);
  EXPECT_EQ(batch.getEntries()[1].getTimestampMs(), 1796613361153u);
}

TEST_F(PackedStreamTest, AnAcceptorUnpacksWhatCapnProtosPackedWriterWrites) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
  capnp::MallocMessageBuilder message;
  message.initRoot<peer::DeltaBatch>().setOrigin(7);
  kj::VectorOutputStream out;
  out.write(PackedStream::kPreamble, sizeof(PackedStream::kPreamble));
  capnp::writePackedMessage(out, message);
  Bytes sent(out.getArray().begin(), out.getArray().end());
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(message);

  std::mt19937_64 rng(1);
  Bytes got = Carry(*pipe.ends[0], acceptor, {sent}, flat.asBytes().size(), rng);
  EXPECT_TRUE(acceptor.packed());
  EXPECT_EQ(got, Bytes(flat.asBytes().begin(), flat.asBytes().end()));
}

TEST_F(PackedStreamTest, WordsGoThroughAConnectorAndAnAcceptorIntact) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    auto pipe = kj::newTwoWayPipe();
    PackedStream connector(kj::mv(pipe.ends[0]), PackedStream::Side::kConnector);
    PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
    std::vector<Bytes> chunks;
    Bytes all;
    for (int i = 0; i < 10; ++i) {
      chunks.push_back(RandomWords(rng, rng() % 2000));
      all.insert(all.end(), chunks.back().begin(), chunks.back().end());
    }
    Bytes got = Carry(connector, acceptor, chunks, all.size(), rng);
    EXPECT_EQ(got, all) << "seed " << seed;
    EXPECT_TRUE(acceptor.packed());
    // And back: the acceptor packs what it writes.
    Bytes back = RandomWords(rng, 700);
    EXPECT_EQ(Carry(acceptor, connector, {back}, back.size(), rng), back) << "seed " << seed;
  }
}

TEST_F(PackedStreamTest, PackedBytesOnTheWireAreFewerForAPeerMessage) {
  // What crosses the pipe, counted at the far end of a connector.
  auto pipe = kj::newTwoWayPipe();
  PackedStream connector(kj::mv(pipe.ends[0]), PackedStream::Side::kConnector);
  kj::Array<capnp::word> flat = BatchMessage();
  auto write = connector.write(flat.asBytes().begin(), flat.asBytes().size());
  Bytes wire(flat.asBytes().size() + 64);
  size_t n = pipe.ends[1]->tryRead(wire.data(), 1, wire.size()).wait(ws());
  write.wait(ws());
  ASSERT_GT(n, sizeof(PackedStream::kPreamble));
  EXPECT_EQ(std::memcmp(wire.data(), PackedStream::kPreamble, 8), 0);
  EXPECT_LT(n, flat.asBytes().size() * 3 / 4);
}

TEST_F(PackedStreamTest, AnAcceptorPassesAPlainStreamThroughEvenWhenItsFirstWordComesInPieces) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
  std::mt19937_64 rng(3);
  Bytes all = RandomWords(rng, 500);
  all[0] = 0;  // a plain message's first word: its segment count less one
  std::vector<Bytes> chunks = {Bytes(all.begin(), all.begin() + 3),
                               Bytes(all.begin() + 3, all.begin() + 5),
                               Bytes(all.begin() + 5, all.end())};
  Bytes got = Carry(*pipe.ends[0], acceptor, chunks, all.size(), rng);
  EXPECT_FALSE(acceptor.packed());
  EXPECT_EQ(got, all);
  EXPECT_EQ(acceptor.received(), all.size());
  // It answers plain too.
  Bytes back = RandomWords(rng, 40);
  EXPECT_EQ(Carry(acceptor, *pipe.ends[0], {back}, back.size(), rng), back);
}

TEST_F(PackedStreamTest, AStreamThatEndsWithinItsFirstWordIsPlainAndShort) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
  auto write = pipe.ends[0]
                   ->write("GKV", 3)
                   .then([&] { pipe.ends[0]->shutdownWrite(); })
                   .eagerlyEvaluate(nullptr);
  char buffer[16];
  size_t n = acceptor.tryRead(buffer, 8, sizeof(buffer)).wait(ws());
  write.wait(ws());
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(std::string(buffer, 3), "GKV");
  EXPECT_FALSE(acceptor.packed());
}

TEST_F(PackedStreamTest, ATruncatedPackedStreamEndsInAShortRead) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
  // The preamble, one whole word (tag 0x01, one byte), then a tag naming
  // eight bytes of which three come before the end.
  Bytes sent(PackedStream::kPreamble, PackedStream::kPreamble + 8);
  for (int b : {0x01, 0x2a, 0xff, 0x01, 0x02, 0x03}) sent.push_back(static_cast<kj::byte>(b));
  auto write = pipe.ends[0]
                   ->write(sent.data(), sent.size())
                   .then([&] { pipe.ends[0]->shutdownWrite(); })
                   .eagerlyEvaluate(nullptr);
  kj::byte buffer[64];
  size_t n = acceptor.tryRead(buffer, 16, sizeof(buffer)).wait(ws());
  write.wait(ws());
  ASSERT_EQ(n, 8u);
  EXPECT_EQ(buffer[0], 0x2a);
  EXPECT_EQ(acceptor.tryRead(buffer, 1, sizeof(buffer)).wait(ws()), 0u);
}

TEST_F(PackedStreamTest, AWriteOfPartOfAWordFails) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream connector(kj::mv(pipe.ends[0]), PackedStream::Side::kConnector);
  char five[5] = {1, 2, 3, 4, 5};
  EXPECT_ANY_THROW(connector.write(five, sizeof(five)).wait(ws()));
}

TEST_F(PackedStreamTest, ARunOfZeroWordsLongerThanOneCountIsCarried) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream connector(kj::mv(pipe.ends[0]), PackedStream::Side::kConnector);
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
  Bytes all(8 * 1000, 0);
  all[8 * 600] = 9;
  Bytes dense(8 * 600, 0x5a);
  all.insert(all.end(), dense.begin(), dense.end());
  std::mt19937_64 rng(4);
  EXPECT_EQ(Carry(connector, acceptor, {all}, all.size(), rng), all);
}

// ---- compressed connections -------------------------------------------

TEST_F(PackedStreamTest, WordsGoThroughACompressedConnectorAndAnAcceptorIntact) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    auto pipe = kj::newTwoWayPipe();
    PackedStream connector(kj::mv(pipe.ends[0]), PackedStream::Side::kCompressedConnector);
    PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
    std::vector<Bytes> chunks;
    Bytes all;
    for (int i = 0; i < 10; ++i) {
      chunks.push_back(RandomWords(rng, rng() % 20000));
      all.insert(all.end(), chunks.back().begin(), chunks.back().end());
    }
    Bytes got = Carry(connector, acceptor, chunks, all.size(), rng);
    EXPECT_EQ(got, all) << "seed " << seed;
    EXPECT_TRUE(acceptor.packed());
    EXPECT_TRUE(acceptor.compressed());
    // And back, compressed too.
    Bytes back = RandomWords(rng, 700);
    EXPECT_EQ(Carry(acceptor, connector, {back}, back.size(), rng), back) << "seed " << seed;
  }
}

// Every write is flushed: what one write carried can be read whole before
// the next is written, as an RPC answer must be.
TEST_F(PackedStreamTest, EachCompressedWriteCanBeReadBeforeTheNext) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream connector(kj::mv(pipe.ends[0]), PackedStream::Side::kCompressedConnector);
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
  for (unsigned i = 0; i < 5; ++i) {
    kj::Array<capnp::word> flat = BatchMessage(100 * i);
    auto bytes = flat.asBytes();
    // (A pipe's write completes once the other end read it all.)
    auto write = connector.write(bytes.begin(), bytes.size()).eagerlyEvaluate(nullptr);
    Bytes got(bytes.size());
    EXPECT_EQ(acceptor.tryRead(got.data(), got.size(), got.size()).wait(ws()), got.size());
    write.wait(ws());
    EXPECT_EQ(got, Bytes(bytes.begin(), bytes.end())) << i;
  }
}

// The second of two messages that share most of their bytes costs only
// what differs: far less than packing alone.
TEST_F(PackedStreamTest, ACompressedMessageLikeAnEarlierOneCostsLittle) {
  auto pipe = kj::newTwoWayPipe();
  kj::Own<kj::AsyncIoStream> wire_end = kj::mv(pipe.ends[1]);
  PackedStream connector(kj::mv(pipe.ends[0]), PackedStream::Side::kCompressedConnector);
  auto carry = [&](unsigned first) {
    kj::Array<capnp::word> flat = BatchMessage(first);
    auto write = connector.write(flat.asBytes().begin(), flat.asBytes().size());
    Bytes wire(4096);
    size_t n = wire_end->tryRead(wire.data(), 1, wire.size()).wait(ws());
    write.wait(ws());
    wire.resize(n);
    return wire;
  };
  Bytes first = carry(41);
  ASSERT_GT(first.size(), 8u);
  EXPECT_EQ(std::memcmp(first.data(), PackedStream::kCompressedPreamble, 8), 0);
  kj::Vector<kj::byte> packed;
  PackWords(BatchMessage(44).asBytes(), packed);
  Bytes second = carry(44);
  EXPECT_LT(second.size(), packed.size() / 3) << "packed alone: " << packed.size();
}

TEST_F(PackedStreamTest, AnUncompressedAcceptorTakesTheCompressedPreambleForAPlainStream) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kUncompressedAcceptor);
  Bytes all(PackedStream::kCompressedPreamble, PackedStream::kCompressedPreamble + 8);
  std::mt19937_64 rng(5);
  Bytes more = RandomWords(rng, 10);
  all.insert(all.end(), more.begin(), more.end());
  EXPECT_EQ(Carry(*pipe.ends[0], acceptor, {all}, all.size(), rng), all);
  EXPECT_FALSE(acceptor.packed());
  EXPECT_FALSE(acceptor.compressed());
}

// Bytes that are no Zstandard frame after the preamble fail the read.
TEST_F(PackedStreamTest, CorruptCompressedInputFailsTheRead) {
  auto pipe = kj::newTwoWayPipe();
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
  Bytes sent(PackedStream::kCompressedPreamble, PackedStream::kCompressedPreamble + 8);
  for (int i = 0; i < 32; ++i) sent.push_back(static_cast<kj::byte>(0xa5 ^ i));
  auto write = pipe.ends[0]->write(sent.data(), sent.size()).eagerlyEvaluate(nullptr);
  kj::byte buffer[64];
  EXPECT_ANY_THROW(acceptor.tryRead(buffer, 8, sizeof(buffer)).wait(ws()));
  write.wait(ws());
}

// A frame that asks for a window larger than the decoder keeps is refused,
// so a peer cannot make a connection hold more than kWindowBytes.
TEST_F(PackedStreamTest, AFrameAskingForALargerWindowIsRefused) {
  ZSTD_CCtx* big = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(big, ZSTD_c_windowLog, ZstdStream::kWindowLog + 4);
  Bytes data(1 << 20);
  std::mt19937_64 rng(6);
  for (auto& b : data) b = static_cast<kj::byte>(rng() % 4);
  Bytes frame(ZSTD_compressBound(data.size()));
  ZSTD_outBuffer out{frame.data(), frame.size(), 0};
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  ASSERT_EQ(ZSTD_compressStream2(big, &out, &in, ZSTD_e_flush), 0u);
  ZSTD_freeCCtx(big);
  frame.resize(out.pos);
  // The frame is good: a decoder that keeps such a window reads it.
  {
    ZSTD_DCtx* roomy = ZSTD_createDCtx();
    ZSTD_DCtx_setParameter(roomy, ZSTD_d_windowLogMax, ZstdStream::kWindowLog + 4);
    Bytes back(data.size());
    ZSTD_outBuffer o{back.data(), back.size(), 0};
    ZSTD_inBuffer i{frame.data(), frame.size(), 0};
    EXPECT_FALSE(ZSTD_isError(ZSTD_decompressStream(roomy, &o, &i)));
    EXPECT_EQ(o.pos, data.size());
    ZSTD_freeDCtx(roomy);
  }

  auto pipe = kj::newTwoWayPipe();
  PackedStream acceptor(kj::mv(pipe.ends[1]), PackedStream::Side::kAcceptor);
  Bytes sent(PackedStream::kCompressedPreamble, PackedStream::kCompressedPreamble + 8);
  sent.insert(sent.end(), frame.begin(), frame.end());
  auto write = pipe.ends[0]->write(sent.data(), sent.size()).eagerlyEvaluate(nullptr);
  kj::byte buffer[64];
  EXPECT_ANY_THROW(acceptor.tryRead(buffer, 8, sizeof(buffer)).wait(ws()));
}

}  // namespace
}  // namespace geokv
