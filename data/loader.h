// A multi-threaded batch loader: worker threads load and transform samples
// into batches while the consumer trains on earlier ones. Shuffling and
// sharding follow PyTorch's DistributedSampler; augmentation randomness is per
// sample, so the batches depend on the seed only, not on the thread count.
#pragma once

#include "data/dataset.h"
#include "data/transforms.h"

#include <torch/torch.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace alexnet::data {

struct Batch {
  torch::Tensor images;  // (B, C, S, S) float32
  torch::Tensor labels;  // (B,) int64
  torch::Tensor indices;  // (B,) int64, the dataset index of each sample
};

struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 128;
  /// Reshuffle every epoch (torch.randperm seeded with seed + epoch, as DistributedSampler).
  TORCH_ARG(bool, shuffle) = true;
  /// Seeds the shuffle and every sample's augmentation.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Drop the last batch when it is smaller than batch_size.
  TORCH_ARG(bool, drop_last) = false;
  /// Worker threads; 0 loads in the consumer's thread, inside next().
  TORCH_ARG(int64_t, workers) = 2;
  /// Batches prepared ahead of the consumer, at most.
  TORCH_ARG(int64_t, prefetch) = 4;
  /// This process's shard: rank in [0, world_size).
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  /// Pad the shards to equal sizes by repeating samples (DistributedSampler; what
  /// training needs). Off: every sample exactly once over all ranks, shards differ
  /// by at most one (what evaluation needs to count each image once).
  TORCH_ARG(bool, pad_shards) = true;
  /// Skip unreadable samples with a warning instead of failing.
  TORCH_ARG(bool, skip_bad) = false;
  /// Images in channels-last memory format (shape stays (B, C, S, S)).
  TORCH_ARG(bool, channels_last) = false;
  /// Page-locked batches for faster copies to CUDA; ignored without CUDA.
  TORCH_ARG(bool, pin_memory) = false;
};

/// The dataset indices this rank sees in `epoch`, as PyTorch's
/// DistributedSampler(drop_last=False): a permutation from torch.randperm with
/// a generator seeded seed + epoch (or 0..N-1 unshuffled), padded by repeating
/// its start to a multiple of world_size, then every world_size-th from rank.
std::vector<int64_t> shard_indices(int64_t dataset_size, bool shuffle, uint64_t seed,
                                   int64_t epoch, int64_t rank, int64_t world_size);

class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> dataset, Pipeline pipeline, LoaderOptions options = {});
  /// Stops the workers (abandoning batches in flight) and joins them.
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// Batches per epoch on this rank.
  int64_t num_batches() const;
  /// Samples per epoch on this rank (padding included, the last batch's tail dropped with drop_last).
  int64_t num_samples() const;
  const Dataset& dataset() const { return *dataset_; }
  const Pipeline& pipeline() const { return pipeline_; }
  const LoaderOptions& options() const { return options_; }

  /// Begins an epoch (abandoning any unfinished one): fixes its order and
  /// starts the workers on it.
  /// first_batch > 0 starts inside the epoch (resuming): the batches before it
  /// are neither loaded nor returned, and the rest are exactly those of a full epoch.
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  /// The next batch in order, or nullopt at the end of the epoch. Rethrows a
  /// worker's error (naming the file) unless skip_bad is set.
  std::optional<Batch> next();
  /// Samples skipped as unreadable so far (skip_bad), over all epochs.
  int64_t skipped() const { return skipped_; }

 private:
  struct Result {
    std::optional<Batch> batch;  // empty when every sample was skipped
    std::exception_ptr error;
    int64_t skipped = 0;
  };

  // Loads and transforms one batch; stops early (returning nothing useful)
  // when the epoch's generation changes.
  Result make_batch(const std::vector<int64_t>& indices, int64_t epoch, uint64_t generation) const;
  void worker_loop();
  void stop_workers();

  std::shared_ptr<const Dataset> dataset_;
  Pipeline pipeline_;
  LoaderOptions options_;

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;   // workers wait for a batch to claim
  std::condition_variable batch_ready_;  // the consumer waits for its next batch
  bool stopping_ = false;
  std::atomic<uint64_t> generation_{0};  // bumped by every start_epoch
  int64_t epoch_ = -1;
  std::vector<std::vector<int64_t>> batches_;  // this epoch's batches (dataset indices)
  size_t next_claim_ = 0;                      // first batch no worker has claimed
  size_t next_deliver_ = 0;                    // the batch next() returns next
  std::map<size_t, Result> ready_;             // finished batches not yet delivered
  int64_t skipped_ = 0;
};

}  // namespace alexnet::data
