// serve's connection layer: one event loop (epoll) accepts every connection and reads each
// request in full, within its deadlines and limits, before a thread works on it. A client that
// trickles its headers, sends a header flood or idles holds a socket and its few bytes, never a
// thread: slow clients cannot starve complete requests. Complete requests go to a fixed pool of
// threads per listener, where cpp-httplib parses and routes them (RequestHandler) and the answer
// is written; keep-alive connections then come back to the loop.
//
// What the loop enforces (each a flag of `alexnet serve`):
//   - the request line and headers within --header-timeout of their first byte, else 408;
//   - the body within --read-timeout plus its size at --min-body-rate, else 408;
//   - --max-header-line, --max-header-fields, --max-header-bytes, else 431 (414 for the
//     request line) before more is read; --max-body-mb against Content-Length, else 413;
//   - idle keep-alive connections close after --keep-alive-timeout;
//   - at most --max-connections open connections, --max-connections-per-client from one
//     address (idle and slow ones count); past either, a new connection gets 503 and is closed.
// A refused request is answered and its connection closed (its unread rest cannot be framed).
#pragma once

#include "app/serve/framing.h"
#include "app/serve/metrics.h"

#include <httplib.h>

#include <memory>
#include <string>

namespace alexnet::serve {

/// cpp-httplib's server with its own listener and threads unused: it answers one request that
/// the connection layer has read in full (routing, handlers and the answer's writing are its).
class RequestHandler : public httplib::Server {
 public:
  /// Answers the request `stream` holds; `last`: the connection closes after it. Returns whether
  /// the connection may stay open (the client did not ask to close, the write succeeded).
  bool answer(httplib::Stream& stream, bool last) {
    bool closed = false;
    return process_request(stream, last, closed, nullptr) && !closed && !last;
  }
};

struct ConnectionOptions {
  HeadLimits head;
  int64_t max_body_bytes = 20 << 20;
  int header_timeout_s = 10;
  int body_timeout_s = 10;          // a body's allowance before its size counts (--read-timeout)
  int64_t body_min_rate = 64 << 10;  // bytes/s: the allowance grows by 1 s per this many bytes
  int keep_alive_s = 5;
  int write_timeout_s = 10;          // an answer not taken by the client this long is dropped
  int max_requests_per_connection = 100;
  int max_connections = 4096;
  int max_per_client = 64;
};

class Connections {
 public:
  Connections(const ConnectionOptions& options, Metrics& metrics);
  ~Connections();
  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;

  /// Listens on host:port (0: any free port) for `handler`, whose requests run on `threads`
  /// threads of their own. Returns the port. Throws when the address cannot be bound. Before run().
  int listen(const std::string& host, int port, RequestHandler& handler, int threads);

  /// The loop: serves until drain() and then until no connection is left. Once, on its own thread.
  void run();
  /// From any thread: no new connections; idle ones close, requests being received are
  /// answered (their connections then close), and run() returns when none is left.
  void drain();
  /// From any thread, after drain(): connections not being answered now close at once.
  void cut();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace alexnet::serve
