// alexnet train: torchvision's references/classification recipe in C++. The
// flags become an engine::TrainConfig; engine::Trainer does the rest.
#include "app/cli.h"
#include "app/commands.h"
#include "app/engine/trainer.h"
#include "app/runtime/machine.h"
#include "data/dataset.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace alexnet::app {

namespace {

using engine::TrainConfig;

cxxopts::Options train_options(const TrainConfig& defaults) {
  cxxopts::Options options("alexnet train",
                           "Train AlexNet (SGD, torchvision's reference recipe). With no flags: "
                           "Fashion-MNIST from Debian's dataset-fashion-mnist.");
  const auto d = [](auto v) { std::ostringstream os; os << v; return os.str(); };
  options.add_options()
      ("data", "Training data spec (see below)", cxxopts::value<std::string>()->default_value(defaults.data))
      ("val", "Validation data spec (default: the data spec's val/test split)", cxxopts::value<std::string>())
      ("epochs", "Epochs", cxxopts::value<int64_t>()->default_value(d(defaults.epochs)))
      ("b,batch-size", "Images per step", cxxopts::value<int64_t>()->default_value(d(defaults.batch_size)))
      ("lr-scheduler", "step, cosine or constant (default: the recipe's: cosine for main, step for torchvision)",
       cxxopts::value<std::string>())
      ("lr-step-size", "Epochs between decays (step)", cxxopts::value<int64_t>()->default_value(d(defaults.lr_step_size)))
      ("lr-gamma", "Decay factor (step)", cxxopts::value<double>()->default_value(d(defaults.lr_gamma)))
      ("lr-warmup-epochs", "Warmup epochs (a fraction with --lr-update step)",
       cxxopts::value<double>()->default_value(d(defaults.lr_warmup_epochs)))
      ("lr-warmup-method", "linear or constant",
       cxxopts::value<std::string>()->default_value(engine::name_of(engine::kWarmupMethods, defaults.lr_warmup_method)))
      ("lr-warmup-decay", "Warmup starting factor", cxxopts::value<double>()->default_value(d(defaults.lr_warmup_decay)))
      ("lr-update", "Move the schedule every step (smooth; fractional epochs) or every epoch "
       "(torchvision train.py's)", cxxopts::value<std::string>()->default_value(engine::name_of(engine::kLrUpdates, defaults.lr_update)))
      ("augment", "Training augmentation: full (the dataset's recipe: random crops and flips), flip "
       "(flips only; evaluation's resize and crop), none, or auto (none for MNIST and Fashion-MNIST, "
       "whose short default run learns faster without it; full otherwise)",
       cxxopts::value<std::string>()->default_value(engine::name_of(engine::kAugments, defaults.augment)))
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
      ("save-every", "Also keep every Nth epoch's checkpoint as model_EPOCH.pth (train.py's names, "
       "0-based; 0 = never). model_best.pth always holds the best validation top-1's weights",
       cxxopts::value<int64_t>()->default_value("0"))
      ("arch", "alexnet (torchvision's) or alexnet2012 (the paper's: LRN, groups=2, its init)",
       cxxopts::value<std::string>()->default_value(arch_name(defaults.arch)))
      ("init", "Initialisation when training from scratch: module (the architecture's own: "
       "torchvision's, or the paper's for alexnet2012), vgg (as torchvision's VGG: Kaiming fan-out "
       "convolutions, N(0, 0.01) linear layers; no stall at chance early on) or auto (vgg for "
       "alexnet, module for alexnet2012)", cxxopts::value<std::string>()->default_value(engine::name_of(engine::kInits, defaults.init)))
      ("skip-bad", "Skip unreadable images with a warning instead of failing")
      ("overwrite", "Start afresh even if --output already holds a checkpoint.pth")
      ("distributed", "Data-parallel over processes, from torchrun's environment (RANK, WORLD_SIZE, "
       "MASTER_ADDR, MASTER_PORT, LOCAL_RANK); --batch-size is per process")
      ("dist-backend", "gloo or nccl (default: nccl on CUDA, gloo on CPU)", cxxopts::value<std::string>())
      ("dist-timeout", "Seconds a process waits for the others (rendezvous, each collective) before failing",
       cxxopts::value<int64_t>()->default_value(d(defaults.dist_timeout)));
  // torchvision's references/classification/train.py spellings, for the same things.
  options.add_options("train.py's names")
      ("data-path", "As --data", cxxopts::value<std::string>())
      ("output-dir", "As --output", cxxopts::value<std::string>())
      ("model", "As --arch (alexnet)", cxxopts::value<std::string>())
      ("opt", "Optimiser: sgd (the only one; its flags: --lr, --momentum, --weight-decay, --nesterov)",
       cxxopts::value<std::string>())
      ("amp", "Mixed precision: as --precision auto, the default (bf16 on AMX CPUs, AMD's with AVX512-BF16 "
       "and Ampere GPUs, "
       "fp16 on older GPUs, else fp32; the choice is logged)");
  add_recipe_options(options, "auto");
  options.add_options()
      ("start-epoch", "Epochs already done at a fresh start (train.py's --start-epoch): the schedule and the "
       "epoch count begin there", cxxopts::value<int64_t>()->default_value("0"))
      ("test-only", "Only evaluate the --weights or --resume file on the validation data, as train.py's "
       "--test-only (alexnet eval with the same data flags)");
  add_compute_options(options, {defaults.precision, defaults.channels_last, runtime::PlanChoice::kOff},
                      /*with_plan=*/false);
  add_max_pixels_option(options);
  add_common_options(options);
  options.custom_help("[options]");
  return options;
}

// train.py's name for a flag, where it differs.
struct FlagAlias {
  const char* flag;
  const char* alias;
};
constexpr FlagAlias kFlagAliases[] = {{"data", "data-path"}, {"output", "output-dir"}, {"arch", "model"}};

bool flag_given(const cxxopts::ParseResult& r, const char* flag) {
  if (r.count(flag)) return true;
  for (const auto& [f, alias] : kFlagAliases)
    if (std::string(f) == flag && r.count(alias)) return true;
  return false;
}

// train.py's scheduler names beside ours.
std::string scheduler_name(const std::string& name) {
  if (name == "steplr") return "step";
  if (name == "cosineannealinglr") return "cosine";
  if (name == "constantlr") return "constant";
  return name;
}

// The flags of one parse, read by name (or by train.py's alias, where one was given);
// a bad value is a usage error naming the flag.
struct FlagReader {
  const cxxopts::ParseResult& r;
  const cxxopts::Options& options;

  std::string text(const char* k) const {
    for (const auto& [flag, alias] : kFlagAliases)
      if (std::string(flag) == k && r.count(alias)) return r[alias].as<std::string>();
    return r[k].as<std::string>();
  }
  // A flag naming one of `names`.
  template <class Names>
  auto choice(const char* flag, const Names& names) const {
    const auto parsed = engine::parse_name(names, text(flag));
    if (!parsed)
      throw UsageError(std::string("--") + flag + " must be " + engine::choices(names) + ", got '" + text(flag) +
                           "'",
                       options.help());
    return *parsed;
  }
};

// Flags that cannot go together.
void check_conflicts(const cxxopts::ParseResult& r, const cxxopts::Options& options) {
  for (const auto& [flag, alias] : kFlagAliases)
    if (r.count(flag) && r.count(alias))
      throw UsageError(std::string("--") + flag + " and --" + alias + " are the same flag: give one", options.help());
  if (r.count("opt") && r["opt"].as<std::string>() != "sgd")
    throw UsageError("--opt " + r["opt"].as<std::string>() + ": only sgd is implemented", options.help());
  if (r.count("amp") && r.count("precision") && r["precision"].as<std::string>() != "auto")
    throw UsageError("--amp is --precision auto: it cannot go with --precision " + r["precision"].as<std::string>(),
                     options.help());
}

// The recipe (named, or chosen for the data and start), the flags that override it,
// and the reason, which Trainer::start logs. `typed`: the flags typed, without those
// --resume restored.
void recipe_config(TrainConfig& c, const FlagReader& f, const cxxopts::ParseResult& typed) {
  using namespace engine;
  const cxxopts::ParseResult& r = f.r;
  RecipeName name = recipe_name_flag(r, f.options);
  if (name == RecipeName::kAuto) {
    const bool fashion = c.data == "fashion-mnist" || c.data.rfind("fashion-mnist:", 0) == 0;
    const bool fresh = !flag_given(r, "weights") && !flag_given(r, "resume");
    name = fashion && fresh ? RecipeName::kMain : RecipeName::kTorchvision;
    c.recipe_reason = fashion && fresh          ? "auto: Fashion-MNIST from scratch"
                      : flag_given(r, "weights") ? "auto: fine-tuning --weights"
                      : flag_given(r, "resume")  ? "auto: resuming a checkpoint that records no recipe"
                                                 : "auto: data other than Fashion-MNIST";
  } else {
    c.recipe_reason = "--recipe " + std::string(name_of(kRecipeNames, name));
  }
  c.recipe_name = name;
  c.recipe = recipe_flags(r, f.options, Recipe::named(name));
  // Restored flags are the checkpoint's run, not choices made here: name only the typed ones.
  if (typed.count("resume") && !typed.count("recipe") && r.count("recipe")) c.recipe_reason = "the checkpoint's run";
  std::string overrides;
  recipe_flags(typed, f.options, c.recipe, &overrides);
  if (!overrides.empty()) c.recipe_reason += "; given:" + overrides;
}

// The learning rate's schedule: the scheduler (the recipe's unless given), its decay and warmup.
void schedule_config(TrainConfig& c, const FlagReader& f) {
  using namespace engine;
  const cxxopts::ParseResult& r = f.r;
  const std::string name = scheduler_name(
      flag_given(r, "lr-scheduler") ? f.text("lr-scheduler")
                                    : c.recipe_name == RecipeName::kMain ? "cosine" : "step");
  const auto parsed = parse_name(kLrSchedulers, name);
  if (!parsed)
    throw UsageError("--lr-scheduler must be " + choices(kLrSchedulers) +
                         " (or train.py's steplr, cosineannealinglr, constantlr), got '" + f.text("lr-scheduler") + "'",
                     f.options.help());
  c.lr_scheduler = *parsed;
  c.lr_step_size = positive_flag(r, "lr-step-size", f.options);
  c.lr_gamma = r["lr-gamma"].as<double>();
  c.lr_warmup_epochs = r["lr-warmup-epochs"].as<double>();
  c.lr_warmup_method = f.choice("lr-warmup-method", kWarmupMethods);
  c.lr_warmup_decay = r["lr-warmup-decay"].as<double>();
  c.lr_update = f.choice("lr-update", kLrUpdates);
}

// Where the run starts (--resume, --weights, --start-epoch) and what it writes.
void start_config(TrainConfig& c, const FlagReader& f) {
  const cxxopts::ParseResult& r = f.r;
  c.output = f.text("output");
  if (r.count("resume")) c.resume = f.text("resume");
  if (r.count("weights")) c.weights = f.text("weights");
  c.reset_classifier = r.count("reset-classifier") > 0;
  c.print_freq = r["print-freq"].as<int64_t>();
  c.max_steps = r["max-steps"].as<int64_t>();
  c.save_every = r["save-every"].as<int64_t>();
  c.overwrite = r.count("overwrite") > 0;
  c.start_epoch = r["start-epoch"].as<int64_t>();
  if (c.start_epoch < 0) throw UsageError("--start-epoch must not be negative", f.options.help());
  if (c.start_epoch > 0 && flag_given(r, "resume"))
    throw UsageError("--start-epoch: --resume continues where its checkpoint stopped; give one of them",
                     f.options.help());
  if (c.start_epoch >= c.epochs)
    throw UsageError("--start-epoch " + std::to_string(c.start_epoch) + " leaves none of --epochs " +
                         std::to_string(c.epochs) + " to train", f.options.help());
}

// The model and how it computes: architecture, initialisation, input, precision, layout.
void model_config(TrainConfig& c, const FlagReader& f) {
  const cxxopts::ParseResult& r = f.r;
  c.num_classes = r["num-classes"].as<int64_t>();
  c.in_channels = r["in-channels"].as<int64_t>();
  c.image_size = r["image-size"].as<int64_t>();
  const runtime::ComputeRequest compute = compute_flags(r, f.options, /*with_plan=*/false);
  c.precision = compute.precision;
  c.channels_last = compute.channels_last;
  try {
    c.arch = parse_arch(f.text("arch"));
  } catch (const c10::Error&) {
    throw UsageError("--arch must be alexnet or alexnet2012, got '" + f.text("arch") + "'", f.options.help());
  }
  c.init = f.choice("init", engine::kInits);
}

// `r` holds the flags typed and those --resume restored; `typed` only the typed ones.
TrainConfig parse_train_config(const cxxopts::ParseResult& r, const cxxopts::ParseResult& typed,
                               const cxxopts::Options& options) {
  using namespace engine;
  check_conflicts(r, options);
  const FlagReader f{r, options};
  TrainConfig c;
  c.data = f.text("data");
  if (r.count("val")) c.val = f.text("val");
  c.epochs = positive_flag(r, "epochs", options);
  c.batch_size = positive_flag(r, "batch-size", options);
  recipe_config(c, f, typed);
  schedule_config(c, f);
  c.augment = f.choice("augment", kAugments);
  c.workers = r["workers"].as<int64_t>();
  c.seed = r["seed"].as<int64_t>();
  c.deterministic = r.count("deterministic") > 0;
  c.skip_bad = r.count("skip-bad") > 0;
  start_config(c, f);
  model_config(c, f);
  c.distributed = r.count("distributed") > 0;
  if (r.count("dist-backend")) c.dist_backend = f.choice("dist-backend", kDistBackends);
  c.dist_timeout = positive_flag(r, "dist-timeout", options);
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what(), options.help());
  }
  return c;
}

// What `--resume CKPT` alone brings back: the checkpoint's "args" key (as
// engine::args_value writes it) and the flag that sets it. Left out: how the run is
// launched and watched (--distributed, --threads, --print-freq) and --weights.
struct RestoredFlag {
  const char* key;
  const char* flag;
};
constexpr RestoredFlag kRestoredFlags[] = {
    {"data_path", "data"}, {"val", "val"}, {"model", "arch"}, {"epochs", "epochs"},
    {"batch_size", "batch-size"}, {"lr", "lr"}, {"momentum", "momentum"},
    {"weight_decay", "weight-decay"}, {"nesterov", "nesterov"}, {"lr_scheduler", "lr-scheduler"},
    {"lr_step_size", "lr-step-size"}, {"lr_gamma", "lr-gamma"}, {"lr_warmup_epochs", "lr-warmup-epochs"},
    {"lr_warmup_method", "lr-warmup-method"}, {"lr_warmup_decay", "lr-warmup-decay"},
    {"lr_update", "lr-update"}, {"init", "init"}, {"label_smoothing", "label-smoothing"},
    {"clip_grad_norm", "clip-grad-norm"}, {"dropout", "dropout"}, {"image_size", "image-size"},
    {"augment", "augment"}, {"workers", "workers"}, {"seed", "seed"}, {"deterministic", "deterministic"},
    {"output_dir", "output"}, {"num_classes", "num-classes"}, {"in_channels", "in-channels"},
    {"precision", "precision"}, {"channels_last", "channels-last"}, {"max_steps", "max-steps"},
    {"save_every", "save-every"}, {"recipe", "recipe"},
};

// A checkpoint arg as the text of its flag; nullopt when it sets nothing (an empty
// --val, a false --deterministic, a type the flag does not take).
std::optional<std::string> flag_text(const pth::Value& v) {
  switch (v.kind()) {
    case pth::Value::Kind::kString:
      if (v.as_string().empty()) return std::nullopt;
      return v.as_string();
    case pth::Value::Kind::kInt: return std::to_string(v.as_int());
    case pth::Value::Kind::kFloat: return fmt::format("{}", v.as_float());  // shortest round-trip text
    case pth::Value::Kind::kBool: return std::string(v.as_bool() ? "true" : "false");
    case pth::Value::Kind::kNone: return std::string("0");  // train.py's "off" (clip_grad_norm)
    default: return std::nullopt;
  }
}

// The command line to parse, and the --resume file, read once: the Trainer takes
// it from here.
struct ResumeArgs {
  std::vector<std::string> args;
  std::shared_ptr<const WeightsFile> file;  // nullptr without --resume
};

// With --resume, the flags not given on the command line come back from the
// checkpoint's args, so that the printed "--resume CKPT" alone continues the run.
// Each restored and each overriding flag is logged. Only our own checkpoints
// (with "lr_update") are restored: train.py's args use other names and meanings.
ResumeArgs with_restored_flags(const cxxopts::ParseResult& given, int argc, const char* const* argv) {
  ResumeArgs out{std::vector<std::string>(argv, argv + argc), nullptr};
  if (!given.count("resume")) return out;
  const std::string path = given["resume"].as<std::string>();
  out.file = std::make_shared<const WeightsFile>(path);
  std::vector<std::string>& args = out.args;
  const pth::Value& root = out.file->root();
  const pth::Value* saved = root.is_dict() ? root.find("args") : nullptr;
  if (!saved || !saved->is_dict() || !saved->find("lr_update")) {
    spdlog::info("resume: {} has no arguments of this program (a train.py checkpoint?): the flags given "
                 "here and the defaults apply", path);
    return out;
  }
  std::map<std::string, std::string> typed;  // flag -> the text given (the last one)
  for (const auto& kv : given.arguments()) typed[kv.key()] = kv.value();
  std::string restored;
  for (const auto& [key, flag] : kRestoredFlags) {
    const pth::Value* v = saved->find(key);
    if (!v) continue;
    const std::optional<std::string> text = flag_text(*v);
    if (flag_given(given, flag)) {
      std::string typed_value = typed[flag];
      for (const auto& [f, alias] : kFlagAliases)
        if (std::string(f) == flag && given.count(alias)) typed_value = typed[alias];
      if (text && typed_value != *text)
        spdlog::info("resume: --{} {} given here (the checkpoint's run had {})", flag, typed_value, *text);
      continue;
    }
    if (!text) continue;
    if (std::string(flag) == "deterministic") {
      if (*text == "true") args.push_back("--deterministic");
    } else {
      args.push_back("--" + std::string(flag) + "=" + *text);
    }
    restored += " --" + std::string(flag) + " " + *text;
  }
  if (!restored.empty()) spdlog::info("resume: from {}'s run:{}", path, restored);
  return out;
}

// train.py --test-only: evaluate the model it would start from on the validation
// data, and stop. That is `alexnet eval`, given the same data and loader flags.
int test_only(const TrainConfig& c, const cxxopts::ParseResult& result, const cxxopts::Options& options) {
  const std::string weights = !c.resume.empty() ? c.resume : c.weights;
  if (weights.empty()) throw UsageError("--test-only evaluates --weights or --resume: give one", options.help());
  std::vector<std::string> args = {"eval", "--weights", weights, "--data", c.val.empty() ? c.data : c.val,
                                   "--split", "val", "--batch-size", std::to_string(c.batch_size),
                                   "--workers", std::to_string(c.workers),
                                   "--image-size", std::to_string(c.image_size),
                                   "--device", result["device"].as<std::string>(),
                                   "--threads", std::to_string(result["threads"].as<int>())};
  if (c.skip_bad) args.push_back("--skip-bad");
  spdlog::info("--test-only: alexnet{}", [&] {
    std::string line;
    for (const auto& a : args) line += " " + a;
    return line;
  }());
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return run_eval(static_cast<int>(argv.size()), argv.data());
}

}  // namespace

int run_train(int argc, const char* const* argv) {
  const TrainConfig defaults;
  cxxopts::Options options = train_options(defaults);
  const auto given = parse_or_usage(options, argc, argv);
  if (wants_help(given)) {
    std::printf("%s\ndata specs:\n%s\n", options.help().c_str(), data::kDataSpecHelp);
    return 0;
  }
  const ResumeArgs resume = with_restored_flags(given, argc, argv);
  std::vector<const char*> args_c;
  for (const auto& a : resume.args) args_c.push_back(a.c_str());
  const auto result = parse_or_usage(options, static_cast<int>(args_c.size()), args_c.data());
  const TrainConfig config = parse_train_config(result, given, options);
  if (result.count("test-only")) return test_only(config, result, options);
  set_max_pixels(result, options);

  const torch::Device device = setup_runtime(result);
  runtime::reuse_freed_memory();
  engine::Trainer trainer(config, device, /*threads_given=*/result.count("threads") > 0, resume.file);
  for (int64_t epoch = trainer.start_epoch(); epoch < config.epochs; ++epoch) {
    const engine::EpochResult train = trainer.train_one_epoch(epoch);
    if (train.stopped_mid_epoch) return 128 + train.signal;
    trainer.end_epoch(epoch, train, trainer.evaluate());
    if (train.signal != 0) return 128 + train.signal;  // stopped at the epoch's end
  }
  trainer.finish();
  return 0;
}

}  // namespace alexnet::app
