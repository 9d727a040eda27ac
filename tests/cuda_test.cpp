// The CUDA paths, on a GPU: device selection, fp32 logits against the CPU's, autocast to
// bf16/fp16, dynamic loss scaling, the deterministic pooling, the generator state a checkpoint
// keeps, and page-locked batches from the loader. Every test reports skipped, with the reason,
// where no GPU is visible (CI builds them against a CUDA LibTorch so that they compile and
// link on every change; scripts/gpu_check.sh runs them where a GPU is).
#include "app/engine/loss_scaler.h"
#include "app/runtime/precision.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "model/alexnet.h"

#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>
#include <mutex>

namespace alexnet {
namespace {

#define SKIP_WITHOUT_CUDA()                                                                     \
  if (!torch::cuda::is_available())                                                             \
  GTEST_SKIP() << "no CUDA device visible ("                                                   \
               << (at::hasCUDA() ? "this LibTorch has CUDA"                                    \
                                 : "a CPU-only LibTorch, or no CUDA driver on this machine")   \
               << ")"

const torch::Device kCuda(torch::kCUDA, 0);

// A seeded AlexNet in eval mode and a seeded batch: (8, 3, 224, 224).
std::pair<AlexNet, torch::Tensor> seeded_model_and_batch() {
  torch::manual_seed(0);
  AlexNet model(AlexNetOptions().num_classes(10));
  model->eval();
  return {model, torch::randn({8, 3, 224, 224})};
}

TEST(Cuda, DeviceCountAndIndex) {
  SKIP_WITHOUT_CUDA();
  ASSERT_GE(torch::cuda::device_count(), 1u);
  const auto x = torch::ones({4}, torch::TensorOptions().device(kCuda));
  EXPECT_TRUE(x.is_cuda());
  EXPECT_EQ(x.device().index(), 0);
  EXPECT_EQ(x.sum().item<float>(), 4.0f);  // exact
}

// fp32 without TF32 (configure_cuda_math): cuDNN's kernels differ from the CPU's in
// summation order only. Bound 1e-3 on logits of magnitude ~0.05, as scripts/gpu_check.sh.
TEST(Cuda, Fp32LogitsMatchTheCpu) {
  SKIP_WITHOUT_CUDA();
  auto [model, x] = seeded_model_and_batch();
  torch::NoGradGuard no_grad;
  const auto cpu = model->forward(x);
  runtime::configure_cuda_math(kCuda, runtime::Precision::kFp32);
  model->to(kCuda);
  const auto gpu = model->forward(x.to(kCuda)).cpu();
  EXPECT_LE((gpu - cpu).abs().max().item<double>(), 1e-3);
}

// Autocast on CUDA: convolutions and linear layers compute in the low precision inside the
// guard, fp32 again outside it; logits stay within 3% (bf16) / 1% (fp16) of the largest.
TEST(Cuda, AutocastGuardComputesInLowPrecision) {
  SKIP_WITHOUT_CUDA();
  auto [model, x] = seeded_model_and_batch();
  torch::NoGradGuard no_grad;
  model->to(kCuda);
  const auto xg = x.to(kCuda);
  const auto reference = model->forward(xg);
  const double scale = reference.abs().max().item<double>();
  for (const auto& [precision, dtype, bound] :
       {std::tuple{runtime::Precision::kBf16, torch::kBFloat16, 0.03},
        std::tuple{runtime::Precision::kFp16, torch::kFloat16, 0.01}}) {
    torch::Tensor low;
    {
      const runtime::AutocastGuard autocast(kCuda, precision);
      low = model->forward(xg);
    }
    EXPECT_EQ(low.scalar_type(), dtype) << runtime::precision_name(precision);
    EXPECT_LE((low.to(torch::kFloat32) - reference).abs().max().item<double>(), bound * scale)
        << runtime::precision_name(precision);
    EXPECT_EQ(model->forward(xg).scalar_type(), torch::kFloat32) << "autocast left on";
  }
}

// GradScaler's rules on CUDA gradients: unscaled exactly (the scale is a power of two),
// a step with an inf gradient skipped and the scale halved.
TEST(Cuda, LossScalerUnscalesAndSkipsOverflow) {
  SKIP_WITHOUT_CUDA();
  auto p = torch::zeros({3}, torch::TensorOptions().device(kCuda).requires_grad(true));
  engine::LossScaler scaler(engine::LossScalerOptions().init_scale(1024.0));
  p.mutable_grad() = torch::tensor({1024.0f, -2048.0f, 512.0f}).to(kCuda);
  bool ran = false;
  EXPECT_TRUE(scaler.step({p}, [&] { ran = true; }));
  EXPECT_TRUE(ran);
  EXPECT_TRUE(torch::equal(p.grad().cpu(), torch::tensor({1.0f, -2.0f, 0.5f})));
  p.mutable_grad() = torch::tensor({1.0f, INFINITY, 0.0f}).to(kCuda);
  ran = false;
  EXPECT_FALSE(scaler.step({p}, [&] { ran = true; }));
  EXPECT_FALSE(ran);
  EXPECT_EQ(scaler.current_scale(), 512.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);
}

// The matrix form --deterministic uses on CUDA against the CPU's adaptive_avg_pool2d,
// forward and backward (bound 1e-5: fp32 sums of at most 13x13 values).
TEST(Cuda, DeterministicPoolMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(1);
  for (const int64_t side : {1, 6, 13}) {
    auto a = torch::randn({2, 4, side, side}, torch::requires_grad());
    auto b = a.detach().to(kCuda).requires_grad_(true);
    const auto ya = torch::adaptive_avg_pool2d(a, {6, 6});
    const auto yb = deterministic_adaptive_avg_pool(b, 6, 6);
    EXPECT_LE((ya - yb.cpu()).abs().max().item<double>(), 1e-5) << side;
    const auto g = torch::randn_like(ya);
    ya.backward(g);
    yb.backward(g.to(kCuda));
    EXPECT_LE((a.grad() - b.grad().cpu()).abs().max().item<double>(), 1e-5) << side;
  }
}

// What train saves as cuda_rng_state and restores on --resume: dropout's masks repeat.
TEST(Cuda, GeneratorStateRestoresDropoutMasks) {
  SKIP_WITHOUT_CUDA();
  auto gen = at::globalContext().defaultGenerator(kCuda);
  torch::Tensor state;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    state = gen.get_state();
  }
  const auto x = torch::ones({4096}, torch::TensorOptions().device(kCuda));
  const auto first = torch::dropout(x, 0.5, /*train=*/true);
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }
  const auto again = torch::dropout(x, 0.5, /*train=*/true);
  EXPECT_TRUE(torch::equal(first, again));
  EXPECT_FALSE(torch::equal(first, torch::dropout(x, 0.5, /*train=*/true)));
}

// --pin-memory: the loader's batches are page-locked and copy to the GPU unchanged.
TEST(Cuda, LoaderPinsBatches) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(1);
  auto ds = std::make_shared<data::TensorDataset>(
      data::DatasetKind::kCifar10, "synthetic", torch::randint(0, 256, {10, 32, 32, 3}, torch::kUInt8),
      torch::arange(10, torch::kInt64) % 3, std::vector<std::string>{"a", "b", "c"});
  data::Loader loader(
      ds, data::Pipeline(data::default_transform_options(data::DatasetKind::kCifar10, false)),
      data::LoaderOptions().batch_size(4).shuffle(false).workers(1).pin_memory(true));
  loader.start_epoch(0);
  const auto batch = loader.next();
  ASSERT_TRUE(batch.has_value());
  EXPECT_TRUE(batch->images.is_pinned());
  EXPECT_TRUE(batch->labels.is_pinned());
  const auto on_gpu = batch->images.to(kCuda, /*non_blocking=*/true);
  torch::cuda::synchronize();
  EXPECT_TRUE(torch::equal(on_gpu.cpu(), batch->images));
}

}  // namespace
}  // namespace alexnet
