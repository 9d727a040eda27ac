// Where one HTTP/1.1 request ends in the bytes a connection has received so far, and
// whether it keeps to the limits: serve's connection layer (serve/connections.h) reads a
// whole request with this before any thread works on it. It frames, it does not parse:
// the request line, the fields that set the body's length (Content-Length,
// Transfer-Encoding: chunked) and Expect are read; routing and the body's content are
// cpp-httplib's. No LibTorch and no sockets, so the unit test drives it byte by byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace alexnet::serve {

struct HeadLimits {
  size_t max_line = 8 << 10;    // the request line, and each field line
  size_t max_fields = 100;      // field lines (trailers of a chunked body included)
  size_t max_bytes = 64 << 10;  // the whole head: request line, fields and the blank line
};

/// Why a request is refused before it is handed on: an HTTP status and a message for the
/// client. The connection is closed after the answer (the rest of the request is unread).
struct Refusal {
  int status = 0;  // 0: none
  std::string message;
};

class RequestFramer {
 public:
  enum class State { kNeedMore, kComplete, kRefused };

  RequestFramer(HeadLimits limits, int64_t max_body_bytes) : limits_(limits), max_body_(max_body_bytes) {}

  /// Reads `buffer`, the connection's bytes from the start of this request on (bytes already
  /// scanned are not scanned again: the caller only appends). kComplete once one whole request
  /// is there; the bytes past request_size() belong to the next one.
  State scan(const std::string& buffer);

  bool head_done() const { return head_end_ != 0; }
  /// Bytes of the head (blank line included; CRLFs before the request line, which the
  /// standard lets a server ignore, too). Valid once head_done().
  size_t head_size() const { return head_end_; }
  /// Bytes of the whole request, once kComplete.
  size_t request_size() const { return request_end_; }
  /// The declared body size; -1 for a chunked body.
  int64_t content_length() const { return content_length_; }
  /// Body bytes received so far, as sent (chunk framing included).
  uint64_t body_received(const std::string& buffer) const {
    return head_done() && buffer.size() > head_end_ ? buffer.size() - head_end_ : 0;
  }
  /// The client sent `Expect: 100-continue` and waits for an interim answer before its body.
  bool expects_continue() const { return expect_continue_; }
  const Refusal& refusal() const { return refusal_; }

  /// The request as the handler should read it: the head less the CRLFs before the request
  /// line and less `Expect` (answered here already), then the body as received.
  std::string request_for_handler(const std::string& buffer) const;

 private:
  State refuse(int status, std::string message);
  State scan_head(const std::string& buffer);
  State scan_chunked(const std::string& buffer);
  State field(const std::string& buffer, size_t begin, size_t end);

  HeadLimits limits_;
  int64_t max_body_;
  State state_ = State::kNeedMore;
  Refusal refusal_;
  // The head.
  size_t start_ = 0;       // first byte of the request line
  size_t line_start_ = 0;  // first byte of the line being read
  size_t scanned_ = 0;     // bytes looked at so far
  size_t lines_ = 0;       // the request line and fields seen
  size_t head_end_ = 0;
  size_t expect_begin_ = 0, expect_end_ = 0;  // the Expect line, to leave out
  int64_t content_length_ = 0;
  bool has_length_ = false, chunked_ = false, expect_continue_ = false;
  // A chunked body.
  enum class Chunk { kSize, kData, kTrailer } chunk_ = Chunk::kSize;
  size_t pos_ = 0;             // next unread byte of the body's framing
  uint64_t chunk_left_ = 0;    // data bytes of the current chunk not yet passed
  uint64_t body_decoded_ = 0;  // data bytes of the chunks passed
  size_t request_end_ = 0;
};

}  // namespace alexnet::serve
