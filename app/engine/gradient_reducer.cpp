// The gradient reducer: DistributedDataParallel's bucketed all-reduce of the
// gradients, started from autograd hooks while backward runs, averaged in the
// buckets, which the parameters' .grad then view (no copy back).
#include "app/engine/distributed.h"

#include <c10/util/Exception.h>

#include <chrono>

namespace alexnet::engine {

GradientReducer::GradientReducer(Communicator& comm, std::vector<torch::Tensor> params,
                                 int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)), where_(params_.size()) {
  // Reverse order: the classifier's gradients come first out of backward().
  Bucket current;
  int64_t bytes = 0;
  auto close = [&] {
    if (current.params.empty()) return;
    const int64_t n = current.offsets.back() + params_[current.params.back()].numel();
    current.flat = torch::zeros({n}, params_[current.params.front()].options().dtype(torch::kFloat32));
    // Each gradient's place in flat, laid out as its parameter is (channels-last
    // convolutions included), so that the optimiser reads it as it would .grad.
    for (size_t s = 0; s < current.params.size(); ++s) {
      const auto& p = params_[current.params[s]];
      current.views.push_back(current.flat.narrow(0, current.offsets[s], p.numel()).as_strided(p.sizes(), p.strides()));
    }
    buckets_.push_back(std::move(current));
    current = Bucket{};
    bytes = 0;
  };
  for (size_t i = params_.size(); i-- > 0;) {
    const auto& p = params_[i];
    TORCH_CHECK(p.scalar_type() == torch::kFloat32, "distributed: parameter ", i, " is ",
                p.scalar_type(), ", expected float32 master weights");
    TORCH_CHECK(p.is_non_overlapping_and_dense(), "distributed: parameter ", i, " (", p.sizes(),
                ", strides ", p.strides(), ") is not dense");
    const int64_t offset = current.params.empty()
                               ? 0
                               : current.offsets.back() + params_[current.params.back()].numel();
    where_[i] = {buckets_.size(), current.params.size()};
    current.params.push_back(i);
    current.offsets.push_back(offset);
    bytes += p.numel() * 4;
    if (bytes >= bucket_bytes) close();
  }
  close();
  self_ = std::make_shared<GradientReducer*>(this);
  std::weak_ptr<GradientReducer*> self = self_;
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].register_hook([self, i](torch::Tensor grad) {
      if (auto reducer = self.lock()) (*reducer)->on_grad(i, grad);
    });
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::prepare() {
  // .grad of the last step views a bucket: let backward produce a new one rather
  // than accumulate into the bucket while its all-reduce runs. finish() replaces
  // .grad whatever it holds.
  for (auto& p : params_) p.mutable_grad() = torch::Tensor();
  for (auto& b : buckets_) {
    b.pending = b.params.size();
    b.work.reset();
  }
  next_launch_ = 0;
  active_ = true;
}

void GradientReducer::on_grad(size_t param, const torch::Tensor& grad) {
  if (!active_) return;
  const auto [b, slot] = where_[param];
  Bucket& bucket = buckets_[b];
  TORCH_CHECK(bucket.pending > 0, "distributed: parameter ", param,
              " received two gradients in one step");
  bucket.views[slot].copy_(grad);
  --bucket.pending;
  launch_ready();
}

void GradientReducer::launch_ready() {
  // In bucket order only, so every rank issues the same collectives in the same order.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& bucket = buckets_[next_launch_];
    bucket.work = comm_.all_reduce_sum_async(bucket.flat, "gradient all-reduce");
    ++next_launch_;
  }
}

int64_t GradientReducer::bytes_per_step() const {
  int64_t bytes = 0;
  for (const auto& b : buckets_) bytes += b.flat.numel() * 4;
  return bytes;
}

void GradientReducer::finish() {
  TORCH_CHECK(active_, "GradientReducer::finish without prepare");
  active_ = false;
  TORCH_CHECK(next_launch_ == buckets_.size(), "distributed: only ", next_launch_, " of ",
              buckets_.size(), " gradient buckets were ready after backward()");
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / static_cast<double>(comm_.world_size());
  for (auto& bucket : buckets_) {
    const auto start = std::chrono::steady_clock::now();
    bucket.work->wait();
    waited_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bucket.work.reset();
    bucket.flat.mul_(scale);  // the sum over the ranks becomes their mean, in place
    for (size_t s = 0; s < bucket.params.size(); ++s) params_[bucket.params[s]].mutable_grad() = bucket.views[s];
  }
  ++steps_;
}

}  // namespace alexnet::engine
