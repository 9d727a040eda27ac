// app/runtime: flag parsing, per-device resolution, the autocast guard and the
// inference conversion; app/engine's dynamic loss scaler.
#include "app/engine/loss_scaler.h"
#include "app/runtime/compute.h"
#include "app/runtime/machine.h"
#include "app/runtime/precision.h"
#include "model/torch_compat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace alexnet::runtime {
namespace {

using engine::LossScaler;
using engine::LossScalerOptions;

TEST(Precision, ParsesItsNames) {
  for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kFp16, Precision::kAuto})
    EXPECT_EQ(parse_precision(precision_name(p)), p);
  EXPECT_FALSE(parse_precision("fp8"));
  EXPECT_FALSE(parse_precision("FP32"));
  EXPECT_EQ(parse_channels_last("auto"), ChannelsLast::kAuto);
  EXPECT_EQ(parse_channels_last("on"), ChannelsLast::kOn);
  EXPECT_EQ(parse_channels_last("false"), ChannelsLast::kOff);
  EXPECT_FALSE(parse_channels_last("maybe"));
}

TEST(Precision, ResolvesOnTheCpu) {
  const torch::Device cpu(torch::kCPU);
  EXPECT_EQ(resolve_precision(Precision::kFp32, cpu, Workload::kInference), Precision::kFp32);
  // auto: bf16 only where AMX makes it faster.
  const Precision automatic = resolve_precision(Precision::kAuto, cpu, Workload::kTraining);
  EXPECT_EQ(automatic, cpu_bf16_support().amx_bf16 ? Precision::kBf16 : Precision::kFp32);
  // bf16 asked for: kept with bf16 instructions, fp32 (with a warning) without.
  EXPECT_EQ(resolve_precision(Precision::kBf16, cpu, Workload::kInference),
            cpu_bf16_support().any() ? Precision::kBf16 : Precision::kFp32);
  EXPECT_THROW(resolve_precision(Precision::kFp16, cpu, Workload::kInference), c10::Error);
  EXPECT_TRUE(resolve_channels_last(ChannelsLast::kAuto, cpu, Precision::kFp32));
  EXPECT_FALSE(resolve_channels_last(ChannelsLast::kOff, cpu, Precision::kFp32));
}

TEST(AutocastGuard, NestsAndRestores) {
  const torch::Device cpu(torch::kCPU);
  ASSERT_FALSE(alexnet::compat::autocast_enabled(/*cuda=*/false));
  {
    const AutocastGuard outer(cpu, Precision::kBf16);
    EXPECT_TRUE(alexnet::compat::autocast_enabled(/*cuda=*/false));
    {
      const AutocastGuard fp32(cpu, Precision::kFp32);  // fp32: no change
      EXPECT_TRUE(alexnet::compat::autocast_enabled(/*cuda=*/false));
      const AutocastGuard inner(cpu, Precision::kBf16);
      const auto a = torch::randn({4, 8}), b = torch::randn({8, 3});  // (4, 8), (8, 3)
      EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kBFloat16);
    }
    EXPECT_TRUE(alexnet::compat::autocast_enabled(/*cuda=*/false));
  }
  EXPECT_FALSE(alexnet::compat::autocast_enabled(/*cuda=*/false));
  EXPECT_EQ(torch::mm(torch::randn({2, 2}), torch::randn({2, 2})).scalar_type(), torch::kFloat32);
}

TEST(Inference, ConvertsWeightsAndInput) {
  AlexNet model(AlexNetOptions().num_classes(10));
  ComputeConfig cfg = inference_config(torch::kCPU, Precision::kBf16, /*channels_last=*/true);
  EXPECT_TRUE(cfg.low_precision_weights);
  EXPECT_EQ(cfg.describe(), "bf16 weights, channels-last");
  prepare_for_inference(model, cfg);
  EXPECT_FALSE(model->is_training());
  for (const auto& p : model->parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
    if (p.dim() == 4) EXPECT_TRUE(p.is_contiguous(torch::MemoryFormat::ChannelsLast));
  }
  const auto x = prepare_input(torch::randn({2, 3, 64, 64}), cfg);  // (2, 3, 64, 64)
  EXPECT_EQ(x.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(x.is_contiguous(torch::MemoryFormat::ChannelsLast));
  c10::InferenceMode inference;
  EXPECT_EQ(model->forward(x).sizes(), (std::vector<int64_t>{2, 10}));
}

TEST(LossScaler, SkipsOverflowsBacksOffAndGrows) {
  auto w = torch::ones({3}, torch::requires_grad());
  const std::vector<torch::Tensor> params = {w};
  LossScaler scaler(LossScalerOptions().init_scale(8).growth_interval(2));
  EXPECT_EQ(scaler.current_scale(), 8);

  // Finite: the gradient comes back unscaled (d(8 * sum(2w))/dw / 8 = 2) and the step runs.
  scaler.scale((2 * w).sum()).backward();
  int steps = 0;
  EXPECT_TRUE(scaler.step(params, [&] { ++steps; }));
  EXPECT_TRUE(torch::allclose(w.grad(), torch::full({3}, 2.0f)));
  EXPECT_EQ(steps, 1);
  EXPECT_EQ(scaler.current_scale(), 8);  // one finite step of the 2 before growth

  // An inf gradient: no step, scale halved, counted.
  w.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 0.0f});
  EXPECT_FALSE(scaler.step(params, [&] { ++steps; }));
  EXPECT_EQ(steps, 1);
  EXPECT_EQ(scaler.current_scale(), 4);
  EXPECT_EQ(scaler.skipped_steps(), 1);

  // growth_interval finite steps in a row double it.
  for (int i = 0; i < 2; ++i) {
    w.mutable_grad() = torch::ones({3});
    EXPECT_TRUE(scaler.step(params, [&] { ++steps; }));
  }
  EXPECT_EQ(scaler.current_scale(), 8);
  EXPECT_EQ(steps, 3);

  // NaN is an overflow too.
  w.mutable_grad() = torch::full({3}, std::nanf(""));
  EXPECT_FALSE(scaler.step(params, [] {}));

  // Disabled (fp32/bf16): scale 1, always steps, gradients untouched.
  LossScaler off(LossScalerOptions().enabled(false));
  w.mutable_grad() = torch::full({3}, 5.0f);
  EXPECT_TRUE(off.step(params, [] {}));
  EXPECT_TRUE(torch::equal(w.grad(), torch::full({3}, 5.0f)));
  EXPECT_EQ(off.scale(torch::tensor(3.0f)).item<float>(), 3.0f);
}

}  // namespace
}  // namespace alexnet::runtime
