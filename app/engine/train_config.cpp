#include "app/engine/train_config.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace alexnet::engine {

LrSchedule TrainConfig::schedule() const {
  return LrSchedule{/*base_lr=*/recipe.lr,           /*kind=*/lr_scheduler,
                    /*epochs=*/epochs,                /*step_size=*/lr_step_size,
                    /*gamma=*/lr_gamma,               /*warmup_epochs=*/lr_warmup_epochs,
                    /*warmup_method=*/lr_warmup_method, /*warmup_decay=*/lr_warmup_decay,
                    /*per_step=*/lr_update == LrUpdate::kStep};
}

namespace {

void check(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

}  // namespace

Recipe Recipe::torchvision() {
  Recipe r;
  r.lr = 0.01;
  r.momentum = 0.9;
  r.weight_decay = 1e-4;
  r.nesterov = false;
  r.label_smoothing = 0;
  r.clip_grad_norm = 0;
  r.dropout = 0.5;
  return r;
}

void Recipe::validate() const {
  const std::pair<const char*, double> reals[] = {
      {"lr", lr}, {"momentum", momentum}, {"weight-decay", weight_decay},
      {"label-smoothing", label_smoothing}, {"dropout", dropout}, {"clip-grad-norm", clip_grad_norm}};
  for (const auto& [flag, value] : reals)
    check(std::isfinite(value), std::string("--") + flag + " must be a finite number");
  check(lr > 0, "--lr must be positive");
  check(momentum >= 0 && momentum < 1, "--momentum must be in [0, 1)");
  check(weight_decay >= 0, "--weight-decay must not be negative");
  check(!nesterov || momentum > 0, "--nesterov needs a positive --momentum");
  check(label_smoothing >= 0 && label_smoothing < 1, "--label-smoothing must be in [0, 1)");
  check(dropout >= 0 && dropout < 1, "--dropout must be in [0, 1)");
  check(clip_grad_norm >= 0, "--clip-grad-norm must be positive (or 0: no clipping)");
}

void TrainConfig::validate() const {
  recipe.validate();
  const std::pair<const char*, double> reals[] = {
      {"lr-gamma", lr_gamma}, {"lr-warmup-decay", lr_warmup_decay}, {"lr-warmup-epochs", lr_warmup_epochs}};
  for (const auto& [flag, value] : reals)
    check(std::isfinite(value), std::string("--") + flag + " must be a finite number");
  check(lr_gamma > 0, "--lr-gamma must be positive");
  check(lr_warmup_epochs >= 0 && (lr_warmup_epochs == 0 || lr_warmup_epochs < epochs),
        "--lr-warmup-epochs must be in [0, epochs)");
  check(lr_update != LrUpdate::kEpoch || lr_warmup_epochs == std::floor(lr_warmup_epochs),
        "--lr-warmup-epochs must be a whole number with --lr-update epoch");
  check(lr_warmup_decay > 0 && lr_warmup_decay <= 1, "--lr-warmup-decay must be in (0, 1]");
  check(image_size == 0 || image_size >= kMinInputSize,
        "--image-size must be at least " + std::to_string(kMinInputSize) + " (or 0 for the default)");
  check(workers >= 0, "--workers must not be negative");
  check(seed >= 0, "--seed must not be negative");
  check(num_classes >= 0, "--num-classes must be positive (or 0: from the data)");
  check(in_channels == 1 || in_channels == 3, "--in-channels must be 1 or 3");
  check(print_freq >= 0, "--print-freq must not be negative");
  check(max_steps >= 0, "--max-steps must not be negative");
  check(save_every >= 0, "--save-every must not be negative");
  check(resume.empty() || weights.empty(), "--resume and --weights exclude each other");
  check(dist_backend == DistBackend::kAuto || distributed, "--dist-backend needs --distributed");
}

pth::Value args_value(const TrainConfig& c) {
  using pth::Value;
  Value a = Value::dict();
  const auto s = [&a](const char* k, const std::string& v) { a.set(Value::string(k), Value::string(v)); };
  const auto i = [&a](const char* k, int64_t v) { a.set(Value::string(k), Value::integer(v)); };
  const auto f = [&a](const char* k, double v) { a.set(Value::string(k), Value::floating(v)); };
  const auto b = [&a](const char* k, bool v) { a.set(Value::string(k), Value::boolean(v)); };
  const Recipe& r = c.recipe;
  s("data_path", c.data); s("val", c.val); s("model", arch_name(c.arch));
  i("epochs", c.epochs); i("batch_size", c.batch_size); f("lr", r.lr); f("momentum", r.momentum);
  f("weight_decay", r.weight_decay); b("nesterov", r.nesterov); s("lr_scheduler", name_of(kLrSchedulers, c.lr_scheduler));
  i("lr_step_size", c.lr_step_size); f("lr_gamma", c.lr_gamma);
  if (c.lr_warmup_epochs == std::floor(c.lr_warmup_epochs)) {
    i("lr_warmup_epochs", static_cast<int64_t>(c.lr_warmup_epochs));  // train.py's type
  } else {
    f("lr_warmup_epochs", c.lr_warmup_epochs);
  }
  s("lr_update", name_of(kLrUpdates, c.lr_update)); s("init", name_of(kInits, c.init));
  s("lr_warmup_method", name_of(kWarmupMethods, c.lr_warmup_method)); f("lr_warmup_decay", c.lr_warmup_decay);
  f("label_smoothing", r.label_smoothing);
  if (r.clip_grad_norm > 0) {
    f("clip_grad_norm", r.clip_grad_norm);
  } else {
    a.set(Value::string("clip_grad_norm"), Value::none());  // train.py's "off"
  }
  f("dropout", r.dropout); i("image_size", c.image_size); s("augment", name_of(kAugments, c.augment));
  i("workers", c.workers); i("seed", c.seed); b("deterministic", c.deterministic);
  s("output_dir", c.output); i("num_classes", c.num_classes); i("in_channels", c.in_channels);
  s("precision", runtime::precision_name(c.precision));
  s("channels_last", runtime::channels_last_name(c.channels_last));
  i("max_steps", c.max_steps); i("save_every", c.save_every);
  s("recipe", name_of(kRecipeNames, c.recipe_name)); i("start_epoch", c.start_epoch);
  b("distributed", c.distributed); s("dist_backend", name_of(kDistBackends, c.dist_backend));
  return a;
}

}  // namespace alexnet::engine
