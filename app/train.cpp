// alexnet train: torchvision's references/classification recipe in C++.
#include "app/checkpoint.h"
#include "app/cli.h"
#include "app/commands.h"
#include "app/distributed.h"
#include "app/precision.h"
#include "model/sgd.h"
#include "app/training.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "model/alexnet.h"
#include "model/weights.h"

#include <ATen/autocast_mode.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace alexnet::app {

namespace {

namespace fs = std::filesystem;

// Set by SIGINT/SIGTERM; the loop finishes its step, saves and exits. A second
// signal restores the default action, so pressing Ctrl-C twice quits at once.
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
  std::signal(sig, SIG_DFL);
}

// Installs on_stop_signal for SIGINT and SIGTERM while alive; restores the previous handlers.
class StopSignalScope {
 public:
  StopSignalScope() {
    g_stop_signal.store(0);
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// The defaults are the main job's recipe: Fashion-MNIST at 64 px to 90% in under
// ten minutes on two cores (BENCHMARKS.md). torchvision's ImageNet recipe for
// AlexNet differs (--epochs 90 --lr 0.01 --dropout 0.5 --lr-scheduler step ...).
struct TrainParams {
  std::string data = "fashion-mnist";
  std::string val;  // empty: the data spec's val/test split
  int64_t epochs = 3;
  int64_t batch_size = 128;
  double lr = 0.06;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  bool nesterov = true;
  std::string lr_scheduler = "cosine";
  int64_t lr_step_size = 30;
  double lr_gamma = 0.1;
  double lr_warmup_epochs = 0;  // fractional with lr_update "step"
  std::string lr_warmup_method = "linear";
  double lr_warmup_decay = 0.01;
  std::string lr_update = "step";  // step | epoch (torchvision train.py's)
  double label_smoothing = 0.1;
  double clip_grad_norm = 2.0;  // 0: off
  double dropout = 0.1;
  int64_t image_size = 0;  // 0: the dataset's default
  std::string augment = "auto";  // auto | full | flip | none
  int64_t workers = 2;
  int64_t seed = 0;
  bool deterministic = false;
  std::string output = "out";
  std::string resume;
  std::string weights;
  bool reset_classifier = false;
  int64_t num_classes = 0;  // 0: from the data
  int64_t in_channels = 3;
  int64_t print_freq = 50;
  int64_t max_steps = 0;  // per epoch; 0 = all
  std::string precision = "auto";  // fp32 | bf16 | fp16 | auto
  std::string arch = "alexnet";
  std::string init = "auto";  // auto | module | vgg
  std::string channels_last = "off";  // off | on | auto
  bool skip_bad = false;
  bool overwrite = false;
  bool distributed = false;
  std::string dist_backend;  // empty: nccl on CUDA, gloo on CPU
  int64_t dist_timeout = 300;  // seconds
};

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.9g", v);  // float32 values round-trip
  return buf;
}

// The flags as a dict, stored in the checkpoint's "args" like train.py's Namespace.
pth::Value args_value(const TrainParams& p) {
  using pth::Value;
  Value a = Value::dict();
  auto s = [&a](const char* k, const std::string& v) { a.set(Value::string(k), Value::string(v)); };
  auto i = [&a](const char* k, int64_t v) { a.set(Value::string(k), Value::integer(v)); };
  auto f = [&a](const char* k, double v) { a.set(Value::string(k), Value::floating(v)); };
  auto b = [&a](const char* k, bool v) { a.set(Value::string(k), Value::boolean(v)); };
  s("data_path", p.data); s("val", p.val); s("model", p.arch);
  i("epochs", p.epochs); i("batch_size", p.batch_size); f("lr", p.lr); f("momentum", p.momentum);
  f("weight_decay", p.weight_decay); b("nesterov", p.nesterov); s("lr_scheduler", p.lr_scheduler);
  i("lr_step_size", p.lr_step_size); f("lr_gamma", p.lr_gamma);
  if (p.lr_warmup_epochs == std::floor(p.lr_warmup_epochs)) {
    i("lr_warmup_epochs", static_cast<int64_t>(p.lr_warmup_epochs));  // train.py's type
  } else {
    f("lr_warmup_epochs", p.lr_warmup_epochs);
  }
  s("lr_update", p.lr_update); s("init", p.init);
  s("lr_warmup_method", p.lr_warmup_method); f("lr_warmup_decay", p.lr_warmup_decay);
  f("label_smoothing", p.label_smoothing);
  if (p.clip_grad_norm > 0) {
    f("clip_grad_norm", p.clip_grad_norm);
  } else {
    a.set(Value::string("clip_grad_norm"), Value::none());  // train.py's "off"
  }
  f("dropout", p.dropout); i("image_size", p.image_size); s("augment", p.augment);
  i("workers", p.workers); i("seed", p.seed); b("deterministic", p.deterministic);
  s("output_dir", p.output); i("num_classes", p.num_classes); i("in_channels", p.in_channels);
  s("precision", p.precision); s("channels_last", p.channels_last); i("max_steps", p.max_steps);
  b("distributed", p.distributed); s("dist_backend", p.dist_backend);
  return a;
}

// Fails now, not after an epoch, when the output folder cannot take files.
void check_output_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  TORCH_CHECK(!ec, "--output ", dir, ": cannot create folder (", ec.message(), ")");
  TORCH_CHECK(fs::is_directory(dir), "--output ", dir, ": not a folder");
  const std::string probe = dir + "/.write-test-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(probe.c_str(), "w");
  TORCH_CHECK(f != nullptr, "--output ", dir, ": folder is not writable (", std::strerror(errno), ")");
  std::fclose(f);
  std::remove(probe.c_str());
}

TrainParams parse_train_flags(const cxxopts::ParseResult& r, const cxxopts::Options& options) {
  TrainParams p;
  auto get_s = [&r](const char* k) { return r[k].as<std::string>(); };
  p.data = get_s("data");
  if (r.count("val")) p.val = get_s("val");
  p.epochs = positive_flag(r, "epochs", options);
  p.batch_size = positive_flag(r, "batch-size", options);
  p.lr = r["lr"].as<double>();
  p.momentum = r["momentum"].as<double>();
  p.weight_decay = r["weight-decay"].as<double>();
  p.nesterov = r["nesterov"].as<bool>();
  p.lr_scheduler = get_s("lr-scheduler");
  p.lr_step_size = positive_flag(r, "lr-step-size", options);
  p.lr_gamma = r["lr-gamma"].as<double>();
  p.lr_warmup_epochs = r["lr-warmup-epochs"].as<double>();
  p.lr_update = get_s("lr-update");
  p.lr_warmup_method = get_s("lr-warmup-method");
  p.lr_warmup_decay = r["lr-warmup-decay"].as<double>();
  p.label_smoothing = r["label-smoothing"].as<double>();
  p.clip_grad_norm = r["clip-grad-norm"].as<double>();
  p.dropout = r["dropout"].as<double>();
  p.image_size = r["image-size"].as<int64_t>();
  p.augment = get_s("augment");
  p.workers = r["workers"].as<int64_t>();
  p.seed = r["seed"].as<int64_t>();
  p.deterministic = r.count("deterministic") > 0;
  p.output = get_s("output");
  if (r.count("resume")) p.resume = get_s("resume");
  if (r.count("weights")) p.weights = get_s("weights");
  p.reset_classifier = r.count("reset-classifier") > 0;
  p.num_classes = r["num-classes"].as<int64_t>();
  p.in_channels = r["in-channels"].as<int64_t>();
  p.print_freq = r["print-freq"].as<int64_t>();
  p.max_steps = r["max-steps"].as<int64_t>();
  p.precision = get_s("precision");
  p.arch = get_s("arch");
  p.init = get_s("init");
  p.channels_last = get_s("channels-last");
  p.skip_bad = r.count("skip-bad") > 0;
  p.overwrite = r.count("overwrite") > 0;
  p.distributed = r.count("distributed") > 0;
  if (r.count("dist-backend")) p.dist_backend = get_s("dist-backend");
  p.dist_timeout = positive_flag(r, "dist-timeout", options);

  auto bad = [&options](const std::string& m) { throw UsageError(m, options.help()); };
  for (const char* flag : {"lr", "momentum", "weight-decay", "lr-gamma", "lr-warmup-decay", "lr-warmup-epochs",
                           "label-smoothing", "dropout", "clip-grad-norm"})
    if (!std::isfinite(r[flag].as<double>())) bad(std::string("--") + flag + " must be a finite number");
  if (!(p.lr > 0) || !std::isfinite(p.lr)) bad("--lr must be positive");
  if (p.momentum < 0 || p.momentum >= 1) bad("--momentum must be in [0, 1)");
  if (p.weight_decay < 0) bad("--weight-decay must not be negative");
  if (p.momentum == 0) {
    if (r.count("nesterov") && p.nesterov) bad("--nesterov needs a positive --momentum");
    p.nesterov = false;  // the default's Nesterov momentum needs momentum
  }
  if (p.lr_scheduler != "step" && p.lr_scheduler != "cosine" && p.lr_scheduler != "constant")
    bad("--lr-scheduler must be step, cosine or constant, got '" + p.lr_scheduler + "'");
  if (!(p.lr_gamma > 0)) bad("--lr-gamma must be positive");
  if (p.lr_update != "step" && p.lr_update != "epoch")
    bad("--lr-update must be step or epoch, got '" + p.lr_update + "'");
  if (p.lr_warmup_epochs < 0 || (p.lr_warmup_epochs > 0 && p.lr_warmup_epochs >= p.epochs))
    bad("--lr-warmup-epochs must be in [0, epochs)");
  if (p.lr_update == "epoch" && p.lr_warmup_epochs != std::floor(p.lr_warmup_epochs))
    bad("--lr-warmup-epochs must be a whole number with --lr-update epoch");
  if (p.lr_warmup_method != "linear" && p.lr_warmup_method != "constant")
    bad("--lr-warmup-method must be linear or constant");
  if (!(p.lr_warmup_decay > 0 && p.lr_warmup_decay <= 1)) bad("--lr-warmup-decay must be in (0, 1]");
  if (p.label_smoothing < 0 || p.label_smoothing >= 1) bad("--label-smoothing must be in [0, 1)");
  if (p.dropout < 0 || p.dropout >= 1) bad("--dropout must be in [0, 1)");
  if (p.clip_grad_norm < 0) bad("--clip-grad-norm must be positive (or 0: no clipping)");
  if (p.augment != "auto" && p.augment != "full" && p.augment != "flip" && p.augment != "none")
    bad("--augment must be auto, full, flip or none, got '" + p.augment + "'");
  if (p.image_size != 0 && p.image_size < kMinInputSize)
    bad("--image-size must be at least " + std::to_string(kMinInputSize) + " (or 0 for the default)");
  if (p.workers < 0) bad("--workers must not be negative");
  if (p.seed < 0) bad("--seed must not be negative");
  if (p.num_classes < 0) bad("--num-classes must be positive (or 0: from the data)");
  if (p.in_channels != 1 && p.in_channels != 3) bad("--in-channels must be 1 or 3");
  if (p.print_freq < 0) bad("--print-freq must not be negative");
  if (p.max_steps < 0) bad("--max-steps must not be negative");
  if (!parse_precision(p.precision)) bad("--precision must be fp32, bf16, fp16 or auto, got '" + p.precision + "'");
  if (!parse_channels_last(p.channels_last))
    bad("--channels-last must be off, on or auto, got '" + p.channels_last + "'");
  if (p.arch != "alexnet" && p.arch != "alexnet2012") bad("--arch must be alexnet or alexnet2012");
  if (p.init != "auto" && p.init != "module" && p.init != "vgg")
    bad("--init must be auto, module or vgg, got '" + p.init + "'");
  if (!p.resume.empty() && !p.weights.empty()) bad("--resume and --weights exclude each other");
  if (!p.dist_backend.empty() && p.dist_backend != "gloo" && p.dist_backend != "nccl")
    bad("--dist-backend must be gloo or nccl, got '" + p.dist_backend + "'");
  if (!p.dist_backend.empty() && !p.distributed) bad("--dist-backend needs --distributed");
  return p;
}

data::TransformOptions transform_for(const data::Dataset& dataset, const TrainParams& p, bool train) {
  auto t = data::default_transform_options(dataset.kind(), train);
  if (p.image_size > 0) {
    // Keep the recipe's resize/crop ratio (256/224 for ImageNet-style folders).
    t.resize_size(t.resize_size() * p.image_size / t.image_size()).image_size(p.image_size);
  }
  const bool idx = dataset.kind() == data::DatasetKind::kMnist ||
                   dataset.kind() == data::DatasetKind::kFashionMnist;
  const std::string augment = p.augment != "auto" ? p.augment : idx ? "none" : "full";
  if (train && augment != "full") {
    // The evaluation geometry (resize, center crop), with or without flips.
    t.train_crop(data::TrainCrop::kPadded).crop_padding(0).lighting_std(0);
    if (augment == "none") t.train(false);
  }
  return t.in_channels(p.in_channels);
}

// Mean over the batch of cross-entropy with label smoothing, as F.cross_entropy.
torch::Tensor loss_fn(const torch::Tensor& logits, const torch::Tensor& labels, double smoothing) {
  return torch::nn::functional::cross_entropy(
      logits, labels, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(smoothing));
}

}  // namespace

int run_train(int argc, const char* const* argv) {
  const TrainParams defaults;
  cxxopts::Options options("alexnet train",
                           "Train AlexNet (SGD, torchvision's reference recipe). With no flags: "
                           "Fashion-MNIST from Debian's dataset-fashion-mnist.");
  auto d = [](auto v) { std::ostringstream os; os << v; return os.str(); };
  options.add_options()
      ("data", "Training data spec (see below)", cxxopts::value<std::string>()->default_value(defaults.data))
      ("val", "Validation data spec (default: the data spec's val/test split)", cxxopts::value<std::string>())
      ("epochs", "Epochs", cxxopts::value<int64_t>()->default_value(d(defaults.epochs)))
      ("b,batch-size", "Images per step", cxxopts::value<int64_t>()->default_value(d(defaults.batch_size)))
      ("lr", "Base learning rate", cxxopts::value<double>()->default_value(d(defaults.lr)))
      ("momentum", "SGD momentum", cxxopts::value<double>()->default_value(d(defaults.momentum)))
      ("wd,weight-decay", "L2 weight decay", cxxopts::value<double>()->default_value(d(defaults.weight_decay)))
      ("nesterov", "Nesterov momentum (--nesterov=false for plain momentum, as torchvision's sgd)",
       cxxopts::value<bool>()->default_value(defaults.nesterov ? "true" : "false")->implicit_value("true"))
      ("lr-scheduler", "step, cosine or constant",
       cxxopts::value<std::string>()->default_value(defaults.lr_scheduler))
      ("lr-step-size", "Epochs between decays (step)", cxxopts::value<int64_t>()->default_value(d(defaults.lr_step_size)))
      ("lr-gamma", "Decay factor (step)", cxxopts::value<double>()->default_value(d(defaults.lr_gamma)))
      ("lr-warmup-epochs", "Warmup epochs (a fraction with --lr-update step)",
       cxxopts::value<double>()->default_value(d(defaults.lr_warmup_epochs)))
      ("lr-warmup-method", "linear or constant", cxxopts::value<std::string>()->default_value(defaults.lr_warmup_method))
      ("lr-warmup-decay", "Warmup starting factor", cxxopts::value<double>()->default_value(d(defaults.lr_warmup_decay)))
      ("lr-update", "Move the schedule every step (smooth; fractional epochs) or every epoch "
       "(torchvision train.py's)", cxxopts::value<std::string>()->default_value(defaults.lr_update))
      ("label-smoothing", "Label smoothing", cxxopts::value<double>()->default_value(d(defaults.label_smoothing)))
      ("clip-grad-norm", "Scale the gradients down to this total L2 norm when above it, as "
       "clip_grad_norm_ (0 = off)", cxxopts::value<double>()->default_value(d(defaults.clip_grad_norm)))
      ("dropout", "Dropout probability", cxxopts::value<double>()->default_value(d(defaults.dropout)))
      ("augment", "Training augmentation: full (the dataset's recipe: random crops and flips), flip "
       "(flips only; evaluation's resize and crop), none, or auto (none for MNIST and Fashion-MNIST, "
       "whose short default run learns faster without it; full otherwise)", cxxopts::value<std::string>()->default_value(defaults.augment))
      ("image-size", "Model input side (0 = the dataset's default)", cxxopts::value<int64_t>()->default_value("0"))
      ("j,workers", "Data loading threads", cxxopts::value<int64_t>()->default_value(d(defaults.workers)))
      ("seed", "Seed for initialisation, shuffling, augmentation, dropout", cxxopts::value<int64_t>()->default_value("0"))
      ("deterministic", "Deterministic algorithms only (bit-exact reruns and resumes)")
      ("o,output", "Folder for checkpoint.pth, model.pth, metrics.jsonl", cxxopts::value<std::string>()->default_value(defaults.output))
      ("resume", "Continue from a training checkpoint (ours or torchvision train.py's)", cxxopts::value<std::string>())
      ("w,weights", "Start from these weights (fine-tuning)", cxxopts::value<std::string>())
      ("reset-classifier", "With --weights: re-initialise the last layer for the data's class count")
      ("num-classes", "Classes (0 = from the data; must agree with it)", cxxopts::value<int64_t>()->default_value("0"))
      ("in-channels", "Model input channels: 3, or 1 for single-channel data fed as is",
       cxxopts::value<int64_t>()->default_value("3"))
      ("print-freq", "Log a progress line every N steps (0 = only per epoch)", cxxopts::value<int64_t>()->default_value(d(defaults.print_freq)))
      ("max-steps", "Stop each epoch after N steps (0 = whole epoch; for quick runs)", cxxopts::value<int64_t>()->default_value("0"))
      ("precision", "fp32, bf16, fp16 (CUDA, with loss scaling) or auto (bf16 on AMX CPUs and "
       "Ampere GPUs, fp16 on older GPUs, else fp32); low precision autocasts, weights stay fp32",
       cxxopts::value<std::string>()->default_value(defaults.precision))
      ("arch", "alexnet (torchvision's) or alexnet2012 (the paper's: LRN, groups=2, its init)",
       cxxopts::value<std::string>()->default_value(defaults.arch))
      ("init", "Initialisation when training from scratch: module (the architecture's own: "
       "torchvision's, or the paper's for alexnet2012), vgg (as torchvision's VGG: Kaiming fan-out "
       "convolutions, N(0, 0.01) linear layers; no stall at chance early on) or auto (vgg for "
       "alexnet, module for alexnet2012)", cxxopts::value<std::string>()->default_value(defaults.init))
      ("channels-last", "Channels-last memory format: off, on, or auto (the device's faster layout)",
       cxxopts::value<std::string>()->default_value(defaults.channels_last)->implicit_value("on"))
      ("skip-bad", "Skip unreadable images with a warning instead of failing")
      ("overwrite", "Start afresh even if --output already holds a checkpoint.pth")
      ("distributed", "Data-parallel over processes, from torchrun's environment (RANK, WORLD_SIZE, "
       "MASTER_ADDR, MASTER_PORT, LOCAL_RANK); --batch-size is per process")
      ("dist-backend", "gloo or nccl (default: nccl on CUDA, gloo on CPU)", cxxopts::value<std::string>())
      ("dist-timeout", "Seconds a process waits for the others (rendezvous, each collective) before failing",
       cxxopts::value<int64_t>()->default_value(d(defaults.dist_timeout)));
  add_common_options(options);
  options.custom_help("[options]");
  auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\ndata specs:\n%s\n", options.help().c_str(), data::kDataSpecHelp);
    return 0;
  }
  TrainParams p = parse_train_flags(result, options);

  // Everything that can be wrong with the inputs is checked before training starts.
  torch::Device device = setup_runtime(result);
  reuse_freed_memory();
  // Distributed: connect first, so that a rank failing any check below ends the
  // others at their next collective instead of leaving them waiting.
  std::unique_ptr<Communicator> comm;
  if (p.distributed) {
    const DistEnv env = read_dist_env();
    spdlog::set_pattern("[%H:%M:%S] [rank " + std::to_string(env.rank) + "] %v");
    if (env.rank != 0) spdlog::set_level(spdlog::level::warn);  // rank 0 alone logs
    if (device.is_cuda()) {
      TORCH_CHECK(env.local_rank < static_cast<int64_t>(torch::cuda::device_count()),
                  "--distributed: LOCAL_RANK ", env.local_rank, " but only ",
                  torch::cuda::device_count(), " CUDA devices");
      device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    }
    if (result.count("threads") == 0)  // share the cores among this machine's processes
      configure_threads(std::max(1, available_cpus() / static_cast<int>(env.local_world_size)));
    const std::string backend =
        !p.dist_backend.empty() ? p.dist_backend : device.is_cuda() ? "nccl" : "gloo";
    TORCH_CHECK(backend != "nccl" || device.is_cuda(), "--dist-backend nccl needs --device cuda");
    TORCH_CHECK(backend != "gloo" || !device.is_cuda(),
                "--dist-backend gloo: this build averages CPU tensors only; use nccl with --device cuda");
    spdlog::info("distributed: {} processes, {} backend, rendezvous {}:{}, timeout {} s, {} threads each",
                 env.world_size, backend, env.master_addr, env.master_port, p.dist_timeout,
                 torch::get_num_threads());
    comm = Communicator::create(env, backend, std::chrono::seconds(p.dist_timeout));
  }
  const bool lead = !comm || comm->rank() == 0;  // writes checkpoints, metrics, logs
  if (lead) check_output_dir(p.output);
  const std::string checkpoint_path = p.output + "/checkpoint.pth";
  TORCH_CHECK(!lead || p.overwrite || !p.resume.empty() || !fs::exists(checkpoint_path), checkpoint_path,
              " exists: continue it with --resume ", checkpoint_path,
              ", start afresh with --overwrite, or choose another --output");

  // Weight files before the data: a bad file fails before a large folder is scanned.
  std::optional<TrainCheckpoint> resumed;
  std::optional<InferredShape> file_shape;
  if (!p.resume.empty()) {
    resumed = load_train_checkpoint(p.resume);
    file_shape = infer_shape(resumed->model, p.resume);
    TORCH_CHECK(resumed->epoch >= -1 && resumed->epoch_step >= 0, p.resume, ": bad position (epoch ",
                resumed->epoch, ", step ", resumed->epoch_step, ")");
  }
  NamedTensors initial;
  if (!p.weights.empty()) {
    initial = read_weight_file(p.weights).tensors;
    file_shape = infer_shape(initial, p.weights);
  }
  if (file_shape) {
    p.in_channels = file_shape->in_channels;
    p.arch = arch_name(file_shape->arch);
  }

  auto train_set = data::open_dataset(p.data, "train");
  auto val_set = data::open_dataset(p.val.empty() ? p.data : p.val, "val");
  TORCH_CHECK(train_set->class_names() == val_set->class_names(), "validation data (",
              val_set->description(), ") has other classes than the training data (",
              train_set->description(), "): ", val_set->num_classes(), " vs ", train_set->num_classes());
  if (val_set->description() == train_set->description())
    spdlog::warn("validating on the training data: {} has no separate val/ split", p.data);
  const int64_t classes = train_set->num_classes();
  TORCH_CHECK(p.num_classes == 0 || p.num_classes == classes, "--num-classes ", p.num_classes,
              ": the data (", train_set->description(), ") has ", classes, " classes");
  spdlog::info("data: train {} ({} images), val {} ({} images), {} classes",
               train_set->description(), train_set->size(), val_set->description(),
               val_set->size(), classes);
  if (resumed) {
    TORCH_CHECK(file_shape->num_classes == classes, p.resume, ": checkpoint has ",
                file_shape->num_classes, " classes, the data has ", classes);
  }
  if (!p.weights.empty() && file_shape->num_classes != classes) {
    TORCH_CHECK(p.reset_classifier, p.weights, ": weights have ", file_shape->num_classes,
                " classes, the data has ", classes,
                " (add --reset-classifier to fine-tune with a new last layer)");
    initial.erase(std::remove_if(initial.begin(), initial.end(),
                                 [](const auto& kv) { return kv.first.rfind("classifier.6.", 0) == 0; }),
                  initial.end());
  }

  const Precision precision = resolve_precision(*parse_precision(p.precision), device, Workload::kTraining);
  configure_cuda_math(device, precision);  // before --deterministic, which overrides it
  const bool channels_last =
      resolve_channels_last(*parse_channels_last(p.channels_last), device, precision);
  if (p.deterministic) {
    if (device.is_cuda()) ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
    at::globalContext().setDeterministicCuDNN(true);
    at::globalContext().setBenchmarkCuDNN(false);
  } else if (device.is_cuda()) {
    at::globalContext().setBenchmarkCuDNN(true);
  }
  torch::manual_seed(static_cast<uint64_t>(p.seed));
  AlexNet model(AlexNetOptions().num_classes(classes).dropout(p.dropout).in_channels(p.in_channels)
                    .arch(parse_arch(p.arch)));
  const std::string init = p.init != "auto" ? p.init : p.arch == "alexnet" ? "vgg" : "module";
  if (resumed) {
    load_named_tensors(*model, resumed->model, p.resume);
  } else if (initial.empty()) {
    if (init == "vgg") init_vgg_style(*model);
    spdlog::info("init: {}", init == "vgg" ? "vgg (Kaiming fan-out convolutions, N(0, 0.01) linear layers)"
                                           : p.arch == "alexnet" ? "torchvision's" : "the 2012 paper's");
  } else {
    // Fine-tuning: every layer from the file, except a reset classifier.6.
    auto all = state_dict(*model);
    for (auto& [name, t] : all)
      for (const auto& [n, src] : initial)
        if (n == name) t = src;
    load_named_tensors(*model, all, p.weights);
  }
  model->to(device);
  if (comm) broadcast_module(*comm, *model);  // every rank starts from rank 0's weights
  if (channels_last) to_channels_last(*model);

  std::vector<torch::Tensor> params;
  for (auto& t : model->parameters()) params.push_back(t);
  Sgd sgd(params, SgdOptions().momentum(p.momentum).weight_decay(p.weight_decay).nesterov(p.nesterov));
  int64_t start_epoch = 0, skip_steps = 0;
  if (resumed) {
    for (size_t i = 0; i < params.size() && i < resumed->momentum.size(); ++i) {
      if (!resumed->momentum[i].defined()) continue;
      TORCH_CHECK(resumed->momentum[i].sizes() == params[i].sizes(), p.resume,
                  ": momentum buffer ", i, " has shape ", resumed->momentum[i].sizes(), ", expected ",
                  params[i].sizes());
      sgd.momentum_buffers()[i] = resumed->momentum[i].to(device, torch::kFloat32).contiguous();
    }
    if (comm) {
      std::vector<torch::Tensor> buffers;
      for (auto& b : sgd.momentum_buffers())
        if (b.defined()) buffers.push_back(b);
      comm->broadcast(buffers, "broadcast of rank 0's momentum buffers");
    }
    start_epoch = resumed->epoch + 1;
    skip_steps = resumed->epoch_step;
    if (resumed->cuda_rng_state.defined() && device.is_cuda()) {
      // Dropout on CUDA draws from the device's generator.
      auto gen = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(gen.mutex());
      try {
        gen.set_state(resumed->cuda_rng_state);
      } catch (const c10::Error& e) {
        TORCH_CHECK(false, p.resume, ": bad cuda_rng_state (", e.what_without_backtrace(), ")");
      }
    }
    if (resumed->rng_state.defined()) {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      try {
        gen.set_state(resumed->rng_state);
      } catch (const c10::Error& e) {
        TORCH_CHECK(false, p.resume, ": bad rng_state (", e.what_without_backtrace(), ")");
      }
    }
    spdlog::info("resuming {} at epoch {} step {}", p.resume, start_epoch + 1, skip_steps);
    if (const pth::Value* e = resumed->args.is_dict() ? resumed->args.find("epochs") : nullptr;
        e && e->is_int() && e->as_int() != p.epochs && p.lr_update == "step" && p.lr_scheduler != "constant")
      spdlog::warn("{} was trained for a run of {} epochs; with --epochs {} the per-step schedule "
                   "follows a new curve from here (--lr-update epoch continues train.py's)",
                   p.resume, e->as_int(), p.epochs);
    TORCH_CHECK(start_epoch < p.epochs || (start_epoch == p.epochs && skip_steps == 0), p.resume,
                ": already trained ", start_epoch, " epochs; --epochs ", p.epochs, " leaves nothing to do");
  }

  LrSchedule schedule;
  schedule.base_lr = p.lr;
  schedule.kind = p.lr_scheduler;
  schedule.epochs = p.epochs;
  schedule.step_size = p.lr_step_size;
  schedule.gamma = p.lr_gamma;
  schedule.warmup_epochs = p.lr_warmup_epochs;
  schedule.warmup_method = p.lr_warmup_method;
  schedule.warmup_decay = p.lr_warmup_decay;
  schedule.per_step = p.lr_update == "step";

  const bool pin = device.is_cuda();
  data::Loader train_loader(train_set, data::Pipeline(transform_for(*train_set, p, true)),
                            data::LoaderOptions().batch_size(p.batch_size).shuffle(true)
                                .seed(static_cast<uint64_t>(p.seed)).drop_last(true)
                                .workers(p.workers).skip_bad(p.skip_bad)
                                .channels_last(channels_last).pin_memory(pin)
                                .rank(comm ? comm->rank() : 0).world_size(comm ? comm->world_size() : 1));
  // Evaluation shards are not padded: every image counts once over the ranks.
  data::Loader val_loader(val_set, data::Pipeline(transform_for(*val_set, p, false)),
                          data::LoaderOptions().batch_size(p.batch_size).shuffle(false)
                              .workers(p.workers).skip_bad(p.skip_bad)
                              .channels_last(channels_last).pin_memory(pin)
                              .rank(comm ? comm->rank() : 0).world_size(comm ? comm->world_size() : 1)
                              .pad_shards(false));
  TORCH_CHECK(train_loader.num_batches() > 0, p.data, ": ", train_set->size(),
              " training images make no full batch of ", p.batch_size);
  const int64_t steps_per_epoch = p.max_steps > 0
                                      ? std::min(p.max_steps, train_loader.num_batches())
                                      : train_loader.num_batches();
  if (resumed && resumed->epoch_step > 0) {
    // Mid-epoch: the remaining batches are only the same ones if the epoch is cut the same way.
    TORCH_CHECK(resumed->epoch_step < steps_per_epoch, p.resume, ": stopped at step ",
                resumed->epoch_step, " of an epoch that now has ", steps_per_epoch, " steps");
    auto same = [&](const char* key, const std::string& flag, int64_t now) {
      const pth::Value* v = resumed->args.is_dict() ? resumed->args.find(key) : nullptr;
      TORCH_CHECK(!v || !v->is_int() || v->as_int() == now, p.resume, ": stopped mid-epoch with ",
                  flag, " ", v ? v->as_int() : 0, "; resume with the same value (got ", now, ")");
    };
    same("batch_size", "--batch-size", p.batch_size);
    same("seed", "--seed", p.seed);
    same("max_steps", "--max-steps", p.max_steps);
  }
  const auto shape = train_loader.pipeline().output_shape();
  spdlog::info("model {}: {} classes, {} parameters, input {}x{}x{}, precision {}{}",
               p.arch, classes, count_parameters(*model), shape[0], shape[1], shape[2],
               precision_name(precision), channels_last ? ", channels-last" : "");

  const std::string metrics_path = p.output + "/metrics.jsonl";
  std::optional<MetricsLog> metrics;
  if (lead) metrics.emplace(metrics_path, /*append=*/resumed.has_value());
  auto log_metrics = [&metrics](const std::string& json) {
    if (metrics) metrics->write(json);
  };
  auto save = [&](int64_t completed_epoch, int64_t epoch_step, double next_lr) {
    if (!lead) return;
    TrainCheckpoint c;
    c.model = state_dict(*model);
    for (auto& [n, t] : c.model) t = t.to(torch::kCPU).contiguous();
    for (auto& b : sgd.momentum_buffers()) c.momentum.push_back(b.defined() ? b.to(torch::kCPU) : b);
    c.epoch = completed_epoch;
    c.epoch_step = epoch_step;
    {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      c.rng_state = gen.get_state();
    }
    if (device.is_cuda()) {
      auto gen = at::globalContext().defaultGenerator(device);
      std::lock_guard<std::mutex> lock(gen.mutex());
      c.cuda_rng_state = gen.get_state();
    }
    c.args = args_value(p);
    save_train_checkpoint(checkpoint_path, c, sgd.options(), schedule, next_lr);
  };

  const StopSignalScope stop_signals;
  // fp16 gradients underflow without loss scaling; bf16 has fp32's range.
  LossScaler scaler(LossScalerOptions().enabled(precision == Precision::kFp16));
  std::unique_ptr<GradientReducer> reducer;
  std::function<void(torch::Tensor&)> reduce_sum;
  const int64_t world = comm ? comm->world_size() : 1;
  if (comm) {
    reducer = std::make_unique<GradientReducer>(*comm, params);
    reduce_sum = [&comm](torch::Tensor& t) { comm->all_reduce_sum(t, "evaluation all-reduce"); };
    spdlog::info("distributed: gradients averaged in {} buckets; {} images per step over {} processes",
                 reducer->num_buckets(), p.batch_size * world, world);
  }

  for (int64_t epoch = start_epoch; epoch < p.epochs; ++epoch) {
    double lr = schedule.lr_at(epoch, skip_steps, steps_per_epoch);
    const double epoch_lr = lr;
    model->train();
    if (comm) {
      // Each rank draws its own dropout masks, from (seed, epoch, resume step, rank).
      torch::manual_seed(static_cast<uint64_t>(p.seed) * 0x9E3779B97F4A7C15ULL +
                         static_cast<uint64_t>(epoch) * 0xBF58476D1CE4E5B9ULL +
                         static_cast<uint64_t>(skip_steps) * 0x94D049BB133111EBULL +
                         static_cast<uint64_t>(comm->rank()) + 1);
    }
    train_loader.start_epoch(epoch, /*first_batch=*/skip_steps);  // resuming: skip what was done
    Progress progress("epoch " + std::to_string(epoch + 1), steps_per_epoch - skip_steps);
    double loss_sum = 0;
    int64_t seen = 0, correct = 0;
    int64_t step = skip_steps;
    while (step < steps_per_epoch) {
      auto batch = train_loader.next();
      if (!batch) break;
      lr = schedule.lr_at(epoch, step, steps_per_epoch);
      const auto x = batch->images.to(device, /*non_blocking=*/true);  // (B, C, S, S)
      const auto y = batch->labels.to(device, /*non_blocking=*/true);  // (B,)
      sgd.zero_grad();
      torch::Tensor logits;
      {
        const AutocastGuard autocast(device, precision);
        logits = model->forward(x);
      }
      logits = logits.to(torch::kFloat32);  // (B, classes)
      const auto loss = loss_fn(logits, y, p.label_smoothing);
      const double local_loss = loss.item<double>();
      double loss_value = local_loss;
      bool stop_requested = g_stop_signal.load() != 0;
      if (comm) {
        // The mean loss and any rank's stop request, so that all ranks agree on both.
        auto shared = torch::tensor({local_loss, stop_requested ? 1.0 : 0.0}, torch::kFloat64);
        comm->all_reduce_sum(shared, "loss all-reduce");
        loss_value = shared[0].item<double>() / static_cast<double>(world);
        stop_requested = shared[1].item<double>() > 0;
      }
      TORCH_CHECK(std::isfinite(loss_value), "epoch ", epoch + 1, " step ", step + 1, ": loss is ",
                  std::isnan(loss_value) ? "nan" : "infinite", "; stopping (the last good checkpoint, ", checkpoint_path,
                  ", is kept). Try a lower --lr.");
      if (reducer) reducer->prepare();
      scaler.scale(loss).backward();
      if (reducer) reducer->finish();  // gradients averaged over the ranks
      if (!scaler.step(params, [&] {
            sgd.step(lr, p.clip_grad_norm > 0 ? clip_coefficient(params, p.clip_grad_norm) : 1.0);
          }))
        spdlog::debug("epoch {} step {}: inf/nan fp16 gradients, step skipped; loss scale now {}",
                      epoch + 1, step + 1, scaler.current_scale());
      ++step;
      loss_sum += local_loss * y.size(0);
      seen += y.size(0);
      correct += logits.argmax(1).eq(y).sum().item<int64_t>();
      progress.advance(y.size(0));
      if (p.print_freq > 0 && (step % p.print_freq == 0 || step == steps_per_epoch)) {
        spdlog::info("epoch {} step {}/{}: loss {:.4f} lr {:.4g} {:.0f} img/s ETA {}", epoch + 1,
                     step, steps_per_epoch, loss_value, lr, progress.rate() * world, progress.eta());
        log_metrics("{\"type\": \"step\", \"epoch\": " + std::to_string(epoch + 1) +
                      ", \"step\": " + std::to_string(step) + ", \"loss\": " + json_number(loss_value) +
                      ", \"lr\": " + json_number(lr) + ", \"img_per_s\": " + json_number(progress.rate() * world) + "}");
      }
      // A signal after the epoch's last step lets the epoch finish normally (evaluation,
      // end-of-epoch checkpoint), then stops below.
      if (stop_requested && step < steps_per_epoch) {
        const int sig = g_stop_signal.load() != 0 ? g_stop_signal.load() : SIGTERM;
        save(epoch - 1, step, schedule.lr_at(epoch, step, steps_per_epoch));
        spdlog::info("stopped by signal {} at epoch {} step {}: wrote {}; continue with --resume {}",
                     sig, epoch + 1, step, checkpoint_path, checkpoint_path);
        return 128 + sig;
      }
    }
    skip_steps = 0;
    const double train_seconds = progress.rate() > 0 ? seen / progress.rate() : 0;
    bool stop_after_epoch = g_stop_signal.load() != 0;
    if (comm) {
      auto totals = torch::tensor({loss_sum, static_cast<double>(correct), static_cast<double>(seen),
                                   stop_after_epoch ? 1.0 : 0.0}, torch::kFloat64);
      comm->all_reduce_sum(totals, "epoch totals all-reduce");
      loss_sum = totals[0].item<double>();
      correct = static_cast<int64_t>(totals[1].item<double>());
      seen = static_cast<int64_t>(totals[2].item<double>());
      stop_after_epoch = totals[3].item<double>() > 0;
    }
    const double train_rate = train_seconds > 0 ? seen / train_seconds : 0;  // all ranks

    val_loader.start_epoch(0);
    const EvalResult ev = evaluate(model, val_loader, device, 0, "eval", reduce_sum);
    spdlog::info("epoch {} done: train loss {:.4f} acc {:.2f}% | val loss {:.4f} top1 {:.2f}% top5 {:.2f}% | {} train, {:.0f} img/s",
                 epoch + 1, seen ? loss_sum / seen : 0.0, seen ? 100.0 * correct / seen : 0.0,
                 ev.loss, 100 * ev.top1, 100 * ev.top5, format_duration(train_seconds), train_rate);
    log_metrics("{\"type\": \"epoch\", \"epoch\": " + std::to_string(epoch + 1) +
                  ", \"lr\": " + json_number(epoch_lr) +
                  ", \"train_loss\": " + json_number(seen ? loss_sum / seen : 0.0) +
                  ", \"train_acc\": " + json_number(seen ? static_cast<double>(correct) / seen : 0.0) +
                  ", \"val_loss\": " + json_number(ev.loss) + ", \"val_top1\": " + json_number(ev.top1) +
                  ", \"val_top5\": " + json_number(ev.top5) +
                  ", \"train_seconds\": " + json_number(train_seconds) +
                  ", \"img_per_s\": " + json_number(train_rate) + "}");
    save(epoch, 0, schedule.lr_at(epoch + 1, 0, steps_per_epoch));
    if (lead) spdlog::info("epoch {}: wrote {}", epoch + 1, checkpoint_path);
    if (stop_after_epoch)
      return 128 + (g_stop_signal.load() != 0 ? g_stop_signal.load() : SIGTERM);
  }

  if (lead) {
    auto final_state = state_dict(*model);
    for (auto& [n, t] : final_state) t = t.to(torch::kCPU).contiguous();
    save_state_dict(final_state, p.output + "/model.pth");
  }
  if (scaler.enabled())
    spdlog::info("fp16 loss scaling: {} steps skipped for inf/nan gradients, final scale {}",
                 scaler.skipped_steps(), scaler.current_scale());
  if (train_loader.skipped() + val_loader.skipped() > 0)
    spdlog::warn("skipped {} unreadable images", train_loader.skipped() + val_loader.skipped());
  spdlog::info("done: weights in {}/model.pth, checkpoint {}, metrics {}", p.output,
               checkpoint_path, metrics_path);
  return 0;
}

}  // namespace alexnet::app
