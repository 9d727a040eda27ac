// One connection's life in serve's loop: reading and framing its requests within the header
// and body limits, handing a complete one to its listener's threads, refusing (an answer, then
// a short linger), the deadlines the sweep enforces, and the slots each client address holds.
#include "app/serve/connections_impl.h"

#include "app/runtime/json.h"

#include <spdlog/spdlog.h>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace alexnet::serve {

namespace {

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

}  // namespace

std::string Connections::Impl::refusal_answer(int status, const std::string& message) {
  const std::string body = runtime::JsonObject().str("error", message).dump() + "\n";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
         "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         (status == 503 ? "\r\nRetry-After: 1" : "") + "\r\nConnection: close\r\n\r\n" + body;
}

std::string Connections::Impl::per_client_refusal(const std::string& ip) const {
  return "too many connections from " + ip + ": " + std::to_string(options.max_per_client) +
         " is the limit per client address (--max-connections-per-client)";
}

void Connections::Impl::release_slot(const std::string& ip) {
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

void Connections::Impl::unpark(Conn& c) {
  auto& q = parked[c.ip];
  q.erase(std::remove(q.begin(), q.end(), c.fd), q.end());
  if (q.empty()) parked.erase(c.ip);
}

void Connections::Impl::close_conn(Conn& c, const char* why) {
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

void Connections::Impl::on_readable(Conn& c) {
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

void Connections::Impl::take(Conn& c) {
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

void Connections::Impl::refuse(Conn& c, int status, const std::string& message) {
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

void Connections::Impl::sweep(Clock::time_point now) {
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

}  // namespace alexnet::serve
