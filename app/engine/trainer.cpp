#include "app/engine/trainer.h"

#include "app/engine/checkpoint.h"
#include "app/runtime/compute.h"
#include "app/runtime/json.h"
#include "app/runtime/machine.h"
#include "data/transforms.h"

#include <ATen/Context.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace alexnet::engine {

namespace {

namespace fs = std::filesystem;

// Runs shorter than this are not timed before they start: two steps more would be a large
// part of them, and they end before an estimate would matter.
constexpr int64_t kMinStepsToEstimate = 20;
using runtime::JsonObject;

// Set by SIGINT/SIGTERM; the loop finishes its step, saves and exits. A second
// signal restores the default action, so pressing Ctrl-C twice quits at once.
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
  std::signal(sig, SIG_DFL);
}

// The signal that stopped the run (SIGTERM when another rank was stopped).
int stop_signal() { return g_stop_signal.load() != 0 ? g_stop_signal.load() : SIGTERM; }

// Fails now, not after an epoch, when the output folder cannot take files.
// `made` receives the folders it created, outermost first.
void check_output_dir(const std::string& dir, std::vector<std::string>* made) {
  std::error_code ec;
  for (fs::path p = fs::path(dir).lexically_normal(); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    made->insert(made->begin(), p.string());
    if (p == p.parent_path()) break;
  }
  fs::create_directories(dir, ec);
  TORCH_CHECK(!ec, "--output ", dir, ": cannot create folder (", ec.message(), ")");
  TORCH_CHECK(fs::is_directory(dir), "--output ", dir, ": not a folder");
  const std::string probe = dir + "/.write-test-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(probe.c_str(), "w");
  TORCH_CHECK(f != nullptr, "--output ", dir, ": folder is not writable (", std::strerror(errno), ")");
  std::fclose(f);
  std::remove(probe.c_str());
}

data::TransformOptions transform_for(const data::Dataset& dataset, const TrainConfig& c, bool train) {
  auto t = data::default_transform_options(dataset.kind(), train);
  if (c.image_size > 0) {
    // Keep the recipe's resize/crop ratio (256/224 for ImageNet-style folders).
    t.resize_size(t.resize_size() * c.image_size / t.image_size()).image_size(c.image_size);
  }
  const bool idx = dataset.kind() == data::DatasetKind::kMnist ||
                   dataset.kind() == data::DatasetKind::kFashionMnist;
  const Augment augment = c.augment != Augment::kAuto ? c.augment : idx ? Augment::kNone : Augment::kFull;
  if (train && augment != Augment::kFull) {
    // The evaluation geometry (resize, center crop), with or without flips.
    t.train_crop(data::TrainCrop::kPadded).crop_padding(0).lighting_std(0);
    if (augment == Augment::kNone) t.train(false);
  }
  return t.in_channels(c.in_channels);
}

// Sets a generator's state from a checkpoint, naming the key when it does not fit.
void restore_generator(at::Generator gen, const torch::Tensor& state, const std::string& path,
                       const char* key) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  try {
    gen.set_state(state);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, path, ": bad ", key, " (", e.what_without_backtrace(), ")");
  }
}

torch::Tensor generator_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

}  // namespace

// Installs on_stop_signal for SIGINT and SIGTERM while alive; restores the previous handlers.
struct Trainer::SignalScope {
  SignalScope() {
    g_stop_signal.store(0);
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int);
    sigaction(SIGTERM, &action, &old_term);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
  struct sigaction old_int {};
  struct sigaction old_term {};
};

Trainer::Trainer(TrainConfig config, torch::Device device, bool threads_given)
    : config_(std::move(config)), device_(device) {
  // Distributed: connect first, so that a rank failing any check below ends the
  // others at their next collective instead of leaving them waiting.
  if (config_.distributed) connect(threads_given);
  lead_ = !comm_ || comm_->rank() == 0;
  if (lead_) check_output_dir(config_.output, &made_dirs_);
  try {
    start();
  } catch (...) {
    // A failed start leaves nothing behind: the folders it made, if still empty
    // (but for the empty metrics file it may have opened).
    metrics_.reset();
    std::error_code ec;
    if (!resumed_ && fs::exists(metrics_path_, ec) && fs::file_size(metrics_path_, ec) == 0) fs::remove(metrics_path_, ec);
    for (auto it = made_dirs_.rbegin(); it != made_dirs_.rend(); ++it)
      if (fs::is_empty(*it, ec)) fs::remove(*it, ec);
    throw;
  }
}

void Trainer::start() {
  checkpoint_path_ = config_.output + "/checkpoint.pth";
  TORCH_CHECK(!lead_ || config_.overwrite || !config_.resume.empty() || !fs::exists(checkpoint_path_),
              checkpoint_path_, " exists: continue it with --resume ", checkpoint_path_,
              ", start afresh with --overwrite, or choose another --output");
  open_weights();  // before the data: a bad file fails before a large folder is scanned
  open_data();
  build_model();
  restore();
  make_loaders();
  signals_ = std::make_unique<SignalScope>();
  {
    const Recipe& r = config_.recipe;
    spdlog::info("recipe {} ({}): lr {} momentum {}{} weight decay {} label smoothing {} clip {} dropout {}; "
                 "{} schedule", name_of(kRecipeNames, config_.recipe_name), config_.recipe_reason, r.lr,
                 r.momentum, r.nesterov ? " (Nesterov)" : "", r.weight_decay, r.label_smoothing,
                 r.clip_grad_norm > 0 ? fmt::format("{}", r.clip_grad_norm) : std::string("off"),
                 r.dropout, name_of(kLrSchedulers, config_.lr_scheduler));
  }
  spdlog::info("plan: {} epoch(s) of {} steps of {} images, {} on {}, validating on {} after each; {}; writing {}{}",
               config_.epochs - start_epoch_, steps_per_epoch_,
               config_.batch_size * (comm_ ? comm_->world_size() : 1),
               start_epoch_ > 0 || skip_steps_ > 0 ? "from epoch " + std::to_string(start_epoch_ + 1) + " step " +
                                                         std::to_string(skip_steps_ + 1)
                                                   : std::string("from the start"),
               train_set_->description(), val_set_->description(), estimate_duration(), config_.output,
               progress_style() == ProgressStyle::kBar ? "; the progress bar gives the time left (run ...)"
               : config_.print_freq > 0                 ? "; progress lines give the time left (run ...)"
                                                        : "");
  if (comm_) {
    reducer_ = std::make_unique<GradientReducer>(*comm_, step_->params());
    step_->set_reducer(reducer_.get());
    spdlog::info("distributed: gradients averaged in {} buckets; {} images per step over {} processes",
                 reducer_->num_buckets(), config_.batch_size * comm_->world_size(), comm_->world_size());
  }
}

Trainer::~Trainer() {
  if (failed_peer_) {
    // Gloo's worker threads may still be waiting on a dead link, each queued
    // collective for the whole --dist-timeout, and its destructor would join them:
    // leave the process group to the process's exit instead.
    reducer_.reset();
    (void)comm_.release();
  }
}

void Trainer::connect(bool threads_given) {
  const DistEnv env = read_dist_env();
  spdlog::set_pattern("[%H:%M:%S] [rank " + std::to_string(env.rank) + "] %v");
  if (env.rank != 0) spdlog::set_level(spdlog::level::warn);  // rank 0 alone logs
  if (device_.is_cuda()) {
    TORCH_CHECK(env.local_rank < static_cast<int64_t>(torch::cuda::device_count()),
                "--distributed: LOCAL_RANK ", env.local_rank, " but only ",
                torch::cuda::device_count(), " CUDA devices");
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  }
  if (!threads_given)  // share the cores among this machine's processes
    runtime::configure_threads(std::max(1, runtime::available_cpus() / static_cast<int>(env.local_world_size)));
  const DistBackend backend = config_.dist_backend != DistBackend::kAuto ? config_.dist_backend
                              : device_.is_cuda()                       ? DistBackend::kNccl
                                                                        : DistBackend::kGloo;
  TORCH_CHECK(backend != DistBackend::kNccl || device_.is_cuda(), "--dist-backend nccl needs --device cuda");
  TORCH_CHECK(backend != DistBackend::kGloo || !device_.is_cuda(),
              "--dist-backend gloo: this build averages CPU tensors only; use nccl with --device cuda");
  spdlog::info("distributed: {} processes, {} backend, rendezvous {}:{}, timeout {} s, {} threads each",
               env.world_size, name_of(kDistBackends, backend), env.master_addr, env.master_port, config_.dist_timeout,
               torch::get_num_threads());
  comm_ = Communicator::create(env, name_of(kDistBackends, backend), std::chrono::seconds(config_.dist_timeout));
}

void Trainer::open_weights() {
  const std::string& path = !config_.resume.empty() ? config_.resume : config_.weights;
  if (path.empty()) return;
  start_file_.emplace(path);
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

void Trainer::open_data() {
  train_set_ = data::open_dataset(config_.data, "train");
  val_set_ = data::open_dataset(config_.val.empty() ? config_.data : config_.val, "val");
  TORCH_CHECK(train_set_->class_names() == val_set_->class_names(), "validation data (",
              val_set_->description(), ") has other classes than the training data (",
              train_set_->description(), "): ", val_set_->num_classes(), " vs ", train_set_->num_classes());
  if (val_set_->description() == train_set_->description())
    spdlog::warn("validating on the training data: {} has no separate val/ split", config_.data);
  classes_ = train_set_->num_classes();
  TORCH_CHECK(config_.num_classes == 0 || config_.num_classes == classes_, "--num-classes ",
              config_.num_classes, ": the data (", train_set_->description(), ") has ", classes_, " classes");
  spdlog::info("data: train {} ({} images), val {} ({} images), {} classes", train_set_->description(),
               train_set_->size(), val_set_->description(), val_set_->size(), classes_);
  if (!start_file_) return;
  const int64_t file_classes = start_file_->options().num_classes();
  if (resumed_) {
    TORCH_CHECK(file_classes == classes_, config_.resume, ": checkpoint has ", file_classes,
                " classes, the data has ", classes_);
  } else if (file_classes != classes_) {
    TORCH_CHECK(config_.reset_classifier, config_.weights, ": weights have ", file_classes,
                " classes, the data has ", classes_,
                " (add --reset-classifier to fine-tune with a new last layer)");
  }
}

void Trainer::build_model() {
  precision_ = runtime::resolve_precision(config_.precision, device_, runtime::Workload::kTraining);
  runtime::configure_cuda_math(device_, precision_);  // before --deterministic, which overrides it
  channels_last_ = runtime::resolve_channels_last(config_.channels_last, device_, precision_);
  if (config_.deterministic) {
    if (device_.is_cuda()) ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setBenchmarkCuDNN(false);
  } else if (device_.is_cuda()) {
    at::globalContext().setBenchmarkCuDNN(true);
  }
  torch::manual_seed(static_cast<uint64_t>(config_.seed));
  model_ = AlexNet(AlexNetOptions()
                       .num_classes(classes_)
                       .dropout(config_.recipe.dropout)
                       .in_channels(config_.in_channels)
                       .arch(config_.arch));
  const bool vgg = config_.init == Init::kVgg ||
                   (config_.init == Init::kAuto && config_.arch == Arch::kTorchvision);
  if (resumed_) {
    start_file_->load_into(*model_);
  } else if (start_file_) {
    // Fine-tuning: every layer from the file, except a reset classifier.6.
    const bool reset = start_file_->options().num_classes() != classes_;
    start_file_->load_into(*model_, reset ? "classifier.6." : "");
    const size_t loaded = start_file_->entries().size() - (reset ? 2 : 0);
    if (reset)
      spdlog::info("weights: {} tensors from {} ({}, {} classes); classifier.6 (weight, bias) reset for the "
                   "data's {} classes, as torchvision initialises it", loaded, config_.weights,
                   format_name(start_file_->format()), start_file_->options().num_classes(), classes_);
    else
      spdlog::info("weights: all {} tensors from {} ({}, {} classes)", loaded, config_.weights,
                   format_name(start_file_->format()), classes_);
  } else {
    if (vgg) init_vgg_style(*model_);
    spdlog::info("init: {}", vgg ? "vgg (Kaiming fan-out convolutions, N(0, 0.01) linear layers)"
                             : config_.arch == Arch::kTorchvision ? "torchvision's"
                                                                  : "the 2012 paper's");
  }
  model_->to(device_);
  if (comm_) broadcast_module(*comm_, *model_);  // every rank starts from rank 0's weights
  if (channels_last_) runtime::to_channels_last(*model_);
  step_ = std::make_unique<TrainStep>(model_, config_.recipe, device_, precision_);
  schedule_ = config_.schedule();
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

void Trainer::make_loaders() {
  const int64_t rank = comm_ ? comm_->rank() : 0, world = comm_ ? comm_->world_size() : 1;
  const auto common = data::LoaderOptions()
                          .batch_size(config_.batch_size)
                          .workers(config_.workers)
                          .skip_bad(config_.skip_bad)
                          .channels_last(channels_last_)
                          .pin_memory(device_.is_cuda())
                          .rank(rank)
                          .world_size(world);
  train_loader_ = std::make_unique<data::Loader>(
      train_set_, data::Pipeline(transform_for(*train_set_, config_, true)),
      data::LoaderOptions(common).shuffle(true).seed(static_cast<uint64_t>(config_.seed)).drop_last(true));
  // Evaluation shards are not padded: every image counts once over the ranks.
  val_loader_ = std::make_unique<data::Loader>(
      val_set_, data::Pipeline(transform_for(*val_set_, config_, false)),
      data::LoaderOptions(common).shuffle(false).pad_shards(false));
  TORCH_CHECK(train_loader_->num_batches() > 0, config_.data, ": ", train_set_->size(),
              " training images make no full batch of ", config_.batch_size);
  steps_per_epoch_ = config_.max_steps > 0 ? std::min(config_.max_steps, train_loader_->num_batches())
                                           : train_loader_->num_batches();
  if (resumed_ && resumed_->epoch_step > 0) {
    // Mid-epoch: the remaining batches are only the same ones if the epoch is cut the same way.
    TORCH_CHECK(resumed_->epoch_step < steps_per_epoch_, config_.resume, ": stopped at step ",
                resumed_->epoch_step, " of an epoch that now has ", steps_per_epoch_, " steps");
    const auto same = [&](const char* key, const std::string& flag, int64_t now) {
      const pth::Value* v = resumed_->args.is_dict() ? resumed_->args.find(key) : nullptr;
      TORCH_CHECK(!v || !v->is_int() || v->as_int() == now, config_.resume, ": stopped mid-epoch with ",
                  flag, " ", v ? v->as_int() : 0, "; resume with the same value (got ", now, ")");
    };
    same("batch_size", "--batch-size", config_.batch_size);
    same("seed", "--seed", config_.seed);
    same("max_steps", "--max-steps", config_.max_steps);
  }
  const auto shape = train_loader_->pipeline().output_shape();
  spdlog::info("model {}: {} classes, {} parameters, input {}x{}x{}, precision {}{}", arch_name(config_.arch),
               classes_, count_parameters(*model_), shape[0], shape[1], shape[2],
               runtime::precision_name(precision_), channels_last_ ? ", channels-last" : "");
  metrics_path_ = config_.output + "/metrics.jsonl";
  if (lead_) metrics_.emplace(metrics_path_, /*append=*/resumed_.has_value());
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

Trainer::BatchOutcome Trainer::train_batch(const data::Batch& batch, double lr, int64_t epoch, int64_t step) {
  const auto x = batch.images.to(device_, /*non_blocking=*/true);  // (B, C, S, S)
  const auto y = batch.labels.to(device_, /*non_blocking=*/true);  // (B,)
  const TrainStep::Forward f = step_->forward(x, y);
  BatchOutcome out;
  out.loss = f.loss.item<double>();
  out.mean_loss = out.loss;
  out.stop = g_stop_signal.load() != 0;
  if (comm_) {
    auto shared = torch::tensor({out.loss, out.stop ? 1.0 : 0.0}, torch::kFloat64);
    comm_->all_reduce_sum(shared, "loss all-reduce");
    out.mean_loss = shared[0].item<double>() / static_cast<double>(comm_->world_size());
    out.stop = shared[1].item<double>() > 0;
  }
  TORCH_CHECK(std::isfinite(out.mean_loss), "epoch ", epoch + 1, " step ", step + 1, ": loss is ",
              std::isnan(out.mean_loss) ? "nan" : "infinite", "; stopping (the last good checkpoint, ",
              checkpoint_path_, ", is kept). Try a lower --lr.");
  if (!step_->update(f.loss, lr))
    spdlog::debug("epoch {} step {}: inf/nan fp16 gradients, step skipped; loss scale now {}", epoch + 1,
                  step + 1, step_->scaler().current_scale());
  out.correct = f.logits.argmax(1).eq(y).sum().item<int64_t>();
  return out;
}

EpochResult Trainer::train_one_epoch(int64_t epoch) {
  const int64_t world = comm_ ? comm_->world_size() : 1;
  EpochResult r;
  r.lr = schedule_.lr_at(epoch, skip_steps_, steps_per_epoch_);
  model_->train();
  if (comm_) {
    // Each rank draws its own dropout masks, from (seed, epoch, resume step, rank).
    torch::manual_seed(static_cast<uint64_t>(config_.seed) * 0x9E3779B97F4A7C15ULL +
                       static_cast<uint64_t>(epoch) * 0xBF58476D1CE4E5B9ULL +
                       static_cast<uint64_t>(skip_steps_) * 0x94D049BB133111EBULL +
                       static_cast<uint64_t>(comm_->rank()) + 1);
  }
  train_loader_->start_epoch(epoch, /*first_batch=*/skip_steps_);  // resuming: skip what was done
  Progress progress("epoch " + std::to_string(epoch + 1), steps_per_epoch_ - skip_steps_);
  double loss_sum = 0;
  int64_t step = skip_steps_;
  while (step < steps_per_epoch_) {
    auto batch = train_loader_->next();
    if (!batch) break;
    const double lr = schedule_.lr_at(epoch, step, steps_per_epoch_);
    BatchOutcome b;
    try {
      b = train_batch(*batch, lr, epoch, step);
    } catch (const PeerFailure& e) {
      peer_failed(e, epoch, step);
    }
    const int64_t n = batch->labels.size(0);
    ++step;
    loss_sum += b.loss * n;
    r.images += n;
    r.correct += b.correct;
    progress.advance(n);
    const bool bar = progress_style() == ProgressStyle::kBar;
    if (bar && lead_)
      show_live(fmt::format("epoch {} {} {}/{} ETA {} (run {}) loss {:.4f} lr {:.4g} {:.0f} img/s", epoch + 1,
                            progress_bar(step, steps_per_epoch_), step, steps_per_epoch_, progress.eta(),
                            run_eta(epoch, step, progress), b.mean_loss, lr, progress.rate() * world),
                /*force=*/step == steps_per_epoch_);
    if (config_.print_freq > 0 && (step % config_.print_freq == 0 || step == steps_per_epoch_)) {
      if (!bar)
        spdlog::info("epoch {} step {}/{}: loss {:.4f} lr {:.4g} {:.0f} img/s ETA {} (run {})", epoch + 1, step,
                     steps_per_epoch_, b.mean_loss, lr, progress.rate() * world, progress.eta(),
                     run_eta(epoch, step, progress));
      if (metrics_)
        metrics_->write(JsonObject().str("type", "step").integer("epoch", epoch + 1).integer("step", step)
                            .number("loss", b.mean_loss).number("lr", lr)
                            .number("img_per_s", progress.rate() * world).dump());
    }
    // A signal after the epoch's last step lets the epoch finish normally (evaluation,
    // end-of-epoch checkpoint), then stops.
    if (b.stop && step < steps_per_epoch_) {
      save_checkpoint(epoch - 1, step, schedule_.lr_at(epoch, step, steps_per_epoch_));
      spdlog::info("stopped by signal {} at epoch {} step {}: wrote {}; continue with --resume {}",
                   stop_signal(), epoch + 1, step, checkpoint_path_, checkpoint_path_);
      r.signal = stop_signal();
      r.stopped_mid_epoch = true;
      return r;
    }
  }
  clear_live();  // the epoch's summary line takes the bar's place
  skip_steps_ = 0;
  r.seconds = progress.rate() > 0 ? r.images / progress.rate() : 0;
  bool stop_after_epoch = g_stop_signal.load() != 0;
  if (comm_) {
    auto totals = torch::tensor({loss_sum, static_cast<double>(r.correct), static_cast<double>(r.images),
                                 stop_after_epoch ? 1.0 : 0.0}, torch::kFloat64);
    try {
      comm_->all_reduce_sum(totals, "epoch totals all-reduce");
    } catch (const PeerFailure& e) {
      failed_peer_ = true;
      throw PeerFailure(std::string(e.what()) + resume_hint(false));
    }
    loss_sum = totals[0].item<double>();
    r.correct = static_cast<int64_t>(totals[1].item<double>());
    r.images = static_cast<int64_t>(totals[2].item<double>());
    stop_after_epoch = totals[3].item<double>() > 0;
  }
  r.loss = r.images ? loss_sum / r.images : 0.0;
  if (stop_after_epoch) r.signal = stop_signal();
  return r;
}

EvalResult Trainer::evaluate() {
  std::function<void(torch::Tensor&)> reduce_sum;
  if (comm_) reduce_sum = [this](torch::Tensor& t) { comm_->all_reduce_sum(t, "evaluation all-reduce"); };
  val_loader_->start_epoch(0);
  try {
    // Progress about as often as training's (a few lines per evaluation at most).
    const int64_t every = config_.print_freq > 0
                              ? std::max<int64_t>(config_.print_freq, val_loader_->num_batches() / 4)
                              : 0;
    EvalResult r = engine::evaluate(model_, *val_loader_, device_, every, "eval", reduce_sum);
    last_eval_seconds_ = r.seconds;
    return r;
  } catch (const PeerFailure& e) {
    failed_peer_ = true;  // the epoch's training is lost: its checkpoint comes after evaluation
    throw PeerFailure(std::string(e.what()) + resume_hint(false));
  }
}

void Trainer::end_epoch(int64_t epoch, const EpochResult& train, const EvalResult& val) {
  const int64_t seen = train.images;
  const double rate = train.seconds > 0 ? seen / train.seconds : 0;  // all ranks
  // Top-5 of fewer than 5 classes is meaningless: "n/a", as eval prints it.
  const std::string top5 = std::isnan(val.top5) ? "n/a" : fmt::format("{:.2f}%", 100 * val.top5);
  spdlog::info("epoch {} done: train loss {:.4f} acc {:.2f}% | val loss {:.4f} top1 {:.2f}% top5 {} | {} train, {:.0f} img/s",
               epoch + 1, train.loss, seen ? 100.0 * train.correct / seen : 0.0, val.loss, 100 * val.top1,
               top5, format_duration(train.seconds), rate);
  if (metrics_)
    metrics_->write(JsonObject().str("type", "epoch").integer("epoch", epoch + 1).number("lr", train.lr)
                        .number("train_loss", train.loss)
                        .number("train_acc", seen ? static_cast<double>(train.correct) / seen : 0.0)
                        .number("val_loss", val.loss).number("val_top1", val.top1).number("val_top5", val.top5)
                        .number("train_seconds", train.seconds).number("img_per_s", rate).dump());
  // model_best.pth: the weights of the best validation top-1 so far (a state_dict).
  if (val.top1 > best_top1_) {
    best_top1_ = val.top1;
    if (lead_) {
      auto weights = state_dict(*model_);
      for (auto& [n, t] : weights) t = t.to(torch::kCPU).contiguous();
      save_state_dict(weights, config_.output + "/model_best.pth", weights_info());
      spdlog::info("epoch {}: best validation top-1 so far ({:.2f}%): wrote {}/model_best.pth", epoch + 1,
                   100 * val.top1, config_.output);
    }
  }
  const double next_lr = schedule_.lr_at(epoch + 1, 0, steps_per_epoch_);
  save_checkpoint(epoch, 0, next_lr);
  if (lead_) spdlog::info("epoch {}: wrote {}", epoch + 1, checkpoint_path_);
  // model_{epoch}.pth as train.py names them (0-based), full checkpoints.
  if (config_.save_every > 0 && (epoch + 1) % config_.save_every == 0) {
    const std::string path = config_.output + "/model_" + std::to_string(epoch) + ".pth";
    save_checkpoint(epoch, 0, next_lr, path);
    if (lead_) spdlog::info("epoch {}: wrote {}", epoch + 1, path);
  }
}

void Trainer::peer_failed(const PeerFailure& e, int64_t epoch, int64_t step) {
  // Every rank finished steps up to `step` (a rank only passes an all-reduce once all
  // have sent), and the failed step changed no weight: the optimiser runs after the
  // gradients' all-reduce. Rank 0 saves that position, as on a signal.
  std::string next;
  if (step > skip_steps_) {
    save_checkpoint(epoch - 1, step, schedule_.lr_at(epoch, step, steps_per_epoch_));
    next = lead_ ? "; wrote " + checkpoint_path_ + " at epoch " + std::to_string(epoch + 1) + " step " +
                       std::to_string(step)
                 : "; rank 0 writes " + checkpoint_path_ + " at epoch " + std::to_string(epoch + 1) + " step " +
                       std::to_string(step) + " if it is still running";
  }
  failed_peer_ = true;
  throw PeerFailure(std::string(e.what()) + next + resume_hint(step > skip_steps_));
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

std::string Trainer::resume_hint(bool saved_now) const {
  if (saved_now || fs::exists(checkpoint_path_) || !config_.resume.empty())
    return ". Once every host is back, restart every rank with --resume " + checkpoint_path_;
  return ". No checkpoint was written yet: once every host is back, start again";
}

void Trainer::save_checkpoint(int64_t completed_epoch, int64_t epoch_step, double next_lr,
                              const std::string& path) {
  if (!lead_) return;
  TrainCheckpoint c;
  c.model = state_dict(*model_);
  for (auto& [n, t] : c.model) t = t.to(torch::kCPU).contiguous();
  for (auto& b : step_->sgd().momentum_buffers()) c.momentum.push_back(b.defined() ? b.to(torch::kCPU) : b);
  c.epoch = completed_epoch;
  c.epoch_step = epoch_step;
  c.rng_state = generator_state(at::detail::getDefaultCPUGenerator());
  if (device_.is_cuda()) c.cuda_rng_state = generator_state(at::globalContext().defaultGenerator(device_));
  c.args = args_value(config_);
  c.best_top1 = best_top1_;
  c.info = weights_info();
  save_train_checkpoint(path.empty() ? checkpoint_path_ : path, c, step_->sgd().options(), schedule_, next_lr);
}

void Trainer::finish() {
  if (lead_) {
    auto weights = state_dict(*model_);
    for (auto& [n, t] : weights) t = t.to(torch::kCPU).contiguous();
    save_state_dict(weights, config_.output + "/model.pth", weights_info());
  }
  const LossScaler& scaler = step_->scaler();
  if (scaler.enabled())
    spdlog::info("fp16 loss scaling: {} steps skipped for inf/nan gradients, final scale {}",
                 scaler.skipped_steps(), scaler.current_scale());
  if (reducer_ && reducer_->steps() > 0)
    spdlog::info("distributed: all-reduce of {:.1f} MB of gradients per step in {} buckets; {:.1f} ms per step "
                 "waited for it after backward ({} steps)",
                 reducer_->bytes_per_step() / 1e6, reducer_->num_buckets(),
                 1e3 * reducer_->waited_seconds() / static_cast<double>(reducer_->steps()), reducer_->steps());
  const int64_t skipped = train_loader_->skipped() + val_loader_->skipped();
  if (skipped > 0) spdlog::warn("skipped {} unreadable images", skipped);
  spdlog::info("done: weights in {}/model.pth, checkpoint {}, metrics {}", config_.output, checkpoint_path_,
               metrics_path_);
}

}  // namespace alexnet::engine
