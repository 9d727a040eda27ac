#include "app/serve/framing.h"

#include <cctype>
#include <string_view>
#include <utility>

namespace alexnet::serve {

namespace {

bool iequals(const std::string& s, size_t begin, size_t end, const char* word) {
  size_t i = begin;
  for (; i < end && *word; ++i, ++word)
    if (std::tolower(static_cast<unsigned char>(s[i])) != *word) return false;
  return i == end && !*word;
}

void trim(const std::string& s, size_t& begin, size_t& end) {
  while (begin < end && (s[begin] == ' ' || s[begin] == '\t')) ++begin;
  while (end > begin && (s[end - 1] == ' ' || s[end - 1] == '\t')) --end;
}

// A field name is a token (RFC 9110 5.1): no spaces, no separators.
bool is_token_char(char c) {
  const unsigned char u = static_cast<unsigned char>(c);
  return u > 32 && u < 127 && std::string_view("\"(),/:;<=>?@[\\]{}").find(c) == std::string_view::npos;
}

std::string limit_text(size_t n) {
  return n % 1024 == 0 ? std::to_string(n / 1024) + " KiB" : std::to_string(n) + " bytes";
}

}  // namespace

RequestFramer::State RequestFramer::refuse(int status, std::string message) {
  refusal_ = {status, std::move(message)};
  return state_ = State::kRefused;
}

RequestFramer::State RequestFramer::scan(const std::string& buffer) {
  if (state_ != State::kNeedMore) return state_;
  if (!head_done()) {
    if (scan_head(buffer) != State::kNeedMore || !head_done()) return state_;
  }
  if (chunked_) return scan_chunked(buffer);
  if (buffer.size() - head_end_ >= static_cast<uint64_t>(content_length_)) {
    request_end_ = head_end_ + static_cast<size_t>(content_length_);
    state_ = State::kComplete;
  }
  return state_;
}

RequestFramer::State RequestFramer::scan_head(const std::string& buffer) {
  for (; scanned_ < buffer.size(); ++scanned_) {
    if (buffer[scanned_] != '\n') continue;
    size_t end = scanned_;  // the line is [line_start_, end), less a final CR
    if (end > line_start_ && buffer[end - 1] == '\r') --end;
    const size_t next = scanned_ + 1;
    if (end == line_start_) {   // an empty line
      if (lines_ == 0) {        // before the request line: ignored (RFC 9112 2.2)
        start_ = line_start_ = next;
        continue;
      }
      head_end_ = next;
      scanned_ = next;
      break;
    }
    if (lines_ == 0) {
      if (end - line_start_ > limits_.max_line)
        return refuse(414, "the request line is longer than " + limit_text(limits_.max_line) + " (--max-header-line)");
    } else {
      if (end - line_start_ > limits_.max_line)
        return refuse(431, "a header line is longer than " + limit_text(limits_.max_line) + " (--max-header-line)");
      if (lines_ > limits_.max_fields)
        return refuse(431, "more than " + std::to_string(limits_.max_fields) + " header fields (--max-header-fields)");
      if (field(buffer, line_start_, end) != State::kNeedMore) return state_;
    }
    ++lines_;
    line_start_ = next;
    if (next - start_ > limits_.max_bytes)
      return refuse(431, "the header section is larger than " + limit_text(limits_.max_bytes) + " (--max-header-bytes)");
  }
  if (!head_done() && scanned_ - line_start_ > limits_.max_line + 1)  // a line still arriving is too long
    return lines_ == 0 ? refuse(414, "the request line is longer than " + limit_text(limits_.max_line) +
                                         " (--max-header-line)")
                       : refuse(431, "a header line is longer than " + limit_text(limits_.max_line) +
                                         " (--max-header-line)");
  const size_t head_bytes = (head_done() ? head_end_ : scanned_) - start_;
  if (head_bytes > limits_.max_bytes)
    return refuse(431, "the header section is larger than " + limit_text(limits_.max_bytes) + " (--max-header-bytes)");
  if (!head_done()) return state_;
  if (chunked_ && has_length_)  // both: a smuggling attempt or a broken client (RFC 9112 6.1)
    return refuse(400, "both Content-Length and Transfer-Encoding: send one");
  if (chunked_) pos_ = head_end_;
  return state_;
}

RequestFramer::State RequestFramer::field(const std::string& buffer, size_t begin, size_t end) {
  if (buffer[begin] == ' ' || buffer[begin] == '\t')
    return refuse(400, "a header line folded onto the next (obsolete line folding)");
  size_t colon = begin;
  while (colon < end && is_token_char(buffer[colon])) ++colon;
  if (colon == begin || colon == end || buffer[colon] != ':')
    return refuse(400, "a malformed header line (expected NAME: VALUE)");
  size_t value = colon + 1, value_end = end;
  trim(buffer, value, value_end);
  if (iequals(buffer, begin, colon, "content-length")) {
    if (value == value_end || value_end - value > 18) return refuse(400, "an invalid Content-Length");
    int64_t n = 0;
    for (size_t i = value; i < value_end; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(buffer[i]))) return refuse(400, "an invalid Content-Length");
      n = n * 10 + (buffer[i] - '0');
    }
    if (has_length_ && n != content_length_) return refuse(400, "two different Content-Length fields");
    has_length_ = true;
    content_length_ = n;
    if (n > max_body_)
      return refuse(413, "the body is larger than the limit of " + std::to_string(max_body_) + " bytes (--max-body-mb)");
  } else if (iequals(buffer, begin, colon, "transfer-encoding")) {
    if (!iequals(buffer, value, value_end, "chunked"))
      return refuse(501, "Transfer-Encoding '" + buffer.substr(value, value_end - value) +
                             "' is not supported: send the body as is, or chunked");
    if (chunked_) return refuse(400, "Transfer-Encoding given twice");
    chunked_ = true;
    content_length_ = -1;
  } else if (iequals(buffer, begin, colon, "expect")) {
    if (!iequals(buffer, value, value_end, "100-continue"))
      return refuse(417, "Expect '" + buffer.substr(value, value_end - value) + "' cannot be met");
    expect_continue_ = true;
    expect_begin_ = begin;
    expect_end_ = scanned_ + 1;
  }
  return state_;
}

RequestFramer::State RequestFramer::scan_chunked(const std::string& buffer) {
  const auto too_large = [&] {
    return refuse(413, "the body is larger than the limit of " + std::to_string(max_body_) + " bytes (--max-body-mb)");
  };
  // Framing costs bytes too: a body of one-byte chunks is about six times its data.
  if (buffer.size() - head_end_ > static_cast<uint64_t>(max_body_) * 8 + (64 << 10)) return too_large();
  for (;;) {
    if (chunk_ == Chunk::kData) {
      if (buffer.size() - pos_ < chunk_left_ + 2) return state_;
      pos_ += static_cast<size_t>(chunk_left_);
      if (buffer[pos_] == '\r') ++pos_;
      if (buffer[pos_] != '\n') return refuse(400, "a chunk of the body is longer than its declared size");
      ++pos_;
      chunk_ = Chunk::kSize;
      continue;
    }
    const size_t nl = buffer.find('\n', pos_);
    if (nl == std::string::npos) {
      if (buffer.size() - pos_ > limits_.max_line) return refuse(400, "a chunk-size line is too long");
      return state_;
    }
    size_t end = nl;
    if (end > pos_ && buffer[end - 1] == '\r') --end;
    if (end - pos_ > limits_.max_line) return refuse(400, "a chunk-size line is too long");
    if (chunk_ == Chunk::kTrailer) {
      if (end == pos_) {
        request_end_ = nl + 1;
        return state_ = State::kComplete;
      }
      if (++lines_ > limits_.max_fields + 1)
        return refuse(431, "more than " + std::to_string(limits_.max_fields) + " header fields (--max-header-fields)");
      pos_ = nl + 1;
      continue;
    }
    uint64_t size = 0;
    size_t i = pos_;
    for (; i < end && std::isxdigit(static_cast<unsigned char>(buffer[i])); ++i) {
      if (size > (uint64_t{1} << 40)) return too_large();
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(buffer[i])));
      size = size * 16 + static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    if (i == pos_ || (i < end && buffer[i] != ';' && buffer[i] != ' ' && buffer[i] != '\t'))
      return refuse(400, "a malformed chunk size in the body");
    body_decoded_ += size;
    if (body_decoded_ > static_cast<uint64_t>(max_body_)) return too_large();
    pos_ = nl + 1;
    if (size == 0) {
      chunk_ = Chunk::kTrailer;
    } else {
      chunk_ = Chunk::kData;
      chunk_left_ = size;
    }
  }
}

std::string RequestFramer::request_for_handler(const std::string& buffer) const {
  const size_t end = state_ == State::kComplete ? request_end_ : buffer.size();
  if (!expect_continue_) return buffer.substr(start_, end - start_);
  return buffer.substr(start_, expect_begin_ - start_) + buffer.substr(expect_end_, end - expect_end_);
}

}  // namespace alexnet::serve
