// The oneDNN plan (model/onednn_plan.h) against the features Sequential it
// replaces, on the same weights and inputs: every supported input size, both
// layouts, both algorithms; when the model uses it and when it must not.
// (tests/model_reference_test.cpp compares the plan's logits with torchvision's.)
#include "model/alexnet.h"
#include "model/onednn_plan.h"
#include "app/engine/sgd.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace alexnet {
namespace {

#define SKIP_WITHOUT_PLAN() \
  if (!OneDnnFeatures::compiled()) GTEST_SKIP() << "built without oneDNN's headers: no plan"

// oneDNN's Winograd kernels need AVX-512 (its avx512_core level: F, CD, BW, DQ, VL).
bool cpu_has_avx512_core() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    int found = 0;
    for (std::string w; words >> w;)
      found += w == "avx512f" || w == "avx512cd" || w == "avx512bw" || w == "avx512dq" || w == "avx512vl";
    return found == 5;
  }
  return false;
}

// max |a - b| / max |b|: the plan's error relative to the activations' scale.
float relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<float>();
}

TEST(OneDnnPlan, FeaturesMatchTheSequentialAtEverySizeAndLayout) {
  SKIP_WITHOUT_PLAN();
  torch::manual_seed(0);
  AlexNet model;
  init_vgg_style(*model);  // activations of order 1 through all five layers
  model->eval();
  torch::NoGradGuard no_grad;
  OneDnnFeatures direct(model->features, ConvAlgorithm::kDirect);
  OneDnnFeatures winograd(model->features, ConvAlgorithm::kWinograd);
  // 63: the smallest input; 64 and 95: a 1x1 and a 2x2 map after the last pool;
  // 100 and 127: poolings whose floor drops the last row (oneDNN's right padding < 0);
  // 224: ImageNet; 150x100: not square.
  const std::vector<std::pair<int64_t, int64_t>> sizes = {
      {63, 63}, {64, 64}, {95, 95}, {100, 100}, {127, 127}, {224, 224}, {150, 100}};
  for (const auto& [h, w] : sizes) {
    for (const int64_t batch : {1, 3}) {
      const auto x = torch::randn({batch, 3, h, w});  // (N, 3, H, W)
      const auto want = model->features->forward(x);  // (N, 256, h', w')
      for (const bool channels_last : {false, true}) {
        const auto input = channels_last ? x.contiguous(torch::MemoryFormat::ChannelsLast) : x;
        const auto got_direct = direct.forward(input);
        const auto got_wino = winograd.forward(input);
        ASSERT_EQ(got_direct.sizes(), want.sizes()) << h << "x" << w;
        ASSERT_EQ(got_wino.sizes(), want.sizes()) << h << "x" << w;
        EXPECT_TRUE(got_direct.is_contiguous());
        std::printf("  %3lldx%-3lld batch %lld %-13s relative error: direct %.2g, winograd %.2g\n",
                    static_cast<long long>(h), static_cast<long long>(w),
                    static_cast<long long>(batch), channels_last ? "channels-last" : "NCHW",
                    relative_error(got_direct, want), relative_error(got_wino, want));
        // Direct kernels: the same products summed in another order (1e-5 relative).
        EXPECT_LE(relative_error(got_direct, want), 1e-5f)
            << h << "x" << w << " batch " << batch << (channels_last ? " channels-last" : " NCHW");
        // Winograd: also the transforms' rounding (2e-5 relative; measured up to 3e-6).
        EXPECT_LE(relative_error(got_wino, want), 2e-5f)
            << h << "x" << w << " batch " << batch << (channels_last ? " channels-last" : " NCHW");
      }
    }
  }
}

TEST(OneDnnPlan, WinogradRunsTheThreeByThreeConvolutionsOnAvx512) {
  SKIP_WITHOUT_PLAN();
  EXPECT_EQ(OneDnnFeatures::winograd_available(), cpu_has_avx512_core());
  if (!cpu_has_avx512_core()) GTEST_SKIP() << "no AVX-512 on this CPU: oneDNN has no Winograd kernel";
  AlexNet model;
  model->eval();
  torch::NoGradGuard no_grad;
  OneDnnFeatures plan(model->features, ConvAlgorithm::kWinograd);
  plan.forward(torch::randn({2, 3, 224, 224}));
  EXPECT_EQ(plan.winograd_layers(), 3);  // features.6, .8, .10
  int wino_lines = 0;
  for (const auto& line : plan.describe()) wino_lines += line.find("wino") != std::string::npos;
  EXPECT_EQ(wino_lines, 3);
  OneDnnFeatures direct(model->features, ConvAlgorithm::kDirect);
  direct.forward(torch::randn({2, 3, 224, 224}));
  EXPECT_EQ(direct.winograd_layers(), 0);
}

TEST(OneDnnPlan, ModelUsesThePlanOnlyForInferenceWithoutGradients) {
  SKIP_WITHOUT_PLAN();
  torch::manual_seed(0);
  AlexNet model(AlexNetOptions().num_classes(10).dropout(0.0));
  init_vgg_style(*model);
  model->eval();
  const auto x = torch::randn({2, 3, 96, 96});
  torch::Tensor want;
  {
    torch::NoGradGuard no_grad;
    want = model->forward(x);
  }
  // describe() lists the plan's layers once it has run, and is empty before.
  const auto plan_ran = [&] { return !model->inference_plan()->describe().empty(); };
  const auto attach = [&] {
    model->set_inference_plan(std::make_shared<OneDnnFeatures>(model->features, ConvAlgorithm::kWinograd));
  };
  attach();
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(plan_ran());
    EXPECT_LE(relative_error(model->forward(x), want), 2e-5f);
    EXPECT_TRUE(plan_ran());
  }
  attach();
  {
    c10::InferenceMode inference;
    EXPECT_LE(relative_error(model->forward(x), want), 2e-5f);
    EXPECT_TRUE(plan_ran());
  }
  // With gradients on, the Sequential runs (the plan has no backward): the
  // logits carry a graph and equal the layer-by-layer ones exactly.
  attach();
  const auto with_grad = model->forward(x);
  EXPECT_TRUE(with_grad.requires_grad());
  EXPECT_TRUE(torch::equal(with_grad.detach(), want));
  model->train();  // dropout 0: training mode computes the same function
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(model->forward(x), want));
  }
  EXPECT_FALSE(plan_ran());
}

TEST(OneDnnPlan, FollowsWeightsChangedAfterItRan) {
  SKIP_WITHOUT_PLAN();
  torch::manual_seed(2);
  AlexNet model;
  init_vgg_style(*model);
  model->eval();
  torch::NoGradGuard no_grad;
  OneDnnFeatures plan(model->features, ConvAlgorithm::kWinograd);
  const auto x = torch::randn({2, 3, 96, 96});
  const auto before = plan.forward(x).clone();
  auto& conv3 = *model->features[6]->as<torch::nn::Conv2d>();
  // In place (an optimizer step, load_state_dict): the version counter moves.
  conv3.weight.mul_(-1.5);
  conv3.bias.add_(0.25);
  const auto want = model->features->forward(x);
  const auto after = plan.forward(x);
  EXPECT_FALSE(torch::allclose(before, want));  // the change matters
  EXPECT_LE(relative_error(after, want), 2e-5f);
  // Replaced storage (set_data, as to_channels_last does): the pointer moves.
  conv3.weight.set_data(torch::randn_like(conv3.weight) * 0.05);
  EXPECT_LE(relative_error(plan.forward(x), model->features->forward(x)), 2e-5f);
  // Moved off float32: a clear error, not a bad read.
  conv3.weight.set_data(conv3.weight.to(torch::kDouble));
  EXPECT_THROW(plan.forward(x), c10::Error);
}

TEST(OneDnnPlan, FollowsAnSgdStep) {
  SKIP_WITHOUT_PLAN();
  torch::manual_seed(3);
  AlexNet model(AlexNetOptions().num_classes(10));
  init_vgg_style(*model);
  model->eval();
  model->set_inference_plan(std::make_shared<OneDnnFeatures>(model->features, ConvAlgorithm::kWinograd));
  const auto x = torch::randn({2, 3, 96, 96});
  torch::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = model->inference_plan()->forward(x).clone();  // packs the weights
  }
  // The project's fused SGD writes the weights through raw pointers.
  engine::Sgd sgd(model->parameters(), engine::SgdOptions().momentum(0.9));
  model->train();
  model->forward(x).pow(2).sum().backward();
  sgd.step(/*lr=*/0.5);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto want = model->features->forward(x);
  EXPECT_FALSE(torch::allclose(before, want));  // the step changed the features
  EXPECT_LE(relative_error(model->inference_plan()->forward(x), want), 2e-5f);
}

TEST(OneDnnPlan, ShapesAreCachedAndBuffersShared) {
  SKIP_WITHOUT_PLAN();
  torch::manual_seed(1);
  AlexNet model;
  model->eval();
  torch::NoGradGuard no_grad;
  OneDnnFeatures plan(model->features, ConvAlgorithm::kWinograd);
  // Small, large (the shared buffers grow: every memory must be rebound to the
  // new ones), small again, large again: each result is its own input's.
  const auto small = torch::randn({1, 3, 96, 96});
  const auto large = torch::randn({4, 3, 160, 160});
  const auto want_small = model->features->forward(small);
  const auto want_large = model->features->forward(large);
  const auto first = plan.forward(small).clone();
  EXPECT_LE(relative_error(first, want_small), 2e-5f);
  EXPECT_LE(relative_error(plan.forward(large), want_large), 2e-5f);
  const auto again = plan.forward(small);
  EXPECT_TRUE(torch::equal(first, again));
  EXPECT_LE(relative_error(plan.forward(large), want_large), 2e-5f);
}

TEST(OneDnnPlan, RefusesWhatItCannotRun) {
  SKIP_WITHOUT_PLAN();
  AlexNet paper(AlexNetOptions().arch(Arch::kPaper2012));
  try {
    OneDnnFeatures plan(paper->features, ConvAlgorithm::kWinograd);
    FAIL() << "the 2012 network's LocalResponseNorm was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("LocalResponseNorm"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("features.2"), std::string::npos) << e.what();
  }
  AlexNet model;
  OneDnnFeatures plan(model->features, ConvAlgorithm::kDirect);
  EXPECT_THROW(plan.forward(torch::randn({1, 3, 224, 224}, torch::kDouble)), c10::Error);
  EXPECT_THROW(plan.forward(torch::randn({3, 224, 224})), c10::Error);
  EXPECT_THROW(plan.forward(torch::randn({1, 4, 224, 224})), c10::Error);  // conv1 takes 3 channels
  // 62 px: the last max-pool's 3x3 window no longer fits its 2x2 input (63 is the minimum).
  for (const int64_t side : {62, 30}) {
    try {
      plan.forward(torch::randn({1, 3, side, side}));
      FAIL() << side << " px was accepted";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what_without_backtrace()).find("too small"), std::string::npos)
          << e.what_without_backtrace();
    }
  }
}

}  // namespace
}  // namespace alexnet
