// serve's request framing (app/serve/framing.h) without a socket: where a request ends
// whether its bytes come at once or one by one, pipelined requests, chunked bodies, and
// each limit refused with its status before more than the limit is held.
#include "app/serve/framing.h"

#include <gtest/gtest.h>

#include <string>

namespace alexnet::serve {
namespace {

using State = RequestFramer::State;

constexpr int64_t kMaxBody = 1 << 20;

/// Feeds `bytes` in pieces of `step` (0: at once), as a connection appends them.
State feed(RequestFramer& f, std::string& buffer, const std::string& bytes, size_t step = 0) {
  State s = State::kNeedMore;
  if (step == 0) step = bytes.size();
  for (size_t i = 0; i < bytes.size() && s == State::kNeedMore; i += step) {
    buffer += bytes.substr(i, step);
    s = f.scan(buffer);
  }
  return s;
}

State frame(const std::string& bytes, RequestFramer* out = nullptr, size_t step = 0, HeadLimits limits = {}) {
  RequestFramer f(limits, kMaxBody);
  std::string buffer;
  const State s = feed(f, buffer, bytes, step);
  if (out) *out = f;
  return s;
}

TEST(Framing, GetEndsAtTheBlankLineAndLeavesThePipelinedRest) {
  const std::string first = "GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string second = "GET /metrics HTTP/1.1\r\n\r\n";
  for (size_t step : {size_t{0}, size_t{1}, size_t{7}}) {
    RequestFramer f({}, kMaxBody);
    std::string buffer;
    ASSERT_EQ(feed(f, buffer, first + second, step), State::kComplete) << step;
    EXPECT_EQ(f.request_size(), first.size());
    EXPECT_EQ(f.request_for_handler(buffer), first);
  }
}

TEST(Framing, BlankLinesBeforeTheRequestLineAreIgnored) {
  RequestFramer f({}, kMaxBody);
  std::string buffer;
  const std::string request = "GET / HTTP/1.1\r\n\r\n";
  ASSERT_EQ(feed(f, buffer, "\r\n\r\n" + request), State::kComplete);
  EXPECT_EQ(f.request_size(), 4 + request.size());
  EXPECT_EQ(f.request_for_handler(buffer), request);
}

TEST(Framing, ContentLengthBodyAtOnceAndByteByByte) {
  const std::string body(1000, 'b');
  const std::string request = "POST /p HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + body;
  for (size_t step : {size_t{0}, size_t{1}, size_t{333}}) {
    RequestFramer f({}, kMaxBody);
    std::string buffer;
    EXPECT_EQ(feed(f, buffer, request.substr(0, request.size() - 1), step), State::kNeedMore);
    EXPECT_TRUE(f.head_done());
    EXPECT_EQ(f.content_length(), 1000);
    EXPECT_EQ(f.body_received(buffer), 999u);
    ASSERT_EQ(feed(f, buffer, "bEXTRA"), State::kComplete);
    EXPECT_EQ(f.request_size(), request.size());
  }
}

TEST(Framing, ChunkedBodyEndsAfterTheLastChunkAndTrailers) {
  const std::string request =
      "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n";
  for (size_t step : {size_t{0}, size_t{1}, size_t{5}}) {
    RequestFramer f({}, kMaxBody);
    std::string buffer;
    ASSERT_EQ(feed(f, buffer, request + "GET", step), State::kComplete) << step;
    EXPECT_EQ(f.content_length(), -1);
    EXPECT_EQ(f.request_size(), request.size());
  }
  EXPECT_EQ(frame("POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello"), State::kNeedMore);
}

TEST(Framing, ChunkedBodyErrors) {
  RequestFramer f({}, kMaxBody);
  const std::string head = "POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  EXPECT_EQ(frame(head + "zz\r\n", &f), State::kRefused);
  EXPECT_EQ(f.refusal().status, 400);
  EXPECT_EQ(frame(head + "3\r\nhello\r\n", &f), State::kRefused);  // longer than declared
  EXPECT_EQ(f.refusal().status, 400);
  EXPECT_EQ(frame(head + "100001\r\n", &f), State::kRefused);  // over the body limit, before its data
  EXPECT_EQ(f.refusal().status, 413);
  EXPECT_NE(f.refusal().message.find("--max-body-mb"), std::string::npos);
  EXPECT_EQ(frame(head + "fffffffffffffffffffffff\r\n", &f), State::kRefused);  // overflow
  EXPECT_EQ(f.refusal().status, 413);
}

TEST(Framing, ExpectContinueIsAnsweredHereAndLeftOutForTheHandler) {
  RequestFramer f({}, kMaxBody);
  std::string buffer;
  EXPECT_EQ(feed(f, buffer, "POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"), State::kNeedMore);
  EXPECT_TRUE(f.expects_continue());
  ASSERT_EQ(feed(f, buffer, "ok"), State::kComplete);
  EXPECT_EQ(f.request_for_handler(buffer), "POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_EQ(frame("GET / HTTP/1.1\r\nExpect: something\r\n\r\n", &f), State::kRefused);
  EXPECT_EQ(f.refusal().status, 417);
}

TEST(Framing, LengthFieldsThatCannotFrameAreRefused) {
  RequestFramer f({}, kMaxBody);
  for (const char* fields : {"Content-Length: 12a\r\n", "Content-Length: -1\r\n", "Content-Length:\r\n",
                             "Content-Length: 3\r\nContent-Length: 4\r\n",
                             "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                             "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", " folded\r\n",
                             "No colon here\r\n", "Bad name: x\r\n"}) {
    const std::string request = std::string("POST /p HTTP/1.1\r\nHost: x\r\n") + fields + "\r\n";
    EXPECT_EQ(frame(request, &f), State::kRefused) << fields;
    EXPECT_EQ(f.refusal().status, 400) << fields;
  }
  EXPECT_EQ(frame("POST /p HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), State::kComplete);
  EXPECT_EQ(frame("POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", &f), State::kRefused);
  EXPECT_EQ(f.refusal().status, 501);
  EXPECT_EQ(frame("POST /p HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n", &f), State::kRefused);
  EXPECT_EQ(f.refusal().status, 413);
  EXPECT_EQ(frame("POST /p HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n", &f), State::kNeedMore);
}

TEST(Framing, HeaderLimitsAreRefusedBeforeMoreIsHeld) {
  HeadLimits limits;
  limits.max_line = 100;
  limits.max_fields = 5;
  limits.max_bytes = 400;
  RequestFramer f(limits, kMaxBody);
  // A line at the limit passes; one byte more is refused while the line is still arriving.
  EXPECT_EQ(frame("GET / HTTP/1.1\r\nA: " + std::string(97, 'x') + "\r\n\r\n", &f, 0, limits), State::kComplete);
  EXPECT_EQ(frame("GET / HTTP/1.1\r\nA: " + std::string(500, 'x'), &f, 1, limits), State::kRefused);
  EXPECT_EQ(f.refusal().status, 431);
  EXPECT_NE(f.refusal().message.find("--max-header-line"), std::string::npos);
  EXPECT_EQ(frame("GET /" + std::string(200, 'u') + " HTTP/1.1\r\n", &f, 0, limits), State::kRefused);
  EXPECT_EQ(f.refusal().status, 414);
  // Five fields pass, six do not.
  std::string fields;
  for (int i = 0; i < 5; ++i) fields += "F" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(frame("GET / HTTP/1.1\r\n" + fields + "\r\n", &f, 0, limits), State::kComplete);
  EXPECT_EQ(frame("GET / HTTP/1.1\r\n" + fields + "F5: v\r\n\r\n", &f, 0, limits), State::kRefused);
  EXPECT_EQ(f.refusal().status, 431);
  EXPECT_NE(f.refusal().message.find("--max-header-fields"), std::string::npos);
  // The section's size: short lines under the count limit still add up.
  limits.max_fields = 1000;
  RequestFramer g(limits, kMaxBody);
  std::string buffer, flood = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 100; ++i) flood += "F: " + std::string(20, 'v') + "\r\n";
  EXPECT_EQ(feed(g, buffer, flood, 1), State::kRefused);
  EXPECT_EQ(g.refusal().status, 431);
  EXPECT_NE(g.refusal().message.find("--max-header-bytes"), std::string::npos);
  EXPECT_LE(buffer.size(), limits.max_bytes + 1);
}

}  // namespace
}  // namespace alexnet::serve
