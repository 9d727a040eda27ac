// The file a run starts from and the files it leaves: --weights or --resume opened
// (once, before the data), a checkpoint's optimiser state, position and generators
// restored, and checkpoints and weights written, from one CPU copy per save.
#include "app/engine/trainer.h"
#include "app/engine/trainer_internal.h"

#include <spdlog/spdlog.h>

#include <mutex>

namespace alexnet::engine {

torch::Tensor generator_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void restore_generator(at::Generator gen, const torch::Tensor& state, const std::string& source,
                       const char* key) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  try {
    gen.set_state(state);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, source, ": bad ", key, " (", e.what_without_backtrace(), ")");
  }
}

void Trainer::open_weights() {
  const std::string& path = !config_.resume.empty() ? config_.resume : config_.weights;
  if (path.empty()) {
    start_file_.reset();
    return;
  }
  if (!start_file_ || start_file_->path() != path) start_file_ = std::make_shared<const WeightsFile>(path);
  if (!config_.resume.empty()) {
    resumed_ = read_train_state(*start_file_);
    TORCH_CHECK(resumed_->epoch >= -1 && resumed_->epoch_step >= 0, path, ": bad position (epoch ",
                resumed_->epoch, ", step ", resumed_->epoch_step, ")");
  }
  // The file decides the architecture and its input channels.
  const AlexNetOptions file = start_file_->options();
  config_.in_channels = file.in_channels();
  config_.arch = file.arch();
}

// A checkpoint's optimiser state, position and generators.
void Trainer::restore() {
  if (!resumed_) {
    start_epoch_ = config_.start_epoch;  // train.py's --start-epoch: the schedule begins there
    return;
  }
  const std::string& path = config_.resume;
  const auto& params = step_->params();
  auto& buffers = step_->sgd().momentum_buffers();
  for (size_t i = 0; i < params.size() && i < resumed_->momentum.size(); ++i) {
    if (!resumed_->momentum[i].defined()) continue;
    TORCH_CHECK(resumed_->momentum[i].sizes() == params[i].sizes(), path, ": momentum buffer ", i,
                " has shape ", resumed_->momentum[i].sizes(), ", expected ", params[i].sizes());
    buffers[i] = resumed_->momentum[i].to(device_, torch::kFloat32).contiguous();
  }
  if (comm_) {
    std::vector<torch::Tensor> defined;
    for (auto& b : buffers)
      if (b.defined()) defined.push_back(b);
    comm_->broadcast(defined, "broadcast of rank 0's momentum buffers");
  }
  start_epoch_ = resumed_->epoch + 1;
  best_top1_ = resumed_->best_top1;
  skip_steps_ = resumed_->epoch_step;
  if (resumed_->cuda_rng_state.defined() && device_.is_cuda())  // dropout on CUDA draws from it
    restore_generator(at::globalContext().defaultGenerator(device_), resumed_->cuda_rng_state, path,
                      "cuda_rng_state");
  if (resumed_->rng_state.defined())
    restore_generator(at::detail::getDefaultCPUGenerator(), resumed_->rng_state, path, "rng_state");
  spdlog::info("resuming {} at epoch {} step {}", path, start_epoch_ + 1, skip_steps_);
  const pth::Value* e = resumed_->args.is_dict() ? resumed_->args.find("epochs") : nullptr;
  if (e && e->is_int() && e->as_int() != config_.epochs && schedule_.per_step &&
      schedule_.kind != LrScheduler::kConstant)
    spdlog::warn("{} was trained for a run of {} epochs; with --epochs {} the per-step schedule "
                 "follows a new curve from here (--lr-update epoch continues train.py's)",
                 path, e->as_int(), config_.epochs);
  TORCH_CHECK(start_epoch_ < config_.epochs || (start_epoch_ == config_.epochs && skip_steps_ == 0), path,
              ": already trained ", start_epoch_, " epochs; --epochs ", config_.epochs,
              " leaves nothing to do");
}

WeightsInfo Trainer::weights_info() const {
  // What predict needs to run the weights as validation ran them.
  const data::TransformOptions t = transform_for(*val_set_, config_, /*train=*/false);
  InputTransform input;
  input.resize_size = t.resize_size();
  input.crop_size = t.image_size();
  for (size_t c = 0; c < 3; ++c) {
    input.mean[c] = t.mean()[c];
    input.std[c] = t.std()[c];
  }
  return {train_set_->class_names(), input};
}

NamedTensors Trainer::cpu_weights() const {
  NamedTensors weights = state_dict(*model_);
  for (auto& [n, t] : weights) t = t.to(torch::kCPU).contiguous();
  return weights;
}

TrainCheckpoint Trainer::checkpoint(int64_t completed_epoch, int64_t epoch_step) const {
  TrainCheckpoint c;
  c.model = cpu_weights();
  for (auto& b : step_->sgd().momentum_buffers()) c.momentum.push_back(b.defined() ? b.to(torch::kCPU) : b);
  c.epoch = completed_epoch;
  c.epoch_step = epoch_step;
  c.rng_state = generator_state(at::detail::getDefaultCPUGenerator());
  if (device_.is_cuda()) c.cuda_rng_state = generator_state(at::globalContext().defaultGenerator(device_));
  c.args = args_value(config_);
  c.best_top1 = best_top1_;
  c.info = weights_info();
  return c;
}

void Trainer::write_checkpoint(const TrainCheckpoint& c, double next_lr, const std::string& path) const {
  save_train_checkpoint(path, c, step_->sgd().options(), schedule_, next_lr);
}

void Trainer::save_checkpoint(int64_t completed_epoch, int64_t epoch_step, double next_lr) {
  if (lead_) write_checkpoint(checkpoint(completed_epoch, epoch_step), next_lr, checkpoint_path_);
}

}  // namespace alexnet::engine
