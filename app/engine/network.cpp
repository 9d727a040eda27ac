#include "app/engine/network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace alexnet::engine::net {

namespace {

// Closes a descriptor on every path.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

std::string numeric(const sockaddr* sa, socklen_t len) {
  char host[NI_MAXHOST];
  if (::getnameinfo(sa, len, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0) return "";
  std::string s = host;
  const auto scope = s.find('%');  // fe80::1%eth0: the scope is not part of the address
  if (scope != std::string::npos) s.resize(scope);
  return s;
}

// A numeric address and port as a socket address; false if `address` is not numeric.
bool to_sockaddr(const std::string& address, int port, sockaddr_storage* out, socklen_t* len) {
  std::memset(out, 0, sizeof *out);
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (::inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// The interface that carries `address`, from getifaddrs; empty if none.
std::string interface_of(const std::string& address) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> guard(list, ::freeifaddrs);
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    const int family = i->ifa_addr->sa_family;
    if (family != AF_INET && family != AF_INET6) continue;
    const socklen_t len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
    if (numeric(i->ifa_addr, len) == address) return i->ifa_name;
  }
  return "";
}

}  // namespace

std::optional<std::string> resolve(const std::string& host, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (rc != 0) {
    if (error) *error = rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc);
    return std::nullopt;
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(result, ::freeaddrinfo);
  std::string v6;
  for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
    const std::string s = numeric(a->ai_addr, a->ai_addrlen);
    if (s.empty()) continue;
    if (a->ai_family == AF_INET) return s;
    if (v6.empty()) v6 = s;
  }
  if (!v6.empty()) return v6;
  if (error) *error = "no IPv4 or IPv6 address";
  return std::nullopt;
}

bool is_loopback(const std::string& address) {
  in_addr v4{};
  if (::inet_pton(AF_INET, address.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) return v6.s6_addr[12] == 127;
  }
  return false;
}

Endpoint route_to(const std::string& address) {
  sockaddr_storage peer{};
  socklen_t len = 0;
  if (!to_sockaddr(address, 9, &peer, &len))  // any port: nothing is sent
    throw std::runtime_error("'" + address + "' is not a numeric address");
  Fd s(::socket(peer.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (s.fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  // connect() on UDP only consults the routing table and fixes the source address.
  if (::connect(s.fd, reinterpret_cast<sockaddr*>(&peer), len) != 0)
    throw std::runtime_error("no route to " + address + " (" + std::strerror(errno) + ")");
  sockaddr_storage local{};
  socklen_t local_len = sizeof local;
  if (::getsockname(s.fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0)
    throw std::runtime_error(std::string("getsockname: ") + std::strerror(errno));
  Endpoint e;
  e.address = numeric(reinterpret_cast<sockaddr*>(&local), local_len);
  e.interface = interface_of(e.address);
  return e;
}

Endpoint interface_endpoint(const std::string& name) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) throw std::runtime_error(std::string("getifaddrs: ") + std::strerror(errno));
  std::unique_ptr<ifaddrs, void (*)(ifaddrs*)> guard(list, ::freeifaddrs);
  bool exists = false;
  std::string v6;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (name != i->ifa_name) continue;
    exists = true;
    if (i->ifa_addr == nullptr) continue;
    if (i->ifa_addr->sa_family == AF_INET) return {numeric(i->ifa_addr, sizeof(sockaddr_in)), name};
    if (i->ifa_addr->sa_family == AF_INET6 && v6.empty()) v6 = numeric(i->ifa_addr, sizeof(sockaddr_in6));
  }
  if (!v6.empty()) return {v6, name};
  throw std::runtime_error(exists ? "interface " + name + " has no address"
                                  : "there is no interface " + name + " on this host");
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

Probe probe_tcp(const std::string& address, int port, std::chrono::milliseconds timeout) {
  Probe p;
  sockaddr_storage peer{};
  socklen_t len = 0;
  if (!to_sockaddr(address, port, &peer, &len)) {
    p.detail = "'" + address + "' is not a numeric address";
    return p;
  }
  Fd s(::socket(peer.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (s.fd < 0) {
    p.detail = std::strerror(errno);
    return p;
  }
  int err = 0;
  if (::connect(s.fd, reinterpret_cast<sockaddr*>(&peer), len) != 0) {
    if (errno != EINPROGRESS) {
      err = errno;
    } else {
      pollfd pfd{s.fd, POLLOUT, 0};
      int rc;
      do {
        rc = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
      } while (rc < 0 && errno == EINTR);
      if (rc == 0) {
        p.reach = Reach::kTimedOut;
        p.detail = "no answer within " + std::to_string(timeout.count()) + " ms";
        return p;
      }
      socklen_t elen = sizeof err;
      if (rc < 0 || ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) err = errno;
    }
  }
  if (err == 0) {
    p.reach = Reach::kOk;
    return p;
  }
  p.detail = std::strerror(err);
  switch (err) {
    case ECONNREFUSED: p.reach = Reach::kRefused; break;
    case ETIMEDOUT: p.reach = Reach::kTimedOut; break;
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ENETDOWN:
    case EHOSTDOWN: p.reach = Reach::kUnreachable; break;
    default: p.reach = Reach::kOther;
  }
  return p;
}

}  // namespace alexnet::engine::net
