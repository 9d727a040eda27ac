// What `alexnet train` is asked to do, typed and parsed once at the edge (the
// command's flags); the engine reads it and never compares strings.
#pragma once

#include "app/engine/lr_schedule.h"
#include "app/runtime/precision.h"
#include "model/alexnet.h"
#include "model/pth/pth_value.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace alexnet::engine {

/// How often the learning rate moves: every step (smooth, fractional epochs) or
/// every epoch (torchvision train.py's).
enum class LrUpdate { kStep, kEpoch };
/// Training augmentation: the dataset's recipe (random crops and flips), flips
/// only, none, or auto (none for MNIST and Fashion-MNIST, full otherwise).
enum class Augment { kAuto, kFull, kFlip, kNone };
/// Initialisation from scratch: the architecture's own, VGG's, or auto (vgg for
/// torchvision's AlexNet, module for the 2012 paper's).
enum class Init { kAuto, kModule, kVgg };
/// The c10d backend; auto: NCCL on CUDA, Gloo on the CPU.
enum class DistBackend { kAuto, kGloo, kNccl };

/// An enum value beside the name the flags take and a checkpoint's args record.
template <typename E>
struct EnumName {
  E value;
  const char* name;
};
inline constexpr EnumName<LrScheduler> kLrSchedulers[] = {
    {LrScheduler::kStep, "step"}, {LrScheduler::kCosine, "cosine"}, {LrScheduler::kConstant, "constant"}};
inline constexpr EnumName<WarmupMethod> kWarmupMethods[] = {{WarmupMethod::kLinear, "linear"},
                                                            {WarmupMethod::kConstant, "constant"}};
inline constexpr EnumName<LrUpdate> kLrUpdates[] = {{LrUpdate::kStep, "step"}, {LrUpdate::kEpoch, "epoch"}};
inline constexpr EnumName<Augment> kAugments[] = {
    {Augment::kAuto, "auto"}, {Augment::kFull, "full"}, {Augment::kFlip, "flip"}, {Augment::kNone, "none"}};
inline constexpr EnumName<Init> kInits[] = {{Init::kAuto, "auto"}, {Init::kModule, "module"}, {Init::kVgg, "vgg"}};
/// kAuto's name is empty: the flag left unset.
inline constexpr EnumName<DistBackend> kDistBackends[] = {
    {DistBackend::kAuto, ""}, {DistBackend::kGloo, "gloo"}, {DistBackend::kNccl, "nccl"}};

/// The name `names` gives `value`.
template <typename E, size_t N>
const char* name_of(const EnumName<E> (&names)[N], E value) {
  for (const auto& n : names)
    if (n.value == value) return n.name;
  return "?";
}
/// The value `names` calls `text`; nullopt when none is.
template <typename E, size_t N>
std::optional<E> parse_name(const EnumName<E> (&names)[N], const std::string& text) {
  for (const auto& n : names)
    if (text == n.name) return n.value;
  return std::nullopt;
}
/// "a, b or c": the non-empty names, for error messages.
template <typename E, size_t N>
std::string choices(const EnumName<E> (&names)[N]) {
  std::vector<std::string> listed;
  for (const auto& n : names)
    if (*n.name != '\0') listed.emplace_back(n.name);
  std::string out;
  for (size_t i = 0; i < listed.size(); ++i)
    out += (i == 0 ? "" : i + 1 == listed.size() ? " or " : ", ") + listed[i];
  return out;
}

/// The recipe names of --recipe; kAuto is main for Fashion-MNIST from scratch
/// (the built-in job), torchvision otherwise (fine-tuning, other data, resuming
/// a train.py checkpoint).
enum class RecipeName { kAuto, kMain, kTorchvision };
inline constexpr EnumName<RecipeName> kRecipeNames[] = {
    {RecipeName::kAuto, "auto"}, {RecipeName::kMain, "main"}, {RecipeName::kTorchvision, "torchvision"}};

/// What one training step does: the loss, the optimiser and the model's dropout.
/// `alexnet train` and `alexnet bench --mode train` take the same flags for it
/// and run it through the same TrainStep. Two named sets of defaults (--recipe):
/// main_job() and torchvision(); each flag overrides its value.
struct Recipe {
  /// The main job's: Fashion-MNIST at 64 px to 90% in under ten minutes on two
  /// cores (BENCHMARKS.md). These are the member defaults.
  static Recipe main_job() { return {}; }
  /// torchvision references/classification/train.py's defaults as its docs run
  /// AlexNet (--model alexnet --lr 1e-2): plain momentum 0.9, weight decay 1e-4,
  /// no label smoothing, no clipping, torchvision's dropout 0.5.
  static Recipe torchvision();
  /// main_job() or torchvision() (kAuto must be resolved first).
  static Recipe named(RecipeName name) { return name == RecipeName::kTorchvision ? torchvision() : main_job(); }

  double lr = 0.06;             // base learning rate (the schedule scales it)
  double momentum = 0.9;
  double weight_decay = 5e-4;
  bool nesterov = true;
  double label_smoothing = 0.1;
  double clip_grad_norm = 2.0;  // total L2 norm of the gradients; 0: no clipping
  double dropout = 0.1;

  /// Checks each value's range; throws std::invalid_argument naming the flag.
  void validate() const;
};

/// The defaults are the main job's. torchvision's ImageNet run for AlexNet is
/// --recipe torchvision --epochs 90 --batch-size 32 (per process, 8 of them).
struct TrainConfig {
  std::string data = "fashion-mnist";  // a data spec (data/dataset.h)
  std::string val;                     // empty: the data spec's val/test split
  int64_t epochs = 3;
  int64_t batch_size = 128;            // per process
  Recipe recipe;
  RecipeName recipe_name = RecipeName::kMain;  // resolved: main or torchvision
  std::string recipe_reason;           // why, for the log: "auto: ...", "--recipe", the overriding flags
  int64_t start_epoch = 0;             // epochs counted as done at a fresh start (train.py's --start-epoch)
  LrScheduler lr_scheduler = LrScheduler::kCosine;
  int64_t lr_step_size = 30;
  double lr_gamma = 0.1;
  double lr_warmup_epochs = 0;         // fractional with LrUpdate::kStep
  WarmupMethod lr_warmup_method = WarmupMethod::kLinear;
  double lr_warmup_decay = 0.01;
  LrUpdate lr_update = LrUpdate::kStep;
  int64_t image_size = 0;              // 0: the dataset's default
  Augment augment = Augment::kAuto;
  int64_t workers = 2;
  int64_t seed = 0;
  bool deterministic = false;
  std::string output = "out";
  std::string resume;                  // a training checkpoint to continue
  std::string weights;                 // weights to fine-tune
  bool reset_classifier = false;
  int64_t num_classes = 0;             // 0: from the data
  int64_t in_channels = 3;
  int64_t print_freq = 50;
  int64_t max_steps = 0;               // per epoch; 0 = all
  int64_t save_every = 0;              // also write OUT/model_{epoch}.pth every N epochs; 0 = never
  runtime::Precision precision = runtime::Precision::kAuto;
  Arch arch = Arch::kTorchvision;
  Init init = Init::kAuto;
  runtime::ChannelsLast channels_last = runtime::ChannelsLast::kOff;
  bool skip_bad = false;
  bool overwrite = false;
  bool distributed = false;
  DistBackend dist_backend = DistBackend::kAuto;
  int64_t dist_timeout = 300;          // seconds

  /// The schedule these settings describe.
  LrSchedule schedule() const;
  /// Checks the values against each other and their ranges; throws
  /// std::invalid_argument naming the flag ("--lr must be positive").
  void validate() const;
};

/// The settings as a dict, stored in the checkpoint's "args" like train.py's Namespace.
pth::Value args_value(const TrainConfig& config);

}  // namespace alexnet::engine
