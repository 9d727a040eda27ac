// What AlexNet's forward pass hands inference to once an engine is attached
// (AlexNetImpl::set_engine): a whole pass, input to logits, built from the
// module's final weights. Two engines exist: Int8AlexNet (model/int8.h) and
// FusedAlexNet (model/fused.h, bf16).
#pragma once

#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace alexnet {

class InferenceEngine {
 public:
  virtual ~InferenceEngine() = default;
  /// x: (N, C, H, W) on the CPU -> logits (N, classes).
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  /// While set, each forward() appends (stage, seconds) for every stage it runs,
  /// named as the module's layers ("features.0", ..., "classifier.6") plus the
  /// engine's own steps ("quantize", "avgpool"); nullptr: off (bench --layers).
  virtual void set_profile(std::vector<std::pair<std::string, double>>* sink) = 0;
};

}  // namespace alexnet
