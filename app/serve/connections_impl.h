// The state of serve's connection layer, shared by its two halves: the epoll loop (listening,
// accepting, waking, dispatch: serve/connections.cpp) and each connection's life in it
// (reading, framing, refusals, deadlines, the per-client slots: serve/connection_limits.cpp).
// Everything here but wake(), draining and cutting belongs to the loop's thread.
#pragma once

#include "app/serve/connections.h"
#include "app/serve/request_threads.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace alexnet::serve {

struct Connections::Impl {
  using Clock = std::chrono::steady_clock;
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

  // connections.cpp: the loop.
  Impl(const ConnectionOptions& o, Metrics& m);
  ~Impl();
  void wake();
  int listen(const std::string& host, int port, RequestHandler& handler, int threads);
  void run();
  void on_wake();
  void close_where(const std::function<bool(const Conn&)>& which, const char* why);
  void accept_all(size_t index);
  void poll_conn(Conn& c, bool on);

  // connection_limits.cpp: one connection.
  /// A whole answer for a request refused before it reached a handler.
  static std::string refusal_answer(int status, const std::string& message);
  std::string per_client_refusal(const std::string& ip) const;
  /// A connection of `ip` no longer counts against it: a parked one of the same address takes the slot.
  void release_slot(const std::string& ip);
  void unpark(Conn& c);
  void close_conn(Conn& c, const char* why);
  void on_readable(Conn& c);
  /// Frames what c.in holds: a complete request goes to its listener's threads.
  void take(Conn& c);
  void refuse(Conn& c, int status, const std::string& message);
  void sweep(Clock::time_point now);
};

}  // namespace alexnet::serve
