// app/serve without a server: the Prometheus exposition of Metrics (counters by
// label, cumulative histograms with `le` semantics, the images-per-second gauge)
// and the Batcher's promises (each request gets its own row; batches stay within
// max_batch and never mix forward functions; a lone request does not wait for
// company, an announced one is waited for up to max_delay; a full queue refuses;
// a failing forward fails its own batch only; stop() answers what is queued).
// Orderings are forced with a gate the forward passes wait at, not with sleeps.
// Nothing is timed except behavioural bounds with wide margins (a 10 s max_delay
// against a 5 s bound), and every wait for a result is bounded so that a hang
// fails the test instead of blocking ctest.
#include "app/serve/batcher.h"
#include "app/serve/metrics.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace alexnet::serve {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// How long a test waits for something that takes milliseconds before calling it a hang.
constexpr auto kPatience = 60s;

// ---------------------------------------------------------------------------
// Reading the exposition

// Every sample line, "name{labels}" -> value; comment lines are skipped.
std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) {
      ADD_FAILURE() << "a sample without a value: " << line;
      continue;
    }
    const std::string key = line.substr(0, space);
    const char* value = line.c_str() + space + 1;
    char* end = nullptr;
    const double v = std::strtod(value, &end);
    EXPECT_EQ(*end, '\0') << "not a number: " << line;
    EXPECT_EQ(out.count(key), 0u) << "the same sample twice: " << key;
    out[key] = v;
  }
  return out;
}

// One sample's value; NaN (and a failure) when it is missing.
double sample(const std::string& text, const std::string& key) {
  const auto all = samples(text);
  const auto it = all.find(key);
  if (it == all.end()) {
    ADD_FAILURE() << "no sample " << key << " in:\n" << text;
    return std::numeric_limits<double>::quiet_NaN();
  }
  return it->second;
}

// A histogram's NAME_bucket lines in the order written: (le, cumulative count).
std::vector<std::pair<std::string, double>> buckets(const std::string& text, const std::string& name) {
  const std::string prefix = name + "_bucket{le=\"";
  std::vector<std::pair<std::string, double>> out;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.compare(0, prefix.size(), prefix) != 0) continue;
    const size_t close = line.find("\"} ", prefix.size());
    if (close == std::string::npos) {
      ADD_FAILURE() << "a malformed bucket: " << line;
      continue;
    }
    out.emplace_back(line.substr(prefix.size(), close - prefix.size()), std::strtod(line.c_str() + close + 3, nullptr));
  }
  return out;
}

// Prometheus's rules for a histogram: bounds increasing, counts cumulative (never
// decreasing), the last bucket +Inf and equal to NAME_count.
void expect_cumulative(const std::string& text, const std::string& name) {
  const auto b = buckets(text, name);
  ASSERT_GE(b.size(), 2u) << name << " has no finite buckets in:\n" << text;
  for (size_t i = 1; i < b.size(); ++i) {
    EXPECT_LE(b[i - 1].second, b[i].second) << name << ": le=" << b[i].first << " below le=" << b[i - 1].first;
    if (i + 1 < b.size()) {
      EXPECT_LT(std::strtod(b[i - 1].first.c_str(), nullptr), std::strtod(b[i].first.c_str(), nullptr)) << name;
    }
  }
  EXPECT_EQ(b.back().first, "+Inf") << name;
  EXPECT_EQ(b.back().second, sample(text, name + "_count")) << name;
}

// Every sample belongs to a metric with a # TYPE line (a histogram's through its suffixes).
void expect_typed(const std::string& text) {
  for (const auto& [key, value] : samples(text)) {
    const std::string name = key.substr(0, key.find('{'));
    if (text.find("# TYPE " + name + " ") != std::string::npos) continue;
    bool found = false;
    for (const std::string suffix : {"_bucket", "_sum", "_count"})
      if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
        found = text.find("# TYPE " + name.substr(0, name.size() - suffix.size()) + " histogram\n") != std::string::npos;
    EXPECT_TRUE(found) << "no # TYPE line for " << key;
  }
}

// ---------------------------------------------------------------------------
// Metrics

TEST(Histogram, CountsAValueOnABoundInThatBucket) {
  Histogram h({1, 2, 5});
  // 1 and 2 sit exactly on bounds: `le` means <=, so they count there, not above.
  for (double v : {0.5, 1.0, 2.0, 3.0, 7.0}) h.observe(v);
  EXPECT_EQ(h.count(), 5u);
  EXPECT_EQ(h.render("x"),
            "x_bucket{le=\"1\"} 2\n"
            "x_bucket{le=\"2\"} 3\n"
            "x_bucket{le=\"5\"} 4\n"
            "x_bucket{le=\"+Inf\"} 5\n"
            "x_sum 13.5\n"
            "x_count 5\n");
  EXPECT_EQ(Histogram({0.25}).render("empty"),
            "empty_bucket{le=\"0.25\"} 0\n"
            "empty_bucket{le=\"+Inf\"} 0\n"
            "empty_sum 0\n"
            "empty_count 0\n");
}

TEST(Histogram, WritesTheShortestRoundTripValueAndPrometheusSpellings) {
  // 0.1 + 0.2 is not 0.3 as a double: the sum needs 17 digits to read back; 0.1 needs one.
  Histogram sum({0.1});
  for (double v : {0.1, 0.2}) sum.observe(v);
  EXPECT_EQ(sample(sum.render("s"), "s_sum"), 0.1 + 0.2);  // exact: the text reads back as the same double
  EXPECT_NE(sum.render("s").find("s_sum 0.30000000000000004\n"), std::string::npos) << sum.render("s");
  EXPECT_NE(sum.render("s").find("s_bucket{le=\"0.1\"} 1\n"), std::string::npos) << sum.render("s");
  // Non-finite values as the text format names them (not C's nan, inf).
  for (const auto& [value, text] : {std::pair<double, const char*>{std::numeric_limits<double>::quiet_NaN(), "NaN"},
                                    {std::numeric_limits<double>::infinity(), "+Inf"},
                                    {-std::numeric_limits<double>::infinity(), "-Inf"}}) {
    Histogram h({1});
    h.observe(value);
    EXPECT_NE(h.render("h").find(std::string("h_sum ") + text + "\n"), std::string::npos) << h.render("h");
  }
}

TEST(Metrics, StartsAtZero) {
  const Metrics metrics;
  const std::string text = metrics.render();
  expect_typed(text);
  EXPECT_EQ(text.find("alexnet_requests_total{"), std::string::npos) << "a request sample before any request";
  EXPECT_EQ(sample(text, "alexnet_forward_passes_total"), 0);
  EXPECT_EQ(sample(text, "alexnet_images_total"), 0);
  EXPECT_EQ(sample(text, "alexnet_images_per_second"), 0);
  EXPECT_EQ(sample(text, "alexnet_queue_depth"), 0);
  EXPECT_EQ(sample(text, "alexnet_reloads_total{result=\"ok\"}"), 0);
  EXPECT_EQ(sample(text, "alexnet_reloads_total{result=\"failed\"}"), 0);
  for (const std::string name : {"alexnet_request_duration_seconds", "alexnet_batch_size"}) {
    expect_cumulative(text, name);
    EXPECT_EQ(sample(text, name + "_count"), 0) << name;
    EXPECT_EQ(sample(text, name + "_sum"), 0) << name;
  }
  EXPECT_EQ(metrics.images_per_second(), 0.0);
}

TEST(Metrics, CountsRequestsByPathAndCodeWithUnknownPathsAsOther) {
  Metrics metrics;
  metrics.request("/ping", 200, 0.0001);
  metrics.request("/ping", 200, 0.0001);
  metrics.request("/predictions/alexnet", 200, 0.01);
  metrics.request("/predictions/alexnet", 503, 0.001);
  metrics.request("/reload", 405, 0.0001);
  metrics.request("/favicon.ico", 404, 0.0001);
  metrics.request("/predictions/alexnet/", 404, 0.0001);  // not the same path
  // A client-chosen path must not reach the exposition: it could forge samples.
  metrics.request("/x\"} 1\nalexnet_images_total{evil=\"1", 400, 0.0001);

  const std::string text = metrics.render();
  expect_typed(text);
  EXPECT_NE(text.find("# TYPE alexnet_requests_total counter\n"), std::string::npos);
  const std::string total = "alexnet_requests_total";
  EXPECT_EQ(sample(text, total + "{path=\"/ping\",code=\"200\"}"), 2);
  EXPECT_EQ(sample(text, total + "{path=\"/predictions/alexnet\",code=\"200\"}"), 1);
  EXPECT_EQ(sample(text, total + "{path=\"/predictions/alexnet\",code=\"503\"}"), 1);
  EXPECT_EQ(sample(text, total + "{path=\"/reload\",code=\"405\"}"), 1);
  EXPECT_EQ(sample(text, total + "{path=\"other\",code=\"404\"}"), 2);
  EXPECT_EQ(sample(text, total + "{path=\"other\",code=\"400\"}"), 1);
  EXPECT_EQ(text.find("evil"), std::string::npos);
  EXPECT_EQ(text.find("favicon"), std::string::npos);
  size_t request_samples = 0;
  for (const auto& [key, value] : samples(text)) request_samples += key.rfind(total + "{", 0) == 0;
  EXPECT_EQ(request_samples, 6u);
}

TEST(Metrics, TimesPredictionsInACumulativeHistogram) {
  Metrics metrics;
  metrics.request("/predictions/alexnet", 200, 0.003);
  metrics.request("/predictions/alexnet", 503, 0.0025);  // exactly on the 0.0025 bound
  metrics.request("/predictions/alexnet", 200, 0.7);
  metrics.request("/predictions/alexnet", 200, 30.0);    // above every bound: +Inf only
  metrics.request("/ping", 200, 0.5);                    // not a prediction: not timed
  metrics.request("/elsewhere", 404, 0.5);

  const std::string text = metrics.render();
  const std::string name = "alexnet_request_duration_seconds";
  expect_cumulative(text, name);
  EXPECT_NE(text.find("# TYPE " + name + " histogram\n"), std::string::npos);
  const std::vector<std::pair<std::string, double>> want = {
      {"0.001", 0}, {"0.0025", 1}, {"0.005", 2}, {"0.01", 2}, {"0.025", 2}, {"0.05", 2}, {"0.1", 2},
      {"0.25", 2},  {"0.5", 2},    {"1", 3},     {"2.5", 3},  {"5", 3},     {"10", 3},   {"+Inf", 4}};
  EXPECT_EQ(buckets(text, name), want);
  EXPECT_EQ(sample(text, name + "_count"), 4);
  // Exact: the same additions in the same order, printed with digits that read back.
  EXPECT_EQ(sample(text, name + "_sum"), 0.0 + 0.003 + 0.0025 + 0.7 + 30.0);
}

TEST(Metrics, CountsBatchesImagesQueueDepthAndReloads) {
  Metrics metrics;
  for (int64_t images : {1, 3, 8, 300}) metrics.batch(images);  // 300: above the 256 bound
  metrics.set_queue_depth(7);
  metrics.set_queue_depth(5);  // a gauge: the last value, not a sum
  metrics.reload(true);
  metrics.reload(true);
  metrics.reload(false);
  EXPECT_EQ(metrics.forward_passes(), 4u);
  EXPECT_EQ(metrics.images(), 312u);

  const std::string text = metrics.render();
  expect_typed(text);
  EXPECT_EQ(sample(text, "alexnet_forward_passes_total"), 4);
  EXPECT_EQ(sample(text, "alexnet_images_total"), 312);
  EXPECT_EQ(sample(text, "alexnet_queue_depth"), 5);
  EXPECT_EQ(sample(text, "alexnet_reloads_total{result=\"ok\"}"), 2);
  EXPECT_EQ(sample(text, "alexnet_reloads_total{result=\"failed\"}"), 1);
  const std::string name = "alexnet_batch_size";
  expect_cumulative(text, name);
  const std::vector<std::pair<std::string, double>> want = {{"1", 1},  {"2", 1},  {"4", 2},   {"8", 3},   {"16", 3},
                                                            {"32", 3}, {"64", 3}, {"128", 3}, {"256", 3}, {"+Inf", 4}};
  EXPECT_EQ(buckets(text, name), want);
  EXPECT_EQ(sample(text, name + "_sum"), 312);
  EXPECT_EQ(sample(text, name + "_count"), 4);
}

TEST(Metrics, ImagesPerSecondAfterBatches) {
  const auto before = Clock::now();
  Metrics metrics;
  EXPECT_EQ(metrics.images_per_second(), 0.0);
  metrics.batch(10);
  metrics.batch(6);
  const double rate = metrics.images_per_second();
  const double elapsed = std::chrono::duration<double>(Clock::now() - before).count();
  EXPECT_TRUE(std::isfinite(rate)) << rate;
  EXPECT_GT(rate, 0);
  // 16 images over at most `elapsed` seconds (the window, 10 s, only shortens a longer
  // time), so at least 16 / elapsed; 1e-9 relative for rounding.
  EXPECT_GE(rate, 16 / elapsed * (1 - 1e-9)) << "elapsed " << elapsed << " s";
  const double rendered = sample(metrics.render(), "alexnet_images_per_second");
  EXPECT_TRUE(std::isfinite(rendered));
  EXPECT_GT(rendered, 0);
}

// ---------------------------------------------------------------------------
// Batcher

// A request's input, (3), filled with its id so that every row says whose it is.
torch::Tensor request(int id) { return torch::full({3}, static_cast<float>(id)); }

bool ready(const std::future<torch::Tensor>& result, Clock::duration within = kPatience) {
  return result.valid() && result.wait_for(within) == std::future_status::ready;
}

// A one-way gate forward passes wait at until the test opens it.
class Gate {
 public:
  void pass() {
    std::unique_lock<std::mutex> lock(mutex_);
    ++arrived_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return open_; });
  }
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    changed_.notify_all();
  }
  // Whether a forward pass has reached the gate, waiting up to kPatience for one.
  bool reached() {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, kPatience, [&] { return arrived_ > 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = false;
  int arrived_ = 0;
};

// The ids of the rows of every batch a forward pass ran, in order.
class Recorder {
 public:
  void record(const torch::Tensor& batch) {  // (B, 3)
    const torch::Tensor ids = batch.select(1, 0).contiguous();  // (B)
    std::lock_guard<std::mutex> lock(mutex_);
    batches_.emplace_back(ids.data_ptr<float>(), ids.data_ptr<float>() + ids.numel());
  }
  std::vector<std::vector<float>> batches() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return batches_;
  }
  std::vector<size_t> sizes() const {
    std::vector<size_t> out;
    for (const auto& b : batches()) out.push_back(b.size());
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::vector<float>> batches_;
};

class BatcherTest : public ::testing::Test {
 protected:
  Batcher& start(int64_t max_batch, std::chrono::microseconds max_delay, int64_t max_queue = 256) {
    Batcher::Options options;
    options.max_batch = max_batch;
    options.max_delay = max_delay;
    options.max_queue = max_queue;
    batcher_ = std::make_unique<Batcher>(options, metrics_);
    return *batcher_;
  }

  // batch * factor, recorded; when `gated`, each pass first waits at gate_. The recorder
  // is shared so that it outlives a forward pass still running when a test fails.
  std::shared_ptr<const Forward> forward(std::shared_ptr<Recorder> recorder, bool gated = false, float factor = 2) {
    Gate* gate = gated ? &gate_ : nullptr;
    return std::make_shared<const Forward>([recorder, gate, factor](const torch::Tensor& batch) {
      if (gate) gate->pass();
      recorder->record(batch);
      return batch * factor;
    });
  }

  // However a test ends, a forward pass waiting at the gate must not keep stop() from returning.
  void TearDown() override {
    gate_.open();
    batcher_.reset();
  }

  Metrics metrics_;
  Gate gate_;
  std::unique_ptr<Batcher> batcher_;
};

TEST(BatcherOptions, RefusesAnEmptyBatchOrQueue) {
  Metrics metrics;
  const auto make = [&metrics](Batcher::Options options) { const Batcher batcher(options, metrics); };
  Batcher::Options no_batch;
  no_batch.max_batch = 0;
  EXPECT_THROW(make(no_batch), c10::Error);
  Batcher::Options no_queue;
  no_queue.max_queue = 0;
  EXPECT_THROW(make(no_queue), c10::Error);
}

TEST_F(BatcherTest, GivesEveryConcurrentRequestItsOwnRow) {
  constexpr int kRequests = 40;
  constexpr int64_t kMaxBatch = 8;
  Batcher& batcher = start(kMaxBatch, 100ms);
  const auto recorder = std::make_shared<Recorder>();
  const auto doubled = forward(recorder, /*gated=*/true);

  std::vector<std::future<torch::Tensor>> results(kRequests);
  std::atomic<int> queued{0};
  std::vector<std::thread> clients;
  for (int id = 0; id < kRequests; ++id)
    clients.emplace_back([&, id] {
      batcher.arriving(+1);  // decoding, as the server announces it
      try {
        results[id] = batcher.submit(request(id), doubled);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "request " << id << ": " << e.what();
      }
      batcher.arriving(-1);
      ++queued;
    });
  // The first batch waits at the gate until every request is queued: then the next
  // batch has max_batch to choose from (40 less at most 8 taken).
  const auto deadline = Clock::now() + kPatience;
  while (queued < kRequests && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  const bool all_queued = queued == kRequests;
  gate_.open();
  for (std::thread& client : clients) client.join();
  ASSERT_TRUE(all_queued);

  for (int id = 0; id < kRequests; ++id) {
    ASSERT_TRUE(ready(results[id])) << "request " << id;
    const torch::Tensor out = results[id].get();
    EXPECT_TRUE(torch::equal(out, request(id) * 2)) << "request " << id << " got " << out;
  }
  const std::vector<size_t> sizes = recorder->sizes();
  ASSERT_GE(sizes.size(), 2u);
  size_t total = 0;
  for (size_t s : sizes) {
    EXPECT_GE(s, 1u);
    EXPECT_LE(s, static_cast<size_t>(kMaxBatch));
    total += s;
  }
  EXPECT_EQ(total, static_cast<size_t>(kRequests));
  EXPECT_EQ(sizes[1], static_cast<size_t>(kMaxBatch)) << "requests queued behind a busy model run together";
  // Each request ran exactly once.
  std::vector<int> runs(kRequests, 0);
  for (const auto& batch : recorder->batches())
    for (float id : batch) ++runs.at(static_cast<size_t>(id));
  EXPECT_EQ(runs, std::vector<int>(kRequests, 1));
  EXPECT_EQ(metrics_.images(), static_cast<uint64_t>(kRequests));
  EXPECT_EQ(metrics_.forward_passes(), sizes.size());
  EXPECT_EQ(sample(metrics_.render(), "alexnet_queue_depth"), 0);
}

TEST_F(BatcherTest, RunsALoneRequestWithoutWaitingForCompany) {
  Batcher& batcher = start(/*max_batch=*/32, /*max_delay=*/10s);
  const auto recorder = std::make_shared<Recorder>();
  const auto doubled = forward(recorder);
  batcher.arriving(+1);
  std::future<torch::Tensor> announced = batcher.submit(request(7), doubled);
  batcher.arriving(-1);  // nobody else is decoding
  ASSERT_TRUE(ready(announced, 5s)) << "a lone request waited for max_delay (10 s)";
  EXPECT_TRUE(torch::equal(announced.get(), request(7) * 2));
  // Never announced at all (arriving() is the server's courtesy, not a requirement).
  std::future<torch::Tensor> unannounced = batcher.submit(request(8), doubled);
  ASSERT_TRUE(ready(unannounced, 5s)) << "an unannounced lone request waited for max_delay (10 s)";
  EXPECT_TRUE(torch::equal(unannounced.get(), request(8) * 2));
  EXPECT_EQ(recorder->sizes(), (std::vector<size_t>{1, 1}));
}

TEST_F(BatcherTest, WaitsForAnnouncedRequests) {
  Batcher& batcher = start(/*max_batch=*/8, /*max_delay=*/10s);
  const auto recorder = std::make_shared<Recorder>();
  const auto doubled = forward(recorder);
  batcher.arriving(+1);  // the first request starts decoding
  batcher.arriving(+1);  // and the second
  std::future<torch::Tensor> first = batcher.submit(request(1), doubled);
  batcher.arriving(-1);
  std::this_thread::sleep_for(50ms);  // the second takes longer to decode
  std::future<torch::Tensor> second = batcher.submit(request(2), doubled);
  // Time for the batcher to see both queued with one still announced and go back to
  // waiting: then the last arriving(-1) must wake it, as nothing else would before max_delay.
  std::this_thread::sleep_for(50ms);
  batcher.arriving(-1);
  ASSERT_TRUE(ready(first, 5s)) << "still waiting after every announced request was queued";
  ASSERT_TRUE(ready(second, 5s));
  EXPECT_TRUE(torch::equal(first.get(), request(1) * 2));
  EXPECT_TRUE(torch::equal(second.get(), request(2) * 2));
  EXPECT_EQ(recorder->batches(), (std::vector<std::vector<float>>{{1, 2}})) << "not one batch of both";
}

TEST_F(BatcherTest, StopsWaitingForAnnouncedRequestsAfterMaxDelay) {
  Batcher& batcher = start(/*max_batch=*/8, /*max_delay=*/200ms);
  const auto recorder = std::make_shared<Recorder>();
  const auto doubled = forward(recorder);
  batcher.arriving(+1);  // a request that never arrives (its decoding hangs)
  const auto before = Clock::now();
  std::future<torch::Tensor> result = batcher.submit(request(3), doubled);
  ASSERT_TRUE(ready(result, 5s)) << "waited past max_delay (200 ms) for a request that never came";
  // The deadline counts from the submit, after `before`: a lower bound, exact by the steady clock.
  EXPECT_GE(Clock::now() - before, 200ms) << "did not wait for the announced request";
  EXPECT_TRUE(torch::equal(result.get(), request(3) * 2));
  EXPECT_EQ(recorder->sizes(), (std::vector<size_t>{1}));
  batcher.arriving(-1);
}

TEST_F(BatcherTest, RefusesWhenTheQueueIsFull) {
  Batcher& batcher = start(/*max_batch=*/8, /*max_delay=*/1ms, /*max_queue=*/2);
  const auto recorder = std::make_shared<Recorder>();
  const auto doubled = forward(recorder, /*gated=*/true);
  std::future<torch::Tensor> running = batcher.submit(request(0), doubled);
  // Taken out of the queue by the batching thread, so it does not count against max_queue.
  ASSERT_TRUE(gate_.reached());
  std::future<torch::Tensor> a = batcher.submit(request(1), doubled);
  std::future<torch::Tensor> b = batcher.submit(request(2), doubled);
  EXPECT_EQ(sample(metrics_.render(), "alexnet_queue_depth"), 2);
  EXPECT_THROW(batcher.submit(request(3), doubled), QueueFull);
  EXPECT_EQ(sample(metrics_.render(), "alexnet_queue_depth"), 2);
  gate_.open();
  ASSERT_TRUE(ready(running));
  ASSERT_TRUE(ready(a));
  ASSERT_TRUE(ready(b));
  EXPECT_TRUE(torch::equal(running.get(), request(0) * 2));
  EXPECT_TRUE(torch::equal(a.get(), request(1) * 2));
  EXPECT_TRUE(torch::equal(b.get(), request(2) * 2));
  EXPECT_EQ(recorder->batches(), (std::vector<std::vector<float>>{{0}, {1, 2}}));
  // Room again once the queue has drained.
  std::future<torch::Tensor> later = batcher.submit(request(4), doubled);
  ASSERT_TRUE(ready(later));
  EXPECT_TRUE(torch::equal(later.get(), request(4) * 2));
}

TEST_F(BatcherTest, FailsEveryRequestOfAFailingBatchAndCarriesOn) {
  Batcher& batcher = start(/*max_batch=*/8, /*max_delay=*/1ms);
  const auto gated = forward(std::make_shared<Recorder>(), /*gated=*/true);
  std::atomic<int> failing_calls{0};
  std::atomic<int64_t> failing_rows{0};
  const auto failing =
      std::make_shared<const Forward>([&failing_calls, &failing_rows](const torch::Tensor& batch) -> torch::Tensor {
        ++failing_calls;
        failing_rows = batch.size(0);
        throw std::runtime_error("forward: out of memory");
      });
  // Three requests queued behind a busy model: one batch, one failure.
  std::future<torch::Tensor> blocker = batcher.submit(request(0), gated);
  ASSERT_TRUE(gate_.reached());
  std::vector<std::future<torch::Tensor>> failed;
  for (int id = 1; id <= 3; ++id) failed.push_back(batcher.submit(request(id), failing));
  gate_.open();
  ASSERT_TRUE(ready(blocker));
  EXPECT_TRUE(torch::equal(blocker.get(), request(0) * 2));
  for (auto& result : failed) {
    ASSERT_TRUE(ready(result));
    try {
      result.get();
      ADD_FAILURE() << "a request of the failing batch got a result";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "forward: out of memory");
    }
  }
  EXPECT_EQ(failing_calls, 1);
  EXPECT_EQ(failing_rows, 3);

  // A forward giving the wrong number of rows fails its batch too, with the reason.
  const auto five_rows = std::make_shared<const Forward>([](const torch::Tensor&) { return torch::zeros({5, 3}); });
  std::future<torch::Tensor> wrong = batcher.submit(request(4), five_rows);
  ASSERT_TRUE(ready(wrong));
  EXPECT_THROW(wrong.get(), c10::Error);

  // The batcher is still working.
  const auto recorder = std::make_shared<Recorder>();
  std::future<torch::Tensor> next = batcher.submit(request(5), forward(recorder));
  ASSERT_TRUE(ready(next));
  EXPECT_TRUE(torch::equal(next.get(), request(5) * 2));
}

TEST_F(BatcherTest, NeverMixesForwardFunctionsInABatch) {
  Batcher& batcher = start(/*max_batch=*/8, /*max_delay=*/1ms);
  const auto blocker_forward = forward(std::make_shared<Recorder>(), /*gated=*/true);
  const auto recorder_a = std::make_shared<Recorder>(), recorder_b = std::make_shared<Recorder>();
  const auto a = forward(recorder_a, /*gated=*/false, /*factor=*/2);
  const auto b = forward(recorder_b, /*gated=*/false, /*factor=*/3);  // a reloaded model, say
  std::future<torch::Tensor> blocker = batcher.submit(request(0), blocker_forward);
  ASSERT_TRUE(gate_.reached());
  // Interleaved behind the busy model.
  std::vector<std::future<torch::Tensor>> results;
  for (int id = 1; id <= 6; ++id) results.push_back(batcher.submit(request(id), id % 2 ? a : b));
  gate_.open();
  ASSERT_TRUE(ready(blocker));
  for (int id = 1; id <= 6; ++id) {
    auto& result = results[static_cast<size_t>(id - 1)];
    ASSERT_TRUE(ready(result)) << "request " << id;
    EXPECT_TRUE(torch::equal(result.get(), request(id) * (id % 2 ? 2 : 3))) << "request " << id;
  }
  EXPECT_EQ(recorder_a->batches(), (std::vector<std::vector<float>>{{1, 3, 5}}));
  EXPECT_EQ(recorder_b->batches(), (std::vector<std::vector<float>>{{2, 4, 6}}));
}

TEST_F(BatcherTest, StopAnswersWhatIsQueuedThenRefuses) {
  Batcher& batcher = start(/*max_batch=*/2, /*max_delay=*/1ms, /*max_queue=*/1 << 20);
  const auto recorder = std::make_shared<Recorder>();
  const auto doubled = forward(recorder, /*gated=*/true);
  std::vector<std::future<torch::Tensor>> results;
  results.push_back(batcher.submit(request(0), doubled));
  ASSERT_TRUE(gate_.reached());
  for (int id = 1; id <= 5; ++id) results.push_back(batcher.submit(request(id), doubled));

  // stop() blocks until the queue is run, and the model is held at the gate: call it
  // elsewhere, and submit until it is seen (what gets in before that is answered too).
  std::thread stopper([&] { batcher.stop(); });
  bool refused = false;
  const auto deadline = Clock::now() + 10s;
  while (!refused && Clock::now() < deadline) {
    try {
      results.push_back(batcher.submit(request(static_cast<int>(results.size())), doubled));
      std::this_thread::sleep_for(1ms);
    } catch (const QueueFull& e) {
      ADD_FAILURE() << "QueueFull instead of the shutdown error: " << e.what();
      break;
    } catch (const std::runtime_error&) {
      refused = true;
    }
  }
  gate_.open();
  stopper.join();
  EXPECT_TRUE(refused) << "submit() still accepted requests 10 s after stop()";

  // stop() has returned: everything queued before it has its answer already.
  for (size_t id = 0; id < results.size(); ++id) {
    ASSERT_TRUE(ready(results[id], 0s)) << "request " << id << " unanswered after stop()";
    EXPECT_TRUE(torch::equal(results[id].get(), request(static_cast<int>(id)) * 2)) << "request " << id;
  }
  for (size_t s : recorder->sizes()) EXPECT_LE(s, 2u);
  EXPECT_NO_THROW(batcher.stop());
  EXPECT_THROW(batcher.submit(request(0), doubled), std::runtime_error);
}

}  // namespace
}  // namespace alexnet::serve
