#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "testing/cluster.h"

namespace geokv::testing {
namespace {

// Whether a socket of `type` can bind 127.0.0.1:port now.
bool Bindable(int type, int port) {
  int fd = socket(AF_INET, type, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool bound = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return bound;
}

// Ports of the kernel's ephemeral range go to outgoing connections and
// binds to port 0 of any process on the machine, so a port handed to a
// node that binds it later (or again after a restart) must come from below.
TEST(FreePort, GivesFreePortsBelowTheEphemeralRangeAndNeverOneTwice) {
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0, high = 0;
  ASSERT_TRUE(range >> low >> high);
  if (low < 12000) GTEST_SKIP() << "the ephemeral range starts at " << low;
  std::set<int> given;
  for (int i = 0; i < 300; ++i) {
    const int port = FreePort();
    EXPECT_LT(port, low);
    EXPECT_GT(port, 0);
    EXPECT_TRUE(given.insert(port).second) << port << " given twice";
    EXPECT_TRUE(Bindable(SOCK_STREAM, port)) << port;
    EXPECT_TRUE(Bindable(SOCK_DGRAM, port)) << port;
  }
}

}  // namespace
}  // namespace geokv::testing
