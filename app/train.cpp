// alexnet train: torchvision's references/classification recipe in C++. The
// flags become an engine::TrainConfig; engine::Trainer does the rest.
#include "app/cli.h"
#include "app/commands.h"
#include "app/engine/trainer.h"
#include "app/runtime/machine.h"
#include "data/dataset.h"

#include <cstdio>
#include <sstream>
#include <string>

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
      ("lr-scheduler", "step, cosine or constant",
       cxxopts::value<std::string>()->default_value(engine::name_of(engine::kLrSchedulers, defaults.lr_scheduler)))
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
  add_recipe_options(options, defaults.recipe);
  add_compute_options(options, {defaults.precision, defaults.channels_last, runtime::PlanChoice::kOff},
                      /*with_plan=*/false);
  add_max_pixels_option(options);
  add_common_options(options);
  options.custom_help("[options]");
  return options;
}

TrainConfig parse_train_config(const cxxopts::ParseResult& r, const cxxopts::Options& options) {
  using namespace engine;
  TrainConfig c;
  const auto text = [&r](const char* k) { return r[k].as<std::string>(); };
  // A flag naming one of `names`.
  const auto choice = [&](const char* flag, const auto& names) {
    const auto parsed = parse_name(names, text(flag));
    if (!parsed)
      throw UsageError(std::string("--") + flag + " must be " + choices(names) + ", got '" + text(flag) + "'",
                       options.help());
    return *parsed;
  };
  c.data = text("data");
  if (r.count("val")) c.val = text("val");
  c.epochs = positive_flag(r, "epochs", options);
  c.batch_size = positive_flag(r, "batch-size", options);
  c.recipe = recipe_flags(r, options);
  c.lr_scheduler = choice("lr-scheduler", kLrSchedulers);
  c.lr_step_size = positive_flag(r, "lr-step-size", options);
  c.lr_gamma = r["lr-gamma"].as<double>();
  c.lr_warmup_epochs = r["lr-warmup-epochs"].as<double>();
  c.lr_warmup_method = choice("lr-warmup-method", kWarmupMethods);
  c.lr_warmup_decay = r["lr-warmup-decay"].as<double>();
  c.lr_update = choice("lr-update", kLrUpdates);
  c.image_size = r["image-size"].as<int64_t>();
  c.augment = choice("augment", kAugments);
  c.workers = r["workers"].as<int64_t>();
  c.seed = r["seed"].as<int64_t>();
  c.deterministic = r.count("deterministic") > 0;
  c.output = text("output");
  if (r.count("resume")) c.resume = text("resume");
  if (r.count("weights")) c.weights = text("weights");
  c.reset_classifier = r.count("reset-classifier") > 0;
  c.num_classes = r["num-classes"].as<int64_t>();
  c.in_channels = r["in-channels"].as<int64_t>();
  c.print_freq = r["print-freq"].as<int64_t>();
  c.max_steps = r["max-steps"].as<int64_t>();
  const runtime::ComputeRequest compute = compute_flags(r, options, /*with_plan=*/false);
  c.precision = compute.precision;
  c.channels_last = compute.channels_last;
  try {
    c.arch = parse_arch(text("arch"));
  } catch (const c10::Error&) {
    throw UsageError("--arch must be alexnet or alexnet2012, got '" + text("arch") + "'", options.help());
  }
  c.init = choice("init", kInits);
  c.skip_bad = r.count("skip-bad") > 0;
  c.overwrite = r.count("overwrite") > 0;
  c.distributed = r.count("distributed") > 0;
  if (r.count("dist-backend"))
    c.dist_backend = choice("dist-backend", kDistBackends);
  c.dist_timeout = positive_flag(r, "dist-timeout", options);
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what(), options.help());
  }
  return c;
}

}  // namespace

int run_train(int argc, const char* const* argv) {
  const TrainConfig defaults;
  cxxopts::Options options = train_options(defaults);
  const auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\ndata specs:\n%s\n", options.help().c_str(), data::kDataSpecHelp);
    return 0;
  }
  const TrainConfig config = parse_train_config(result, options);
  set_max_pixels(result, options);

  const torch::Device device = setup_runtime(result);
  runtime::reuse_freed_memory();
  engine::Trainer trainer(config, device, /*threads_given=*/result.count("threads") > 0);
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
