// The oneDNN plan (model/onednn_plan.h) against the features Sequential it
// replaces, on the same weights and inputs: every supported input size, both
// layouts, each algorithm this CPU has (the Winograd tests skip, saying why, where
// oneDNN has no Winograd kernel); when the model uses it and when it must not.
// (tests/model_reference_test.cpp compares the plan's logits with torchvision's.)
#include "model/alexnet.h"
#include "model/onednn_linear.h"
#include "model/onednn_plan.h"
#include "app/engine/sgd.h"
#include "tests/fixture.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <regex>
#include <set>
#include <string>

namespace alexnet {
namespace {

using testing::cpu_description;
using testing::cpu_has_avx512_core;

#define SKIP_WITHOUT_PLAN() \
  if (!OneDnnFeatures::compiled()) GTEST_SKIP() << "built without oneDNN's headers: no plan"

// Without a Winograd kernel, ConvAlgorithm::kWinograd runs direct kernels: such a test would
// check the direct path under Winograd's name.
#define SKIP_WITHOUT_WINOGRAD()                                                               \
  if (!OneDnnFeatures::winograd_available())                                                  \
  GTEST_SKIP() << "oneDNN has no Winograd convolution on this CPU, " << cpu_description() \
               << "; the direct tests cover the plan here"

#define SKIP_WITHOUT_BF16_PLAN()            \
  SKIP_WITHOUT_PLAN();                      \
  if (!OneDnnFeatures::bf16_available())    \
  GTEST_SKIP() << "oneDNN has no bf16 kernels of its own on this CPU, " << cpu_description()

// A seeded model in bf16, initialised for activations of order 1 through all five layers.
AlexNet bf16_model() {
  torch::manual_seed(0);
  AlexNet model;
  init_vgg_style(*model);
  model->eval();
  model->to(torch::kBFloat16);
  return model;
}

const char* algorithm_name(ConvAlgorithm algorithm) {
  return algorithm == ConvAlgorithm::kWinograd ? "winograd" : "direct";
}

// For the tests that need a plan of either kind: Winograd where oneDNN has it (AVX-512),
// else direct.
ConvAlgorithm available_algorithm() {
  return OneDnnFeatures::winograd_available() ? ConvAlgorithm::kWinograd : ConvAlgorithm::kDirect;
}

// Bounds on relative_error: direct kernels sum the same products in another order (1e-5);
// Winograd's transforms also round differently (2e-5; measured up to 5e-6 where features.0 runs as
// Winograd too, AVX2).
float tolerance(ConvAlgorithm algorithm) { return algorithm == ConvAlgorithm::kWinograd ? 2e-5f : 1e-5f; }

// Convolutions the plan's last forward() ran as Winograd: conv2-5 (features.3 as the plan's own
// F(2x2, 5x5), features.6, .8, .10 as oneDNN's or the plan's own F(4x4, 3x3)), and where oneDNN
// has no Winograd, features.0 too (its own F(4x4, 3x3) on 4x4 tiles of the image); or none.
int winograd_layers_of(ConvAlgorithm algorithm) {
  if (algorithm != ConvAlgorithm::kWinograd) return 0;
  return OneDnnFeatures::onednn_winograd_available() ? 4 : 5;
}

// Says which kernels the plan's last forward() ran, and checks that they are the algorithm's.
void expect_ran(const OneDnnFeatures& plan, ConvAlgorithm algorithm) {
  std::printf("  plan %s: %d convolution(s) as Winograd\n", algorithm_name(algorithm), plan.winograd_layers());
  EXPECT_EQ(plan.winograd_layers(), winograd_layers_of(algorithm)) << algorithm_name(algorithm);
}

// max |a - b| / max |b|: the plan's error relative to the activations' scale.
float relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<float>();
}

void expect_features_match_at_every_size_and_layout(ConvAlgorithm algorithm) {
  torch::manual_seed(0);
  AlexNet model;
  init_vgg_style(*model);  // activations of order 1 through all five layers
  model->eval();
  torch::NoGradGuard no_grad;
  OneDnnFeatures plan(model->features, algorithm);
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
        const auto got = plan.forward(input);
        const std::string where = std::to_string(h) + "x" + std::to_string(w) + " batch " +
                                  std::to_string(batch) + (channels_last ? " channels-last" : " NCHW");
        ASSERT_EQ(got.sizes(), want.sizes()) << where;
        EXPECT_TRUE(got.is_contiguous()) << where;
        EXPECT_EQ(plan.winograd_layers(), winograd_layers_of(algorithm)) << where;
        const float error = relative_error(got, want);
        std::printf("  %-29s %s: relative error %.2g, %d convolution(s) as Winograd\n", where.c_str(),
                    algorithm_name(algorithm), error, plan.winograd_layers());
        EXPECT_LE(error, tolerance(algorithm)) << where;
      }
    }
  }
}

TEST(OneDnnPlan, DirectFeaturesMatchTheSequentialAtEverySizeAndLayout) {
  SKIP_WITHOUT_PLAN();
  expect_features_match_at_every_size_and_layout(ConvAlgorithm::kDirect);
}

TEST(OneDnnPlan, WinogradFeaturesMatchTheSequentialAtEverySizeAndLayout) {
  SKIP_WITHOUT_PLAN();
  SKIP_WITHOUT_WINOGRAD();
  expect_features_match_at_every_size_and_layout(ConvAlgorithm::kWinograd);
}

TEST(OneDnnPlan, WinogradRunsConv2To5WhereTheCpuHasIt) {
  SKIP_WITHOUT_PLAN();
  // oneDNN's answer against /proc/cpuinfo and its cap, read by the test (tests/fixture.h); the
  // plan's own float32 Winograd needs AVX2 and FMA.
  EXPECT_EQ(OneDnnFeatures::onednn_winograd_available(), cpu_has_avx512_core()) << cpu_description();
  EXPECT_EQ(OneDnnFeatures::winograd_available(), cpu_has_avx512_core() || testing::cpu_has_avx2_fma())
      << cpu_description();
  SKIP_WITHOUT_WINOGRAD();
  AlexNet model;
  model->eval();
  torch::NoGradGuard no_grad;
  // conv2 always the plan's own; conv1 and conv3-5 too where oneDNN has no Winograd, and conv3-5
  // where it has one once the batch fills a chunk of 64 tiles (batch 8: 128 of 4x4 at 13x13).
  const bool onednn = OneDnnFeatures::onednn_winograd_available();
  for (const auto& [batch, own] : {std::pair{2, onednn ? 1 : 5}, std::pair{8, onednn ? 4 : 5}}) {
    OneDnnFeatures plan(model->features, ConvAlgorithm::kWinograd);
    plan.forward(torch::randn({batch, 3, 224, 224}));
    EXPECT_EQ(plan.winograd_layers(), winograd_layers_of(ConvAlgorithm::kWinograd));  // features.3, .6, .8, .10 (.0)
    int wino_lines = 0, own_lines = 0;
    for (const auto& line : plan.describe()) {
      std::printf("  batch %d: %s\n", batch, line.c_str());
      wino_lines += line.find("wino") != std::string::npos;
      own_lines += line.find("winograd F(") != std::string::npos;
    }
    EXPECT_EQ(wino_lines, winograd_layers_of(ConvAlgorithm::kWinograd)) << "batch " << batch;
    EXPECT_EQ(own_lines, own) << "batch " << batch;
  }
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
  const ConvAlgorithm algorithm = available_algorithm();
  const auto attach = [&] {
    model->set_inference_plan(std::make_shared<OneDnnFeatures>(model->features, algorithm));
  };
  attach();
  {
    torch::NoGradGuard no_grad;
    EXPECT_FALSE(plan_ran());
    EXPECT_LE(relative_error(model->forward(x), want), tolerance(algorithm));
    EXPECT_TRUE(plan_ran());
    expect_ran(*model->inference_plan(), algorithm);
  }
  attach();
  {
    c10::InferenceMode inference;
    EXPECT_LE(relative_error(model->forward(x), want), tolerance(algorithm));
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
  const ConvAlgorithm algorithm = available_algorithm();
  OneDnnFeatures plan(model->features, algorithm);
  const auto x = torch::randn({2, 3, 96, 96});
  const auto before = plan.forward(x).clone();
  expect_ran(plan, algorithm);
  auto& conv3 = *model->features[6]->as<torch::nn::Conv2d>();
  // In place (an optimizer step, load_state_dict): the version counter moves.
  conv3.weight.mul_(-1.5);
  conv3.bias.add_(0.25);
  const auto want = model->features->forward(x);
  const auto after = plan.forward(x);
  EXPECT_FALSE(torch::allclose(before, want));  // the change matters
  EXPECT_LE(relative_error(after, want), tolerance(algorithm));
  // Replaced storage (set_data, as to_channels_last does): the pointer moves.
  conv3.weight.set_data(torch::randn_like(conv3.weight) * 0.05);
  EXPECT_LE(relative_error(plan.forward(x), model->features->forward(x)), tolerance(algorithm));
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
  const ConvAlgorithm algorithm = available_algorithm();
  model->set_inference_plan(std::make_shared<OneDnnFeatures>(model->features, algorithm));
  const auto x = torch::randn({2, 3, 96, 96});
  torch::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = model->inference_plan()->forward(x).clone();  // packs the weights
    expect_ran(*model->inference_plan(), algorithm);
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
  EXPECT_LE(relative_error(model->inference_plan()->forward(x), want), tolerance(algorithm));
}

TEST(OneDnnPlan, ShapesAreCachedAndBuffersShared) {
  SKIP_WITHOUT_PLAN();
  torch::manual_seed(1);
  AlexNet model;
  model->eval();
  torch::NoGradGuard no_grad;
  const ConvAlgorithm algorithm = available_algorithm();
  OneDnnFeatures plan(model->features, algorithm);
  // Small, large (the shared buffers grow: every memory must be rebound to the
  // new ones), small again, large again: each result is its own input's.
  const auto small = torch::randn({1, 3, 96, 96});
  const auto large = torch::randn({4, 3, 160, 160});
  const auto want_small = model->features->forward(small);
  const auto want_large = model->features->forward(large);
  const auto first = plan.forward(small).clone();
  expect_ran(plan, algorithm);
  EXPECT_LE(relative_error(first, want_small), tolerance(algorithm));
  EXPECT_LE(relative_error(plan.forward(large), want_large), tolerance(algorithm));
  expect_ran(plan, algorithm);
  const auto again = plan.forward(small);
  EXPECT_TRUE(torch::equal(first, again));  // the same kernels on the same input: bit for bit
  EXPECT_LE(relative_error(plan.forward(large), want_large), tolerance(algorithm));
}

// bf16: the bf16 engine's back-end on LibTorch 1.x (model/fused.h). Against LibTorch's own bf16
// layers on the same bf16 weights: both round each layer's output to bf16 but sum in other
// orders, so the bound is bf16's (2e-2 of the activations' scale). Measured 0 with Debian's 1.13: its
// bf16 convolutions are the same oneDNN kernels.
TEST(OneDnnPlan, Bf16FeaturesMatchLibTorchBf16LayersChannelsLastOut) {
  SKIP_WITHOUT_BF16_PLAN();
  AlexNet model = bf16_model();
  torch::NoGradGuard no_grad;
  OneDnnFeatures plan(model->features, ConvAlgorithm::kDirect, torch::kBFloat16, /*channels_last_output=*/true);
  for (const int64_t side : {64, 100, 224}) {
    for (const int64_t batch : {1, 5}) {
      const auto x = torch::randn({batch, 3, side, side}).to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
      const auto want = model->features->forward(x).to(torch::kFloat);
      const auto got = plan.forward(x);
      const std::string where = std::to_string(side) + " px batch " + std::to_string(batch);
      ASSERT_EQ(got.scalar_type(), torch::kBFloat16) << where;
      ASSERT_EQ(got.sizes(), want.sizes()) << where;
      EXPECT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast)) << where;
      EXPECT_EQ(plan.winograd_layers(), 0) << where << ": asked for direct kernels";
      const float error = relative_error(got.to(torch::kFloat), want);
      std::printf("  bf16 %-16s relative error %.2g\n", where.c_str(), error);
      EXPECT_LE(error, 2e-2f) << where;
    }
  }
  EXPECT_THROW(plan.forward(torch::randn({1, 3, 224, 224})), c10::Error);  // float32 into a bf16 plan
  AlexNet fp32;
  EXPECT_THROW(OneDnnFeatures(fp32->features, ConvAlgorithm::kDirect, torch::kBFloat16), std::invalid_argument);
  EXPECT_THROW(OneDnnFeatures(fp32->features, ConvAlgorithm::kDirect, torch::kHalf), std::invalid_argument);
}

// float32 Winograd on one layer (+ ReLU), against the same convolution in float64: 5x5 kernels
// as the plan's own F(2x2, 5x5) on every CPU with Winograd, 3x3 ones as its own F(4x4, 3x3)
// where oneDNN has none (AVX2, or the AVX2 cap scripts/test.sh reruns this under), else as
// oneDNN's. Every padding below the kernel's side, maps of odd and even sides (tiles cut at the
// edge), 1x1 outputs, batches that leave a short last chunk; channels that are not multiples of
// 8 run direct. Bound: 1e-5 of the output's scale, as the plan's (measured below 1e-6).
TEST(OneDnnPlan, Float32WinogradMatchesFloat64OnOneLayer) {
  SKIP_WITHOUT_PLAN();
  SKIP_WITHOUT_WINOGRAD();
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  for (const int64_t kernel : {3, 5}) {
    const bool own = kernel == 5 || !OneDnnFeatures::onednn_winograd_available();
    for (int64_t pad = 0; pad < kernel; ++pad) {
      for (const int64_t in_channels : {24, 20}) {
        torch::nn::Sequential layer(
            torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, 40, kernel).padding(pad)), torch::nn::ReLU());
        OneDnnFeatures plan(layer, ConvAlgorithm::kWinograd);
        torch::nn::Sequential reference(std::dynamic_pointer_cast<torch::nn::SequentialImpl>(layer->clone()));
        reference->to(torch::kDouble);
        const std::vector<std::array<int64_t, 3>> shapes = {{1, 13, 13}, {3, 14, 14}, {2, 7, 10},
                                                            {1, kernel, kernel}, {5, 27, 27}, {9, 13, 13}};
        for (const auto& [batch, h, w] : shapes) {
          const auto x = torch::randn({batch, in_channels, h, w});
          const auto want = reference->forward(x.to(torch::kDouble));
          const auto got = plan.forward(x);
          const std::string where = std::to_string(kernel) + "x" + std::to_string(kernel) + " pad " +
                                    std::to_string(pad) + " " + std::to_string(batch) + "x" +
                                    std::to_string(in_channels) + "x" + std::to_string(h) + "x" + std::to_string(w);
          ASSERT_EQ(got.sizes(), want.sizes()) << where;
          if (in_channels % 8 != 0)
            EXPECT_EQ(plan.winograd_layers(), 0) << where << ": channels not in multiples of 8";
          else if (own)
            EXPECT_EQ(plan.winograd_layers(), 1) << where;
          const float error = relative_error(got.to(torch::kDouble), want);
          std::printf("  %-24s %s relative error %.2g\n", where.c_str(),
                      plan.winograd_layers() == 0 ? "direct  " : own ? "own     " : "oneDNN's", error);
          EXPECT_LE(error, 1e-5f) << where;
        }
      }
    }
  }
}

// bf16 Winograd F(2x2, 3x3) (model/winograd.h) on one 3x3 layer, against float32
// arithmetic on the same bf16 inputs and weights: every padding it takes, maps of odd
// and even sides (tiles cut at the edge), 1x1 outputs, batches that leave a short last
// chunk. The direct bf16 kernel on the same layer rounds only its output (2^-9 of a
// value); Winograd also rounds its transformed inputs and weights to bf16 (measured:
// 1.5-3x the direct error). Bound: 1e-2 of the output's scale.
TEST(OneDnnPlan, Bf16WinogradMatchesFloat32ArithmeticOnOneLayer) {
  SKIP_WITHOUT_BF16_PLAN();
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  for (const int64_t pad : {0, 1, 2}) {
    torch::nn::Sequential layer(torch::nn::Conv2d(torch::nn::Conv2dOptions(64, 48, /*kernel_size=*/3).padding(pad)),
                                torch::nn::ReLU());
    layer->to(torch::kBFloat16);
    OneDnnFeatures wino(layer, ConvAlgorithm::kWinograd, torch::kBFloat16, /*channels_last_output=*/true);
    OneDnnFeatures direct(layer, ConvAlgorithm::kDirect, torch::kBFloat16, /*channels_last_output=*/true);
    torch::nn::Sequential reference(std::dynamic_pointer_cast<torch::nn::SequentialImpl>(layer->clone()));
    reference->to(torch::kFloat);  // the bf16 weights, exactly
    const std::vector<std::array<int64_t, 3>> shapes = {{1, 13, 13}, {3, 14, 14}, {2, 7, 10}, {1, 3, 3}, {40, 13, 13}};
    for (const auto& [batch, h, w] : shapes) {
      if (h + 2 * pad < 3 || w + 2 * pad < 3) continue;
      const auto x = torch::randn({batch, 64, h, w}).to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
      const auto want = reference->forward(x.to(torch::kFloat));  // (N, 48, h', w')
      const auto got = wino.forward(x);
      const auto base = direct.forward(x);
      const std::string where = "pad " + std::to_string(pad) + " " + std::to_string(batch) + "x64x" +
                                std::to_string(h) + "x" + std::to_string(w);
      ASSERT_EQ(got.sizes(), want.sizes()) << where;
      EXPECT_EQ(wino.winograd_layers(), 1) << where;
      EXPECT_EQ(got.scalar_type(), torch::kBFloat16) << where;
      EXPECT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast)) << where;
      const float error = relative_error(got.to(torch::kFloat), want);
      const float direct_error = relative_error(base.to(torch::kFloat), want);
      std::printf("  %-22s Winograd relative error %.2g (direct bf16 %.2g)\n", where.c_str(), error, direct_error);
      EXPECT_LE(error, 1e-2f) << where;
      EXPECT_GE((got.to(torch::kFloat) >= 0).all().item<bool>(), true) << where << ": the ReLU";
    }
  }
}

// The bf16 features with Winograd conv3-5 against float32 arithmetic on the same bf16
// weights and input, beside the direct bf16 plan: five layers of bf16 rounding, so
// bf16's bound (2e-2 of the activations' scale); Winograd at most 3x the direct error
// plus 2e-3 (measured below 2x).
TEST(OneDnnPlan, Bf16WinogradFeaturesStayCloseToDirect) {
  SKIP_WITHOUT_BF16_PLAN();
  AlexNet model = bf16_model();
  torch::NoGradGuard no_grad;
  OneDnnFeatures wino(model->features, ConvAlgorithm::kWinograd, torch::kBFloat16, /*channels_last_output=*/true);
  OneDnnFeatures direct(model->features, ConvAlgorithm::kDirect, torch::kBFloat16, /*channels_last_output=*/true);
  torch::nn::Sequential reference(std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->features->clone()));
  reference->to(torch::kFloat);  // the bf16 weights, exactly
  for (const int64_t side : {64, 224}) {
    const auto x = torch::randn({2, 3, side, side}).to(torch::kBFloat16).contiguous(torch::MemoryFormat::ChannelsLast);
    const auto want = reference->forward(x.to(torch::kFloat));
    const auto got = wino.forward(x);
    EXPECT_EQ(wino.winograd_layers(), 3) << side;  // features.6, .8, .10
    const float error = relative_error(got.to(torch::kFloat), want);
    const float direct_error = relative_error(direct.forward(x).to(torch::kFloat), want);
    std::printf("  %ld px: Winograd relative error %.2g, direct bf16 %.2g\n", static_cast<long>(side), error,
                direct_error);
    EXPECT_LE(error, 2e-2f) << side;
    EXPECT_LE(error, 3 * direct_error + 2e-3f) << side;
  }
}

// The bf16 engine's classifier on LibTorch 1.x: a Linear (+ ReLU) against LibTorch's, at batch
// sizes whose primitives want different weight layouts (one pack made from another).
TEST(OneDnnLinear, MatchesLibTorchLinearAtEveryBatchSize) {
  SKIP_WITHOUT_PLAN();
  torch::manual_seed(0);
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    if (dtype == torch::kBFloat16 && !OneDnnFeatures::bf16_available()) continue;
    const auto weight = (torch::randn({300, 512}) / 20).to(dtype), bias = torch::randn({300}).to(dtype);
    for (const bool relu : {false, true}) {
      OneDnnLinear linear(weight, bias, relu);
      for (const int64_t batch : {1, 64, 2, 17, 1}) {
        const auto x = torch::randn({batch, 512}).to(dtype);
        auto want = torch::linear(x.to(torch::kFloat), weight.to(torch::kFloat), bias.to(torch::kFloat));
        if (relu) want = want.relu();
        const auto got = linear.forward(x);
        ASSERT_EQ(got.scalar_type(), dtype);
        const float error = relative_error(got.to(torch::kFloat), want);
        // float32: other summation orders (1e-5); bf16: the output's rounding (2^-8) and the products' sums.
        EXPECT_LE(error, dtype == torch::kFloat ? 1e-5f : 1e-2f) << c10::toString(dtype) << " batch " << batch;
        if (relu) EXPECT_GE(got.min().item<float>(), 0.0f);
      }
      EXPECT_THROW(linear.forward(torch::randn({2, 511}).to(dtype)), c10::Error);
    }
  }
}

TEST(OneDnnClassifier, MatchesTheClassifierAtSmallBatchesAndFollowsItsWeights) {
  SKIP_WITHOUT_PLAN();
  torch::manual_seed(0);
  AlexNet model(AlexNetOptions().num_classes(10));
  model->eval();
  torch::NoGradGuard no_grad;
  auto& fc6 = *model->classifier[1]->as<torch::nn::Linear>();
  OneDnnClassifier classifier(model->classifier);
  const auto check = [&](const std::string& where) {
    for (int64_t batch = 1; batch <= OneDnnClassifier::kMaxBatch; ++batch) {
      const auto x = torch::randn({batch, 9216}).relu();
      const auto got = classifier.forward(x);
      ASSERT_TRUE(got.defined()) << where << ": batch " << batch << " was left to LibTorch";
      // Another summation order than LibTorch's Linear (1e-5 of the logits' scale).
      EXPECT_LE(relative_error(got, model->classifier->forward(x)), 1e-5f) << where << ", batch " << batch;
    }
  };
  check("as built");
  // The same weights through the model, with the plan's classifier attached.
  model->set_inference_classifier(std::make_shared<OneDnnClassifier>(model->classifier));
  const auto image = torch::randn({2, 3, 100, 100});
  auto want = model->classifier->forward(model->pool(model->features->forward(image)));
  EXPECT_LE(relative_error(model->forward(image), want), 1e-5f);
  // Weights changed in place and replaced are read at the next call: nothing was copied.
  fc6.weight.mul_(-2);
  check("fc6 changed in place");
  fc6.weight.set_data(torch::randn_like(fc6.weight) / 100);
  model->classifier[6]->as<torch::nn::Linear>()->bias.set_data(torch::randn({10}));
  check("fc6's weight and fc8's bias replaced");
  EXPECT_THROW(classifier.forward(torch::randn({1, 9215})), c10::Error);
  // Empty and larger batches, other dtypes and weights it cannot read in place are left to LibTorch.
  EXPECT_FALSE(classifier.forward(torch::randn({OneDnnClassifier::kMaxBatch + 1, 9216})).defined());
  EXPECT_FALSE(classifier.forward(torch::randn({0, 9216})).defined());
  EXPECT_FALSE(classifier.forward(torch::randn({1, 9216}, torch::kDouble)).defined());
  fc6.weight.set_data(fc6.weight.data().t().contiguous().t());
  EXPECT_FALSE(classifier.forward(torch::randn({1, 9216})).defined());
  want = model->classifier->forward(model->pool(model->features->forward(image)));
  EXPECT_LE(relative_error(model->forward(image), want), 1e-5f) << "falls back with transposed weights";
  // Layers it cannot run are refused by name.
  torch::nn::Sequential other(torch::nn::Linear(8, 4), torch::nn::BatchNorm1d(4));
  try {
    OneDnnClassifier refused(other);
    FAIL() << "BatchNorm1d was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("classifier.1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(OneDnnClassifier(torch::nn::Sequential(torch::nn::Linear(torch::nn::LinearOptions(8, 4).bias(false)))),
               std::invalid_argument);
}

// The OpenMP runtimes this process has mapped: libgomp.so.1, libgomp-<hash>.so.1, libiomp5.so, ...
std::set<std::string> openmp_runtimes_mapped() {
  std::set<std::string> found;
  std::ifstream maps("/proc/self/maps");
  const std::regex runtime(R"(/lib(g|i|)omp[^/]*\.so[^/]*$)");
  for (std::string line; std::getline(maps, line);) {
    const auto path = line.find('/');
    if (path != std::string::npos && std::regex_search(line, runtime)) found.insert(line.substr(path));
  }
  return found;
}

// A pip LibTorch carries its own oneDNN inside libtorch_cpu; the plan runs the system's beside
// it (model/CMakeLists.txt). Both must run on one OpenMP runtime, else each starts its own team
// of threads and the two compete for the cores.
TEST(OneDnnPlan, SharesLibTorchsOpenMpRuntime) {
  SKIP_WITHOUT_PLAN();
  AlexNet model;
  model->eval();
  torch::NoGradGuard no_grad;
  OneDnnFeatures plan(model->features, available_algorithm());
  plan.forward(torch::randn({2, 3, 64, 64}));
  torch::matmul(torch::randn({256, 256}), torch::randn({256, 256}));  // LibTorch's own threads
  const auto runtimes = openmp_runtimes_mapped();
  for (const auto& path : runtimes) std::printf("  OpenMP runtime mapped: %s\n", path.c_str());
  EXPECT_LE(runtimes.size(), 1u) << "the plan's oneDNN and LibTorch run on different OpenMP runtimes";
}

TEST(OneDnnPlan, RefusesWhatItCannotRun) {
  SKIP_WITHOUT_PLAN();
  // The layers are checked before any kernel is chosen: refused with either algorithm, on any CPU.
  AlexNet paper(AlexNetOptions().arch(Arch::kPaper2012));
  for (const auto algorithm : {ConvAlgorithm::kDirect, ConvAlgorithm::kWinograd}) {
    try {
      OneDnnFeatures plan(paper->features, algorithm);
      FAIL() << algorithm_name(algorithm) << ": the 2012 network's LocalResponseNorm was accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("LocalResponseNorm"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("features.2"), std::string::npos) << e.what();
    }
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
