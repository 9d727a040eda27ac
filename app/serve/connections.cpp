// serve's connection layer, its loop (serve/connections.h): one thread waits on epoll for the
// listeners, the connections being read and a wake-up from the threads that answered; it
// accepts within the connection caps, hands each readable connection to its reader
// (serve/connection_limits.cpp) and, every 100 ms, sweeps the deadlines.
#include "app/serve/connections_impl.h"

#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace alexnet::serve {

namespace {

constexpr uint64_t kListenerTag = uint64_t{1} << 32;
constexpr uint64_t kWakeTag = uint64_t{2} << 32;

}  // namespace

Connections::Impl::Impl(const ConnectionOptions& o, Metrics& m) : options(o), metrics(m) {
  epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd < 0 || wake_fd < 0) throw std::runtime_error(std::string("serve: epoll: ") + std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &ev);
}

Connections::Impl::~Impl() {
  for (Listener& l : listeners) l.pool.reset();  // finishes the answers in flight
  for (auto& [fd, c] : conns) ::close(fd);
  for (Listener& l : listeners)
    if (l.fd >= 0) ::close(l.fd);
  ::close(wake_fd);
  ::close(epoll_fd);
}

void Connections::Impl::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_fd, &one, sizeof one);
}

int Connections::Impl::listen(const std::string& host, int port, RequestHandler& handler, int threads) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found);
  if (rc != 0) throw std::runtime_error("cannot listen on " + host + ": " + ::gai_strerror(rc));
  int fd = -1, error = 0;
  for (addrinfo* a = found; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      error = errno;
      continue;
    }
    const int yes = 1;  // a restart rebinds at once; no SO_REUSEPORT (a second server would share the port)
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      error = errno;
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) throw std::runtime_error("cannot listen on " + host + ":" + service + " (" + std::strerror(error) + ")");
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int bound = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                                     : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerTag | listeners.size();
  ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
  listeners.push_back({fd, &handler, nullptr, threads});
  return bound;
}

void Connections::Impl::run() {
  for (Listener& l : listeners) l.pool = std::make_unique<Pool>(l.threads);
  std::vector<epoll_event> events(256);
  Clock::time_point swept = Clock::now();
  while (!(drained && conns.empty())) {
    const int n = ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), 100);
    if (n < 0 && errno != EINTR) throw std::runtime_error(std::string("serve: epoll_wait: ") + std::strerror(errno));
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kWakeTag) {
        uint64_t count = 0;
        [[maybe_unused]] const ssize_t r = ::read(wake_fd, &count, sizeof count);
        on_wake();
      } else if (tag & kListenerTag) {
        accept_all(static_cast<size_t>(tag & 0xffffffffu));
      } else {
        const auto it = conns.find(static_cast<int>(tag));
        if (it != conns.end()) on_readable(it->second);
      }
    }
    const Clock::time_point now = Clock::now();
    if (now - swept >= std::chrono::milliseconds(100)) {
      swept = now;
      sweep(now);
    }
  }
  for (Listener& l : listeners) l.pool.reset();
}

void Connections::Impl::on_wake() {
  std::vector<std::pair<int, bool>> answered;
  {
    std::lock_guard<std::mutex> lock(done_mutex);
    answered.swap(done);
  }
  for (const auto& [fd, keep] : answered) {
    const auto it = conns.find(fd);
    if (it == conns.end()) continue;
    Conn& c = it->second;
    if (!keep || draining || cutting) {
      close_conn(c, keep ? "drain" : "answered");
      continue;
    }
    c.phase = Phase::kIdle;
    c.since = Clock::now();
    poll_conn(c, true);
    if (!c.in.empty()) take(c);  // a pipelined request
  }
  if (draining && !drained) {
    // Connections the kernel has already accepted are taken and answered, not reset.
    for (size_t i = 0; i < listeners.size(); ++i) accept_all(i);
    drained = true;
    for (Listener& l : listeners) {
      ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, l.fd, nullptr);
      ::close(l.fd);
      l.fd = -1;
    }
    // Idle connections are not closed here: a request may be on its way on one. They close
    // once idle for a second (the sweep), and a request that comes first is answered.
  }
  if (cutting && !cut_done) {
    cut_done = true;
    close_where([](const Conn& c) { return c.phase != Phase::kBusy; }, "drain");
  }
}

void Connections::Impl::close_where(const std::function<bool(const Conn&)>& which, const char* why) {
  std::vector<int> fds;
  for (const auto& [fd, c] : conns)
    if (which(c)) fds.push_back(fd);
  for (int fd : fds) close_conn(conns.at(fd), why);
}

void Connections::Impl::accept_all(size_t index) {
  const Clock::time_point now = Clock::now();
  if (now < accept_paused_until || drained) return;
  for (;;) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    const int fd = ::accept4(listeners[index].fd, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: the connection waits in the backlog; try again shortly.
        spdlog::warn("serve: cannot accept a connection ({}); {} open", std::strerror(errno), conns.size());
        accept_paused_until = now + std::chrono::milliseconds(100);
      }
      return;
    }
    char host[NI_MAXHOST] = "", serv[NI_MAXSERV] = "";
    ::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV);
    const std::string ip = host;
    std::string refused;
    const auto waiting = parked.find(ip);
    const size_t parked_here = waiting == parked.end() ? 0 : waiting->second.size();
    if (static_cast<int>(conns.size()) >= options.max_connections) {
      refused = "the server holds " + std::to_string(conns.size()) + " connections, its limit (--max-connections)";
      metrics.connection_closed("connection_limit");
    } else if (per_client[ip] >= options.max_per_client &&
               parked_here >= static_cast<size_t>(options.max_per_client)) {
      refused = per_client_refusal(ip);
      metrics.connection_closed("per_client_limit");
    }
    if (!refused.empty()) {
      if (per_client[ip] == 0) per_client.erase(ip);
      const std::string answer = refusal_answer(503, refused);
      [[maybe_unused]] const ssize_t n = ::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      ::close(fd);
      continue;
    }
    const int yes = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    Conn& c = conns[fd];
    c.fd = fd;
    c.listener = index;
    c.ip = ip;
    c.port = std::atoi(serv);
    c.since = now;
    if (per_client[ip] >= options.max_per_client) {
      c.phase = Phase::kParked;
      parked[ip].push_back(fd);
    } else {
      ++per_client[ip];
      poll_conn(c, true);
    }
    metrics.set_connections_open(static_cast<int64_t>(conns.size()));
  }
}

void Connections::Impl::poll_conn(Conn& c, bool on) {
  if (c.polled == on) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = static_cast<uint64_t>(c.fd);
  ::epoll_ctl(epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, c.fd, &ev);
  c.polled = on;
}

Connections::Connections(const ConnectionOptions& options, Metrics& metrics)
    : impl_(std::make_unique<Impl>(options, metrics)) {}
Connections::~Connections() = default;

int Connections::listen(const std::string& host, int port, RequestHandler& handler, int threads) {
  return impl_->listen(host, port, handler, threads);
}
void Connections::run() { impl_->run(); }
void Connections::drain() {
  impl_->draining = true;
  impl_->wake();
}
void Connections::cut() {
  impl_->cutting = true;
  impl_->wake();
}

}  // namespace alexnet::serve
