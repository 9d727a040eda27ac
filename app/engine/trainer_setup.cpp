// What a run trains on and with: the data (checked against the starting file's
// classes), the model (initialised, loaded or fine-tuned, on its device and
// layout, the same on every rank) with its step and schedule, and the loaders.
#include "app/engine/trainer.h"
#include "app/engine/trainer_internal.h"

#include "app/runtime/compute.h"

#include <ATen/Context.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>

namespace alexnet::engine {

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

}  // namespace alexnet::engine
