// app/engine/network.h: the facts a distributed rank reads off the network before
// c10d connects, checked on loopback (every host has it) against sockets made here.
#include "app/engine/network.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace net = alexnet::engine::net;

namespace {

// A TCP socket bound to 127.0.0.1 on a port the kernel picks; listening or not.
struct LocalSocket {
  int fd = -1;
  int port = 0;
  explicit LocalSocket(bool listening) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    if (listening) EXPECT_EQ(::listen(fd, 4), 0);
  }
  ~LocalSocket() { ::close(fd); }
};

}  // namespace

TEST(Network, LoopbackAddresses) {
  EXPECT_TRUE(net::is_loopback("127.0.0.1"));
  EXPECT_TRUE(net::is_loopback("127.0.1.1"));  // Debian's /etc/hosts entry for the host name
  EXPECT_TRUE(net::is_loopback("::1"));
  EXPECT_TRUE(net::is_loopback("::ffff:127.0.0.1"));
  EXPECT_FALSE(net::is_loopback("10.0.0.1"));
  EXPECT_FALSE(net::is_loopback("128.0.0.1"));
  EXPECT_FALSE(net::is_loopback("fe80::1"));
  EXPECT_FALSE(net::is_loopback("localhost"));  // names are resolved first
}

TEST(Network, ResolvesNamesAndNumbers) {
  std::string error;
  EXPECT_EQ(net::resolve("127.0.0.1", &error).value_or("none"), "127.0.0.1");
  const auto local = net::resolve("localhost", &error);
  ASSERT_TRUE(local.has_value()) << error;
  EXPECT_TRUE(net::is_loopback(*local)) << *local;
  EXPECT_FALSE(net::resolve("nosuch.invalid", &error).has_value());  // RFC 2606: never resolves
  EXPECT_FALSE(error.empty());
}

TEST(Network, RouteToLoopbackIsLo) {
  const net::Endpoint e = net::route_to("127.0.0.1");
  EXPECT_EQ(e.address, "127.0.0.1");
  EXPECT_EQ(e.interface, "lo");
  EXPECT_THROW(net::route_to("not-an-address"), std::runtime_error);
}

TEST(Network, InterfaceEndpoint) {
  const net::Endpoint e = net::interface_endpoint("lo");
  EXPECT_EQ(e.address, "127.0.0.1");
  try {
    net::interface_endpoint("nosuch0");
    FAIL() << "no error for a missing interface";
  } catch (const std::runtime_error& err) {
    EXPECT_NE(std::string(err.what()).find("there is no interface nosuch0"), std::string::npos) << err.what();
  }
}

TEST(Network, ProbeTellsListeningFromRefused) {
  LocalSocket open(/*listening=*/true);
  EXPECT_EQ(net::probe_tcp("127.0.0.1", open.port, std::chrono::milliseconds(2000)).reach, net::Reach::kOk);
  // Bound but not listening: the port is ours and nobody accepts, so the kernel refuses.
  LocalSocket closed(/*listening=*/false);
  const net::Probe p = net::probe_tcp("127.0.0.1", closed.port, std::chrono::milliseconds(2000));
  EXPECT_EQ(p.reach, net::Reach::kRefused) << p.detail;
  EXPECT_EQ(net::probe_tcp("nonsense", 1, std::chrono::milliseconds(100)).reach, net::Reach::kOther);
}
