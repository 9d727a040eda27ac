#include "app/serve/connections.h"

#include "app/runtime/json.h"

#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace alexnet::serve {

namespace {

using Clock = std::chrono::steady_clock;

/// A fixed set of threads running posted tasks in order; the destructor finishes the queue.
class Pool {
 public:
  explicit Pool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (std::thread& t : threads_) t.join();
  }
  void post(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

/// One request read in full, as cpp-httplib reads a connection: reads come from memory, writes
/// go to the socket (non-blocking, each write waiting at most the write timeout for room).
class RequestStream : public httplib::Stream {
 public:
  RequestStream(int fd, std::string request, const std::string& ip, int port, int write_timeout_s)
      : fd_(fd), request_(std::move(request)), ip_(ip), port_(port), write_timeout_ms_(write_timeout_s * 1000) {}

  bool is_readable() const override { return read_ < request_.size(); }
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    return ::poll(&p, 1, write_timeout_ms_) > 0 && (p.revents & (POLLERR | POLLHUP)) == 0;
  }
  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, request_.size() - read_);
    std::memcpy(ptr, request_.data() + read_, n);
    read_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (head_.size() < 4096) head_.append(ptr, std::min(size, 4096 - head_.size()));
    for (;;) {
      const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return n;
      if (errno == EINTR) continue;
      if ((errno != EAGAIN && errno != EWOULDBLOCK) || !is_writable()) return -1;
    }
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = ip_;
    port = port_;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    char host[NI_MAXHOST] = "", serv[NI_MAXSERV] = "";
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0 &&
        ::getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof host, serv, sizeof serv,
                      NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }
  socket_t socket() const override { return fd_; }

  /// The answer's head says `Connection: close` (a handler that left the body unread, a drain).
  bool answer_closes() const {
    std::string head = head_.substr(0, head_.find("\r\n\r\n") + 2);
    std::transform(head.begin(), head.end(), head.begin(), [](unsigned char c) { return std::tolower(c); });
    return head.find("\r\nconnection: close\r\n") != std::string::npos;
  }

 private:
  int fd_;
  std::string request_;
  size_t read_ = 0;
  std::string ip_;
  int port_;
  int write_timeout_ms_;
  std::string head_;  // the answer's first bytes
};

const char* reason_phrase(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

/// A whole answer for a request refused before it reached a handler.
std::string refusal_answer(int status, const std::string& message) {
  const std::string body = runtime::JsonObject().str("error", message).dump() + "\n";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         (status == 503 ? "\r\nRetry-After: 1" : "") + "\r\nConnection: close\r\n\r\n" + body;
}

constexpr uint64_t kListenerTag = uint64_t{1} << 32;
constexpr uint64_t kWakeTag = uint64_t{2} << 32;

}  // namespace

struct Connections::Impl {
  struct Listener {
    int fd = -1;
    RequestHandler* handler = nullptr;
    std::unique_ptr<Pool> pool;
    int threads = 0;
  };
  enum class Phase { kParked, kIdle, kReading, kBusy, kClosing };
  struct Conn {
    int fd = -1;
    size_t listener = 0;
    std::string ip;
    int port = 0;
    std::string in;  // received, not yet handed on
    std::optional<RequestFramer> framer;
    Phase phase = Phase::kIdle;
    Clock::time_point since;      // idle: since when; reading: the first byte; closing: the refusal
    Clock::time_point head_done;  // reading: when the head was whole
    bool continued = false;       // 100 Continue sent for this request
    bool polled = false;          // in the epoll set
    int served = 0;
  };

  ConnectionOptions options;
  Metrics& metrics;
  int epoll_fd = -1;
  int wake_fd = -1;
  std::vector<Listener> listeners;
  std::unordered_map<int, Conn> conns;
  std::unordered_map<std::string, int> per_client;  // connections counted against each address
  // Connections over an address's limit, accepted but not read yet: a client that closes one
  // connection and opens the next may be seen opening first. Each waits at most a second for
  // a slot of its address, then gets 503.
  std::unordered_map<std::string, std::deque<int>> parked;
  std::mutex done_mutex;
  std::vector<std::pair<int, bool>> done;  // (fd, keep open) of answered requests
  std::atomic<bool> draining{false}, cutting{false};
  bool drained = false, cut_done = false;
  Clock::time_point accept_paused_until{};

  Impl(const ConnectionOptions& o, Metrics& m) : options(o), metrics(m) {
    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd < 0 || wake_fd < 0) throw std::runtime_error(std::string("serve: epoll: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kWakeTag;
    ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &ev);
  }
  ~Impl() {
    for (Listener& l : listeners) l.pool.reset();  // finishes the answers in flight
    for (auto& [fd, c] : conns) ::close(fd);
    for (Listener& l : listeners)
      if (l.fd >= 0) ::close(l.fd);
    ::close(wake_fd);
    ::close(epoll_fd);
  }

  void wake() {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd, &one, sizeof one);
  }

  int listen(const std::string& host, int port, RequestHandler& handler, int threads) {
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

  void run() {
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

  void on_wake() {
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

  void close_where(const std::function<bool(const Conn&)>& which, const char* why) {
    std::vector<int> fds;
    for (const auto& [fd, c] : conns)
      if (which(c)) fds.push_back(fd);
    for (int fd : fds) close_conn(conns.at(fd), why);
  }

  void accept_all(size_t index) {
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

  std::string per_client_refusal(const std::string& ip) const {
    return "too many connections from " + ip + ": " + std::to_string(options.max_per_client) +
           " is the limit per client address (--max-connections-per-client)";
  }

  /// A connection of `ip` no longer counts against it: a parked one of the same address takes the slot.
  void release_slot(const std::string& ip) {
    const auto it = per_client.find(ip);
    if (it != per_client.end() && --it->second <= 0) per_client.erase(it);
    const auto waiting = parked.find(ip);
    if (waiting == parked.end()) return;
    const int fd = waiting->second.front();
    waiting->second.pop_front();
    if (waiting->second.empty()) parked.erase(waiting);
    Conn& c = conns.at(fd);
    c.phase = Phase::kIdle;
    c.since = Clock::now();
    ++per_client[ip];
    poll_conn(c, true);
  }

  void unpark(Conn& c) {
    auto& q = parked[c.ip];
    q.erase(std::remove(q.begin(), q.end(), c.fd), q.end());
    if (q.empty()) parked.erase(c.ip);
  }

  void poll_conn(Conn& c, bool on) {
    if (c.polled == on) return;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = static_cast<uint64_t>(c.fd);
    ::epoll_ctl(epoll_fd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, c.fd, &ev);
    c.polled = on;
  }

  void close_conn(Conn& c, const char* why) {
    poll_conn(c, false);
    ::close(c.fd);
    const std::string ip = c.ip;
    const Phase phase = c.phase;
    if (phase == Phase::kParked) unpark(c);
    metrics.connection_closed(why);
    conns.erase(c.fd);
    if (phase != Phase::kClosing && phase != Phase::kParked) release_slot(ip);
    metrics.set_connections_open(static_cast<int64_t>(conns.size()));
  }

  void on_readable(Conn& c) {
    char buf[64 << 10];
    if (c.phase == Phase::kClosing) {  // the answer is sent: what still comes is read and dropped
      const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) close_conn(c, "refused");
      return;
    }
    // While the head is incomplete, never read more than its limit (and a few blank lines the
    // framer skips before a request line): a header flood is refused after --max-header-bytes.
    size_t room = sizeof buf;
    if (!c.framer || !c.framer->head_done()) {
      const size_t cap = options.head.max_bytes + 64;
      if (c.in.size() >= cap)
        return refuse(c, 431, "the header section is larger than " + std::to_string(options.head.max_bytes) +
                                  " bytes (--max-header-bytes)");
      room = std::min(room, cap - c.in.size());
    }
    const ssize_t n = ::recv(c.fd, buf, room, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      close_conn(c, "client");
      return;
    }
    if (n == 0) {  // the client closed; a half-sent request gets no answer
      close_conn(c, c.phase == Phase::kReading ? "client_mid_request" : "client");
      return;
    }
    c.in.append(buf, static_cast<size_t>(n));
    take(c);
  }

  /// Frames what c.in holds: a complete request goes to its listener's threads.
  void take(Conn& c) {
    if (c.phase == Phase::kIdle) {
      c.phase = Phase::kReading;
      c.since = Clock::now();
      c.continued = false;
      c.framer.emplace(options.head, options.max_body_bytes);
    }
    const bool had_head = c.framer->head_done();
    const RequestFramer::State state = c.framer->scan(c.in);
    if (state == RequestFramer::State::kRefused) return refuse(c, c.framer->refusal().status, c.framer->refusal().message);
    if (!had_head && c.framer->head_done()) c.head_done = Clock::now();
    if (state == RequestFramer::State::kNeedMore) {
      if (c.framer->head_done() && c.framer->expects_continue() && !c.continued) {
        static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
        [[maybe_unused]] const ssize_t n = ::send(c.fd, kContinue, sizeof kContinue - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        c.continued = true;
      }
      return;
    }
    std::string request = c.framer->request_for_handler(c.in);
    c.in.erase(0, c.framer->request_size());
    c.framer.reset();
    ++c.served;
    const bool last = draining || c.served >= options.max_requests_per_connection;
    c.phase = Phase::kBusy;
    poll_conn(c, false);
    Listener& l = listeners[c.listener];
    auto stream = std::make_shared<RequestStream>(c.fd, std::move(request), c.ip, c.port, options.write_timeout_s);
    const int fd = c.fd;
    RequestHandler* handler = l.handler;
    l.pool->post([this, stream, fd, handler, last] {
      bool keep = false;
      try {
        keep = handler->answer(*stream, last) && !stream->answer_closes();
      } catch (const std::exception& e) {
        spdlog::error("serve: answering a request: {}", e.what());
      }
      {
        std::lock_guard<std::mutex> lock(done_mutex);
        done.emplace_back(fd, keep);
      }
      wake();
    });
  }

  void refuse(Conn& c, int status, const std::string& message) {
    const std::string answer = refusal_answer(status, message);
    [[maybe_unused]] const ssize_t n = ::send(c.fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    metrics.request("", status, 0);
    ::shutdown(c.fd, SHUT_WR);
    // The connection no longer counts against its client; it lingers briefly so that the answer
    // is not lost to a reset, reading and dropping what still comes.
    const bool counted = c.phase != Phase::kParked;
    if (!counted) unpark(c);
    c.phase = Phase::kClosing;
    c.since = Clock::now();
    c.framer.reset();
    std::string().swap(c.in);
    if (counted) release_slot(c.ip);
  }

  void sweep(Clock::time_point now) {
    std::vector<int> idle, slow_head, slow_body, lingering, waited;
    for (auto& [fd, c] : conns) {
      const double age = std::chrono::duration<double>(now - c.since).count();
      if (c.phase == Phase::kIdle && age > (drained ? std::min(1, options.keep_alive_s) : options.keep_alive_s)) {
        idle.push_back(fd);
      } else if (c.phase == Phase::kReading && !c.framer->head_done() && age > options.header_timeout_s) {
        slow_head.push_back(fd);
      } else if (c.phase == Phase::kReading && c.framer->head_done()) {
        const double size = static_cast<double>(std::max<int64_t>(
            c.framer->content_length(), static_cast<int64_t>(c.framer->body_received(c.in))));
        const double allowed = options.body_timeout_s + size / static_cast<double>(options.body_min_rate);
        if (std::chrono::duration<double>(now - c.head_done).count() > allowed) slow_body.push_back(fd);
      } else if (c.phase == Phase::kParked && age > 1) {
        waited.push_back(fd);
      } else if (c.phase == Phase::kClosing && age > 2) {
        lingering.push_back(fd);
      }
    }
    for (int fd : idle) close_conn(conns.at(fd), "idle");
    for (int fd : slow_head)
      refuse(conns.at(fd), 408,
             "the request line and headers did not arrive within " + std::to_string(options.header_timeout_s) +
                 " s of their first byte (--header-timeout)");
    for (int fd : slow_body)
      refuse(conns.at(fd), 408,
             "the body did not arrive in time: " + std::to_string(options.body_timeout_s) + " s (--read-timeout) plus 1 s per " +
                 std::to_string(options.body_min_rate >> 10) + " KiB it declares (--min-body-rate)");
    for (int fd : lingering) close_conn(conns.at(fd), "refused");
    for (int fd : waited) {
      Conn& c = conns.at(fd);
      metrics.connection_closed("per_client_limit");
      refuse(c, 503, per_client_refusal(c.ip));
    }
  }
};

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
