// Dynamic batching for `alexnet serve`: requests decoded on many threads are
// queued; one thread runs the model on up to max_batch of them at a time and
// hands each request its own row of the output.
//
// How long it waits: a batch starts as soon as the model is free, unless
// requests are still being decoded (announced with arriving()); then it waits
// for them, up to max_delay after the oldest queued request, or until max_batch
// are queued. A lone client therefore never waits for company that is not
// coming, and under load the queue fills while the model runs.
#pragma once

#include "app/serve/metrics.h"

#include <torch/torch.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace alexnet::serve {

/// What a batch runs: (B, ...) inputs to (B, ...) outputs on the CPU. Requests
/// are batched only with others for the same function (a reload makes a new one).
using Forward = std::function<torch::Tensor(const torch::Tensor&)>;

/// submit() on a full queue: the server answers 503 with Retry-After.
class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Batcher {
 public:
  struct Options {
    int64_t max_batch = 32;
    std::chrono::microseconds max_delay{5000};
    int64_t max_queue = 256;  // queued inputs; more are refused with QueueFull
  };
  Batcher(Options options, Metrics& metrics);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  /// Queues one input (its batch row, e.g. (3, H, W)); the future gets its output
  /// row, or the exception the forward pass threw. Throws QueueFull, or
  /// std::runtime_error after stop().
  std::future<torch::Tensor> submit(torch::Tensor input, std::shared_ptr<const Forward> forward);

  /// +1 when a request starts decoding, -1 when it is queued or has failed.
  void arriving(int delta);

  /// Runs what is queued, then ends the batching thread. Idempotent.
  void stop();

 private:
  struct Item {
    torch::Tensor input;
    std::shared_ptr<const Forward> forward;
    std::promise<torch::Tensor> result;
    std::chrono::steady_clock::time_point queued;
  };
  void run();

  const Options options_;
  Metrics& metrics_;
  std::mutex mutex_;
  std::mutex join_mutex_;
  std::condition_variable wake_;
  std::deque<Item> queue_;
  int arriving_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace alexnet::serve
