// One training step: the one `alexnet train` takes, and the one
// `alexnet bench --mode train` times.
#pragma once

#include "app/engine/distributed.h"
#include "app/engine/loss_scaler.h"
#include "app/engine/sgd.h"
#include "app/engine/train_config.h"
#include "app/runtime/precision.h"
#include "model/alexnet.h"

#include <torch/torch.h>

#include <vector>

namespace alexnet::engine {

/// A step on a batch x (B, C, S, S) with labels y (B,), as torchvision's
/// train_one_epoch takes it:
///   zero the gradients;
///   forward under autocast for bf16/fp16 (the weights stay fp32);
///   cross-entropy with the recipe's label smoothing, on fp32 logits;
///   backward of the loss (fp16: scaled, as GradScaler), the gradients averaged
///     over the ranks as they are produced (distributed: set_reducer);
///   clip_grad_norm_ to the recipe's norm, then SGD with momentum, weight decay
///     and Nesterov at the step's learning rate (fp16: skipped on inf/NaN).
/// forward() and update() are the two halves, so that a caller may look at the
/// loss in between (train checks it and shares it over the ranks).
class TrainStep {
 public:
  /// `model` is on `device` in its final layout, in train mode.
  TrainStep(AlexNet& model, const Recipe& recipe, const torch::Device& device,
            runtime::Precision precision);

  struct Forward {
    torch::Tensor logits;  // (B, classes) float32
    torch::Tensor loss;    // () float32, the batch mean
  };
  Forward forward(const torch::Tensor& x, const torch::Tensor& y);
  /// The backward pass and the update at learning rate lr; false when an fp16
  /// overflow skipped the update.
  bool update(const torch::Tensor& loss, double lr);
  /// forward() then update(); the loss.
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& y, double lr);

  /// Averages the gradients over the ranks during backward (nullptr: one process).
  void set_reducer(GradientReducer* reducer) { reducer_ = reducer; }
  /// The model's parameters, in registration order (the optimiser's order).
  const std::vector<torch::Tensor>& params() const { return params_; }
  Sgd& sgd() { return sgd_; }
  const LossScaler& scaler() const { return scaler_; }
  const Recipe& recipe() const { return recipe_; }

 private:
  AlexNet model_;
  Recipe recipe_;
  torch::Device device_;
  runtime::Precision precision_;
  std::vector<torch::Tensor> params_;
  Sgd sgd_;
  LossScaler scaler_;
  GradientReducer* reducer_ = nullptr;
};

}  // namespace alexnet::engine
