#include "app/serve/batcher.h"

#include <spdlog/spdlog.h>

#include <vector>

namespace alexnet::serve {

Batcher::Batcher(Options options, Metrics& metrics) : options_(options), metrics_(metrics) {
  TORCH_CHECK(options_.max_batch > 0 && options_.max_queue > 0, "batcher: max_batch and max_queue must be positive");
  thread_ = std::thread([this] { run(); });
}

Batcher::~Batcher() { stop(); }

std::future<torch::Tensor> Batcher::submit(torch::Tensor input, std::shared_ptr<const Forward> forward) {
  Item item{std::move(input), std::move(forward), {}, std::chrono::steady_clock::now()};
  std::future<torch::Tensor> result = item.result.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw std::runtime_error("the server is shutting down");
    if (static_cast<int64_t>(queue_.size()) >= options_.max_queue)
      throw QueueFull("the queue holds " + std::to_string(queue_.size()) + " images, its limit (--max-queue)");
    queue_.push_back(std::move(item));
    metrics_.set_queue_depth(static_cast<int64_t>(queue_.size()));
  }
  wake_.notify_all();
  return result;
}

void Batcher::arriving(int delta) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    arriving_ += delta;
  }
  if (delta < 0) wake_.notify_all();
}

void Batcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  std::lock_guard<std::mutex> lock(join_mutex_);  // two callers at once: one joins
  if (thread_.joinable()) thread_.join();
}

void Batcher::run() {
  c10::InferenceMode inference;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing is left
    // Wait for requests being decoded, within the oldest one's delay.
    const auto deadline = queue_.front().queued + options_.max_delay;
    wake_.wait_until(lock, deadline, [&] {
      return stopping_ || arriving_ <= 0 || static_cast<int64_t>(queue_.size()) >= options_.max_batch;
    });
    // The batch: the oldest requests for the same model, up to max_batch.
    std::vector<Item> batch;
    std::shared_ptr<const Forward> forward = queue_.front().forward;
    for (auto it = queue_.begin(); it != queue_.end() && static_cast<int64_t>(batch.size()) < options_.max_batch;) {
      if (it->forward == forward) {
        batch.push_back(std::move(*it));
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
    metrics_.set_queue_depth(static_cast<int64_t>(queue_.size()));
    lock.unlock();

    try {
      std::vector<torch::Tensor> inputs;
      inputs.reserve(batch.size());
      for (const Item& item : batch) inputs.push_back(item.input);
      const torch::Tensor outputs = (*forward)(torch::stack(inputs));
      TORCH_CHECK(outputs.size(0) == static_cast<int64_t>(batch.size()), "batcher: ", outputs.size(0),
                  " outputs for a batch of ", batch.size());
      metrics_.batch(static_cast<int64_t>(batch.size()));
      for (size_t i = 0; i < batch.size(); ++i)
        batch[i].result.set_value(outputs[static_cast<int64_t>(i)].clone());  // its own row, not a view
    } catch (...) {
      const std::exception_ptr error = std::current_exception();
      for (Item& item : batch) {
        try {
          item.result.set_exception(error);
        } catch (const std::future_error&) {  // answered before the failure
        }
      }
    }
    batch.clear();  // inputs and models (a reloaded one's last reference) are let go outside the lock
    forward.reset();
    lock.lock();
  }
}

}  // namespace alexnet::serve
