// Training parity: C++ AlexNet + alexnet::engine::Sgd against torchvision's AlexNet +
// torch.optim.SGD, from the same weights on the same batches (dropout off).
#include "model/alexnet.h"
#include "app/engine/sgd.h"
#include "model/weights.h"
#include "tests/fixture.h"

#include <gtest/gtest.h>

namespace alexnet {
namespace {

TEST(TrainReference, TwentySgdStepsMatchTorchOptimSgd) {
  const auto f = testing::read_fixture(testing::reference_path("train.bin"));
  const auto hyper = f.at("hyper");  // lr, momentum, weight decay
  const double lr = hyper[0].item<double>(), momentum = hyper[1].item<double>(),
               weight_decay = hyper[2].item<double>();
  const auto losses = f.at("losses");
  const int64_t steps = losses.size(0);

  AlexNet model(AlexNetOptions().num_classes(10).dropout(0.0));
  NamedTensors init;
  for (const auto& p : model->named_parameters()) init.emplace_back(p.key(), f.at("init/" + p.key()));
  load_named_tensors(*model, init, "train.bin");
  model->train();
  engine::Sgd sgd(model->parameters(),
                  engine::SgdOptions().momentum(momentum).weight_decay(weight_decay));

  double worst_loss = 0;
  for (int64_t s = 0; s < steps; ++s) {
    const auto& x = f.at("x/" + std::to_string(s));  // (4, 3, 64, 64)
    const auto& y = f.at("y/" + std::to_string(s));  // (4,)
    sgd.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    sgd.step(lr);
    const double want = losses[s].item<double>();
    const double rel = std::abs(loss.item<double>() - want) / std::max(1e-12, std::abs(want));
    worst_loss = std::max(worst_loss, rel);
    EXPECT_LE(rel, 1e-4) << "step " << s + 1 << ": loss " << loss.item<double>() << " vs " << want;
  }
  float worst_weight = 0;
  for (const auto& p : model->named_parameters()) {
    const float diff = (p.value() - f.at("final/" + p.key())).abs().max().item<float>();
    worst_weight = std::max(worst_weight, diff);
    EXPECT_LE(diff, 1e-4f) << p.key() << " after " << steps << " steps";
  }
  std::printf("  %lld steps: max relative loss difference %.3g, max |weight difference| %.3g\n",
              static_cast<long long>(steps), worst_loss, worst_weight);
}

}  // namespace
}  // namespace alexnet
