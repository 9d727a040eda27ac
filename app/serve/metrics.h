// What `alexnet serve` counts, in Prometheus's text format (version 0.0.4):
// requests by path and status, latency and batch-size histograms, the queue's
// depth, images per second over the last seconds, reloads. Thread-safe; no
// LibTorch, so the unit test builds it alone.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::serve {

/// A cumulative histogram with fixed upper bounds (the +Inf bucket is implied).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  /// Lines NAME_bucket{le="..."}, NAME_sum and NAME_count.
  std::string render(const std::string& name) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  using Clock = std::chrono::steady_clock;
  Metrics();

  /// One HTTP response. Paths other than the server's own are counted as "other".
  void request(const std::string& path, int status, double seconds);
  /// One forward pass of `images` images.
  void batch(int64_t images);
  void set_queue_depth(int64_t depth);
  void reload(bool ok);
  /// Connections: how many are open, and one closed, by why ("idle", "refused", "per_client_limit", ...).
  void set_connections_open(int64_t open);
  void connection_closed(const std::string& reason);

  uint64_t forward_passes() const;
  uint64_t images() const;
  /// Images classified per second over the last `window` (default 10 s).
  double images_per_second() const;

  /// The whole exposition, # HELP and # TYPE lines included.
  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  Histogram latency_;      // POST /predictions only, seconds
  Histogram batch_size_;   // images per forward pass
  uint64_t forward_passes_ = 0;
  uint64_t images_ = 0;
  int64_t queue_depth_ = 0;
  uint64_t reloads_ok_ = 0, reloads_failed_ = 0;
  int64_t connections_open_ = 0;
  std::map<std::string, uint64_t> connections_closed_;
  std::deque<std::pair<Clock::time_point, int64_t>> recent_;  // (when, images) of the last window
  Clock::time_point started_ = Clock::now();
  static constexpr std::chrono::seconds kWindow{10};
};

}  // namespace alexnet::serve
