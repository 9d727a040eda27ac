// How long the run will take: before it starts, from one timed step that leaves
// no trace; while it runs, from the epoch's pace and the last evaluation's.
#include "app/engine/trainer.h"
#include "app/engine/trainer_internal.h"

#include <spdlog/fmt/fmt.h>

#include <chrono>

namespace alexnet::engine {

namespace {

// Runs shorter than this are not timed before they start: two steps more would be a large
// part of them, and they end before an estimate would matter.
constexpr int64_t kMinStepsToEstimate = 20;

}  // namespace

std::string Trainer::estimate_duration() {
  const int64_t total_steps = (config_.epochs - start_epoch_) * steps_per_epoch_ - skip_steps_;
  if (total_steps < kMinStepsToEstimate)
    return "a short run (" + std::to_string(total_steps) + (total_steps == 1 ? " step)" : " steps)");
  // One step on a batch of zeros, timed. The generators are put back and the gradients cleared,
  // so the run goes on bit for bit as without it; the reducer does not exist yet (no collective).
  const torch::Tensor cpu_state = generator_state(at::detail::getDefaultCPUGenerator());
  torch::Tensor cuda_state;
  if (device_.is_cuda()) cuda_state = generator_state(at::globalContext().defaultGenerator(device_));
  const data::TransformOptions t = transform_for(*train_set_, config_, /*train=*/true);
  auto x = torch::zeros({config_.batch_size, config_.in_channels, t.image_size(), t.image_size()},
                        torch::TensorOptions().device(device_));  // (B, C, S, S)
  if (channels_last_) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  const auto y = torch::zeros({config_.batch_size}, torch::TensorOptions().dtype(torch::kLong).device(device_));
  model_->train();
  // The first pass of a process sets up memory and kernels (about 5x a step here): the second is timed.
  double step = 0;
  for (int pass = 0; pass < 2; ++pass) {
    const auto begin = std::chrono::steady_clock::now();
    step_->forward(x, y).loss.backward();
    if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
    step = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  }
  for (auto& p : model_->parameters()) p.mutable_grad() = torch::Tensor();
  restore_generator(at::detail::getDefaultCPUGenerator(), cpu_state, "the step timing", "CPU generator");
  if (cuda_state.defined())
    restore_generator(at::globalContext().defaultGenerator(device_), cuda_state, "the step timing", "CUDA generator");
  // Evaluation runs the forward pass only, about a third of a training step per image.
  const int64_t world = comm_ ? comm_->world_size() : 1;
  const double steps = static_cast<double>(total_steps);
  const double eval = static_cast<double>(config_.epochs - start_epoch_) * static_cast<double>(val_set_->size()) /
                      static_cast<double>(config_.batch_size * world) * step / 3;
  return "about " + format_duration(steps * step + eval) + " (a step's compute took " +
         fmt::format("{:.2f}", step) + " s; loading may add to it)";
}

std::string Trainer::run_eta(int64_t epoch, int64_t step, const Progress& progress) const {
  // The steps left at this epoch's pace, and one evaluation per epoch left at the
  // last one's (or, before any, at the training pace over the validation images).
  const double per_step = progress.rate() > 0 ? static_cast<double>(config_.batch_size) / progress.rate() : 0;
  const int64_t epochs_after = config_.epochs - epoch - 1;
  const double steps_left = static_cast<double>(steps_per_epoch_ - step + epochs_after * steps_per_epoch_);
  const double eval = last_eval_seconds_ >= 0 ? last_eval_seconds_
                                              : per_step / 3 * static_cast<double>(val_loader_->num_batches());
  return format_duration(steps_left * per_step + static_cast<double>(epochs_after + 1) * eval);
}

}  // namespace alexnet::engine
