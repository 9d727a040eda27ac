#include "data/loader.h"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace alexnet::data {

std::vector<int64_t> shard_indices(int64_t dataset_size, bool shuffle, uint64_t seed,
                                   int64_t epoch, int64_t rank, int64_t world_size) {
  TORCH_CHECK(dataset_size > 0, "loader: empty dataset");
  TORCH_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "loader: rank ", rank,
              " outside world size ", world_size);
  std::vector<int64_t> order(dataset_size);
  if (shuffle) {
    // DistributedSampler: g = torch.Generator(); g.manual_seed(seed + epoch); torch.randperm(n, g).
    at::Generator generator =
        at::make_generator<at::CPUGeneratorImpl>(seed + static_cast<uint64_t>(epoch));
    const torch::Tensor perm = torch::randperm(dataset_size, generator, torch::kInt64);
    std::copy_n(perm.data_ptr<int64_t>(), dataset_size, order.begin());
  } else {
    for (int64_t i = 0; i < dataset_size; ++i) order[i] = i;
  }
  // Pad by repeating the start (cyclically when padding exceeds the list) to a multiple of world_size.
  const int64_t per_rank = (dataset_size + world_size - 1) / world_size;
  const int64_t total = per_rank * world_size;
  for (int64_t i = dataset_size; i < total; ++i) order.push_back(order[i % dataset_size]);
  std::vector<int64_t> mine;
  mine.reserve(per_rank);
  for (int64_t i = rank; i < total; i += world_size) mine.push_back(order[i]);
  return mine;
}

Loader::Loader(std::shared_ptr<const Dataset> dataset, Pipeline pipeline, LoaderOptions options)
    : dataset_(std::move(dataset)), pipeline_(std::move(pipeline)), options_(options) {
  TORCH_CHECK(dataset_ != nullptr, "loader: no dataset");
  TORCH_CHECK(options_.batch_size() > 0, "loader: batch size must be positive, got ",
              options_.batch_size());
  TORCH_CHECK(options_.workers() >= 0, "loader: negative worker count ", options_.workers());
  TORCH_CHECK(options_.prefetch() > 0, "loader: prefetch must be positive, got ",
              options_.prefetch());
  TORCH_CHECK(options_.world_size() > 0 && options_.rank() >= 0 &&
                  options_.rank() < options_.world_size(),
              "loader: rank ", options_.rank(), " outside world size ", options_.world_size());
  TORCH_CHECK(dataset_->size() > 0, "loader: ", dataset_->description(), " is empty");
  for (int64_t w = 0; w < options_.workers(); ++w) workers_.emplace_back([this] { worker_loop(); });
}

Loader::~Loader() { stop_workers(); }

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    ++generation_;  // workers abandon the batch they are on
  }
  work_ready_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
}

int64_t Loader::num_samples() const {
  const int64_t n = dataset_->size();
  const int64_t world = options_.world_size();
  const int64_t per_rank = options_.pad_shards() || world == 1
                               ? (n + world - 1) / world
                               : n / world + (options_.rank() < n % world ? 1 : 0);
  if (!options_.drop_last()) return per_rank;
  return per_rank / options_.batch_size() * options_.batch_size();
}

int64_t Loader::num_batches() const {
  const int64_t n = num_samples();
  return (n + options_.batch_size() - 1) / options_.batch_size();
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  std::vector<int64_t> order =
      shard_indices(dataset_->size(), options_.shuffle(), options_.seed(), epoch, options_.rank(),
                    options_.world_size());
  if (!options_.pad_shards() && options_.world_size() > 1) {
    // The shard without the padded tail: rank r holds order[r], order[r + w], ... below n.
    order.resize(static_cast<size_t>(
        (dataset_->size() - options_.rank() + options_.world_size() - 1) / options_.world_size()));
  }
  order.resize(num_samples());  // drop_last trims the incomplete tail batch
  std::vector<std::vector<int64_t>> batches;
  const auto bs = static_cast<size_t>(options_.batch_size());
  for (size_t i = 0; i < order.size(); i += bs)
    batches.emplace_back(order.begin() + i, order.begin() + std::min(order.size(), i + bs));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++generation_;
    epoch_ = epoch;
    const auto first = std::min(static_cast<size_t>(std::max<int64_t>(0, first_batch)), batches.size());
    batches_ = std::move(batches);
    next_claim_ = first;
    next_deliver_ = first;
    ready_.clear();
  }
  work_ready_.notify_all();
}

namespace {

std::string message_of(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  return c10_error ? c10_error->what_without_backtrace() : e.what();
}

}  // namespace

Loader::Result Loader::make_batch(const std::vector<int64_t>& indices, int64_t epoch,
                                  uint64_t generation) const {
  Result result;
  const auto shape = pipeline_.output_shape();  // (C, S, S)
  const int64_t sample_floats = shape[0] * shape[1] * shape[2];
  const auto count = static_cast<int64_t>(indices.size());
  const bool channels_last = options_.channels_last();
  // (B, C, S, S), written in place by the pipeline; channels-last is a permuted (B, S, S, C) buffer.
  torch::Tensor images =
      channels_last
          ? torch::empty({count, shape[1], shape[2], shape[0]}, torch::kFloat32).permute({0, 3, 1, 2})
          : torch::empty({count, shape[0], shape[1], shape[2]}, torch::kFloat32);
  torch::Tensor labels = torch::empty({count}, torch::kInt64);
  torch::Tensor kept = torch::empty({count}, torch::kInt64);
  float* image_ptr = images.data_ptr<float>();
  int64_t* label_ptr = labels.data_ptr<int64_t>();
  int64_t* kept_ptr = kept.data_ptr<int64_t>();
  int64_t n = 0;
  for (const int64_t index : indices) {
    if (generation_.load(std::memory_order_relaxed) != generation) return result;  // abandoned
    try {
      SampleRng rng(options_.seed(), epoch, index);
      const torch::Tensor image = dataset_->load(index);  // (H, W, C) uint8
      pipeline_.apply_into(image, rng, image_ptr + n * sample_floats, channels_last);
      label_ptr[n] = dataset_->label(index);
      kept_ptr[n] = index;
      ++n;
    } catch (const std::exception& e) {
      // Decoding errors name the file already; transform errors get it here.
      const std::string name = dataset_->name(index);
      std::string message = message_of(e);
      if (message.find(name) == std::string::npos) message = name + ": " + message;
      if (!options_.skip_bad()) {
        try {
          TORCH_CHECK(false, message);
        } catch (...) {
          result.error = std::current_exception();
        }
        return result;
      }
      spdlog::warn("skipping {}", message);
      ++result.skipped;
    }
  }
  if (n == 0) return result;
  Batch batch{images.narrow(0, 0, n), labels.narrow(0, 0, n), kept.narrow(0, 0, n)};
  if (n < count) {
    // Skipped samples leave a shorter batch; copy so it owns exactly its memory.
    batch.images = batch.images.clone();
    batch.labels = batch.labels.clone();
    batch.indices = batch.indices.clone();
  }
  if (options_.pin_memory() && torch::cuda::is_available()) {
    batch.images = batch.images.pin_memory();
    batch.labels = batch.labels.pin_memory();
  }
  result.batch = std::move(batch);
  return result;
}

void Loader::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_ready_.wait(lock, [this] {
      return stopping_ || (next_claim_ < batches_.size() &&
                           next_claim_ < next_deliver_ + static_cast<size_t>(options_.prefetch()));
    });
    if (stopping_) return;
    const size_t b = next_claim_++;
    const uint64_t generation = generation_.load();
    const int64_t epoch = epoch_;
    const std::vector<int64_t> indices = batches_[b];
    lock.unlock();
    Result result;
    try {
      result = make_batch(indices, epoch, generation);
    } catch (...) {
      // Failures outside a sample (e.g. allocating the batch) reach the consumer too.
      result.error = std::current_exception();
    }
    lock.lock();
    if (generation_.load() != generation) continue;  // a new epoch started meanwhile
    ready_.emplace(b, std::move(result));
    batch_ready_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  TORCH_CHECK(epoch_ >= 0, "loader: call start_epoch() before next()");
  for (;;) {
    Result result;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (next_deliver_ >= batches_.size()) return std::nullopt;
      const size_t b = next_deliver_;
      if (workers_.empty()) {
        // No workers: load here, in the consumer's thread.
        result = make_batch(batches_[b], epoch_, generation_.load());
      } else {
        batch_ready_.wait(lock, [&] { return ready_.count(b) != 0; });
        result = std::move(ready_.at(b));
        ready_.erase(b);
      }
      ++next_deliver_;
      skipped_ += result.skipped;
      if (result.error) {
        // Fail fast: this epoch ends here; the workers stop claiming its batches.
        next_deliver_ = batches_.size();
        next_claim_ = batches_.size();
        ++generation_;
        ready_.clear();
      }
    }
    work_ready_.notify_all();
    if (result.error) std::rethrow_exception(result.error);
    if (result.batch) return std::move(result.batch);
    // Every sample of this batch was skipped: move on to the next one.
  }
}

}  // namespace alexnet::data
