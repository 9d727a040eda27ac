// The threads that answer the requests serve's event loop has read in full: a fixed pool per
// listener, and the stream each request is read from (memory) and its answer written to (the
// socket, with a deadline). cpp-httplib parses, routes and writes through that stream.
#pragma once

#include <httplib.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace alexnet::serve {

/// A fixed set of threads running posted tasks in order; the destructor finishes the queue.
class Pool {
 public:
  explicit Pool(int threads);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  void post(std::function<void()> task);

 private:
  void work();
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
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = ip_;
    port = port_;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return fd_; }

  /// The answer's head says `Connection: close` (a handler that left the body unread, a drain).
  bool answer_closes() const;

 private:
  int fd_;
  std::string request_;
  size_t read_ = 0;
  std::string ip_;
  int port_;
  int write_timeout_ms_;
  std::string head_;  // the answer's first bytes
};

}  // namespace alexnet::serve
