#include "app/engine/train_step.h"

namespace alexnet::engine {

TrainStep::TrainStep(AlexNet& model, const Recipe& recipe, const torch::Device& device,
                     runtime::Precision precision)
    : model_(model),
      recipe_(recipe),
      device_(device),
      precision_(precision),
      params_(model->parameters()),
      sgd_(params_, SgdOptions()
                        .momentum(recipe.momentum)
                        .weight_decay(recipe.weight_decay)
                        .nesterov(recipe.nesterov)),
      // fp16 gradients underflow without loss scaling; bf16 has fp32's range.
      scaler_(LossScalerOptions().enabled(precision == runtime::Precision::kFp16)) {}

TrainStep::Forward TrainStep::forward(const torch::Tensor& x, const torch::Tensor& y) {
  sgd_.zero_grad();
  Forward out;
  {
    const runtime::AutocastGuard autocast(device_, precision_);
    out.logits = model_->forward(x);
  }
  out.logits = out.logits.to(torch::kFloat32);  // (B, classes)
  out.loss = torch::nn::functional::cross_entropy(
      out.logits, y,
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(recipe_.label_smoothing));
  return out;
}

bool TrainStep::update(const torch::Tensor& loss, double lr) {
  if (reducer_) reducer_->prepare();
  scaler_.scale(loss).backward();
  if (reducer_) reducer_->finish();  // gradients averaged over the ranks
  return scaler_.step(params_, [&] {
    const double clip = recipe_.clip_grad_norm;
    sgd_.step(lr, clip > 0 ? clip_coefficient(params_, clip) : 1.0);
  });
}

torch::Tensor TrainStep::operator()(const torch::Tensor& x, const torch::Tensor& y, double lr) {
  const Forward f = forward(x, y);
  update(f.loss, lr);
  return f.loss;
}

}  // namespace alexnet::engine
