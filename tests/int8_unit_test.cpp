// The int8 engine's oneDNN layers (model/int8_onednn.h) against LibTorch's quantized
// kernels, which it runs in builds without oneDNN; its input quantization against
// at::quantize_per_tensor; features.0 read in tiles (model/quantize.h); the whole engine at an
// empty batch and on input it cannot read; the bf16 engine's input rounding, plain and in tiles.
#include "model/int8.h"
#include "model/int8_onednn.h"
#include "model/quantize.h"
#include "app/runtime/precision.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

using alexnet::OneDnnInt8Linear;

c10::IValue call_op(const char* name, std::vector<c10::IValue> stack) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  op.callBoxed(&stack);
  return std::move(stack.front());
}

// A weight quantized as the engine does: per output channel, symmetric, zero points 0.
torch::Tensor quantized_weight(int64_t out, int64_t in) {
  const auto w = torch::randn({out, in}) * 0.02;  // (out, in)
  const auto scales = (w.abs().amax(1).to(torch::kDouble) / 127.0).clamp_min(1e-12);
  return at::quantize_per_channel(w, scales, torch::zeros({out}, torch::kLong), 0, torch::kQInt8);
}

struct Case {
  int64_t out, in;
  double in_scale;
  int64_t in_zero_point;
  double out_scale;
  int64_t out_zero_point;
  bool relu;
};

alexnet::Int8Requantization requantization(const Case& c) {
  return {c.in_scale, c.in_zero_point, c.out_scale, c.out_zero_point, c.relu};
}

// (N, in) quint8 activations spread over the range the engine gives them on this CPU: 8 bits
// with VNNI, 7 without (whose u8 x s8 instructions add pairs into 16 bits, in oneDNN as in fbgemm).
torch::Tensor activations(int64_t n, const Case& c) {
  const int64_t qmax = alexnet::runtime::int8_activation_max();
  const auto values = torch::randint(0, qmax + 1, {n, c.in}, torch::kLong).to(torch::kFloat);
  return at::quantize_per_tensor((values - c.in_zero_point) * c.in_scale, c.in_scale, c.in_zero_point,
                                 torch::kQUInt8);
}

TEST(OneDnnInt8Linear, GivesLibTorchsBytesAfterAReluAtEveryBatchSize) {
  if (!OneDnnInt8Linear::available()) GTEST_SKIP() << "built without oneDNN's headers";
  if (alexnet::Int8AlexNet::engine().empty()) GTEST_SKIP() << "this LibTorch has no quantized CPU kernels";
  torch::manual_seed(0);
  // classifier.1's shape, then classifier.4's; zero points as calibration gives them (0 after a
  // ReLU), and one output zero point other than 0 without a ReLU.
  for (const Case c : {Case{4096, 9216, 0.05, 0, 0.08, 0, true}, Case{1000, 4096, 0.03, 0, 0.1, 0, true},
                       Case{512, 1024, 0.03, 0, 0.1, 37, false}}) {
    const auto weight = quantized_weight(c.out, c.in);
    const auto bias = torch::randn({c.out}) * 0.1;
    const auto packed = call_op("quantized::linear_prepack", {weight, bias});
    OneDnnInt8Linear layer(weight, bias, requantization(c));
    for (const int64_t n : {1, 2, 4, 16, 64}) {
      const auto x = activations(n, c);
      const auto want = call_op(c.relu ? "quantized::linear_relu" : "quantized::linear",
                                {x, packed, c.out_scale, c.out_zero_point})
                            .toTensor();
      const auto got = layer.forward(x);
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_EQ(got.q_scale(), want.q_scale());
      EXPECT_EQ(got.q_zero_point(), want.q_zero_point());
      // Tolerance: one quantization step on at most 1 output in 10,000, as for the convolutions
      // below (the same integer sums and float requantization: 0 differed on AMX, under the
      // AVX-512 and the AVX2 caps; another CPU's kernels may round a near-tie apart).
      const auto diff = (got.int_repr().to(torch::kInt) - want.int_repr().to(torch::kInt)).abs();
      const auto differ = diff.ne(0).sum().item<int64_t>();
      EXPECT_LE(diff.max().item<int>(), 1);
      EXPECT_LE(differ * 10000, got.numel()) << "batch " << n << ", " << c.out << "x" << c.in << ": " << differ
                                             << " of " << got.numel() << " outputs differ";
    }
  }
}

TEST(OneDnnInt8Linear, FoldsAnInputZeroPointIntoTheBias) {
  if (!OneDnnInt8Linear::available()) GTEST_SKIP() << "built without oneDNN's headers";
  if (alexnet::Int8AlexNet::engine().empty()) GTEST_SKIP() << "this LibTorch has no quantized CPU kernels";
  torch::manual_seed(1);
  const Case c{256, 2304, 0.04, 100, 0.05, 0, true};
  const auto weight = quantized_weight(c.out, c.in);
  const auto bias = torch::randn({c.out}) * 0.1;
  const auto packed = call_op("quantized::linear_prepack", {weight, bias});
  OneDnnInt8Linear layer(weight, bias, requantization(c));
  const auto x = activations(8, c);
  const auto want = call_op("quantized::linear_relu", {x, packed, c.out_scale, c.out_zero_point}).toTensor();
  const auto got = layer.forward(x);
  // Tolerance: one quantization step (the folded bias is rounded to float once more).
  const auto diff = (got.int_repr().to(torch::kInt) - want.int_repr().to(torch::kInt)).abs();
  EXPECT_LE(diff.max().item<int>(), 1);
  EXPECT_GT(want.int_repr().to(torch::kInt).sum().item<int64_t>(), 0) << "the ReLU left nothing to compare";
}

TEST(OneDnnInt8Linear, RefusesWhatItCannotRun) {
  if (!OneDnnInt8Linear::available()) {
    EXPECT_THROW(OneDnnInt8Linear(quantized_weight(4, 8), torch::zeros({4}), {0.1, 0, 0.1, 0, true}),
                 std::invalid_argument);
    return;
  }
  const auto weight = quantized_weight(4, 8);
  EXPECT_THROW(OneDnnInt8Linear(weight.dequantize(), torch::zeros({4}), {0.1, 0, 0.1, 0, true}), c10::Error);
  EXPECT_THROW(OneDnnInt8Linear(weight, torch::zeros({5}), {0.1, 0, 0.1, 0, true}), c10::Error);
  OneDnnInt8Linear layer(weight, torch::zeros({4}), {0.1, 0, 0.1, 0, true});
  const Case c{4, 8, 0.1, 0, 0.1, 0, true};
  EXPECT_EQ(layer.forward(activations(0, c)).size(0), 0);
  EXPECT_EQ(layer.forward(activations(3, c)).sizes(), (std::vector<int64_t>{3, 4}));
  // Another input scale: the bias and output scales were made for this one.
  EXPECT_THROW(layer.forward(at::quantize_per_tensor(torch::rand({2, 8}), 0.2, 0, torch::kQUInt8)), c10::Error);
  EXPECT_THROW(layer.forward(torch::rand({2, 8})), c10::Error);
  EXPECT_THROW(layer.forward(activations(2, Case{4, 9, 0.1, 0, 0.1, 0, true})), c10::Error);
}

TEST(OneDnnInt8Linear, GivesTheDequantizedSumsForTheLastLayer) {
  if (!OneDnnInt8Linear::available()) GTEST_SKIP() << "built without oneDNN's headers";
  torch::manual_seed(2);
  // classifier.6's shape: classifier.4's ReLU output in, float32 logits out.
  const Case c{1000, 4096, 0.05, 0, 1.0, 0, false};
  const auto weight = quantized_weight(c.out, c.in);
  const auto bias = torch::randn({c.out});
  OneDnnInt8Linear layer(weight, bias, {c.in_scale, 0, 1.0, 0, /*relu=*/false, /*float_output=*/true});
  const auto w = weight.int_repr().to(torch::kDouble);  // (out, in)
  const auto acc_scale = weight.q_per_channel_scales().to(torch::kDouble) * c.in_scale;  // (out,)
  for (const int64_t n : {1, 2, 16, 64}) {
    const auto x = activations(n, c);
    // The exact sums in double, then s_x * s_w[oc] * acc + b[oc].
    const auto want = torch::matmul(x.int_repr().to(torch::kDouble), w.t()) * acc_scale + bias.to(torch::kDouble);
    const auto got = layer.forward(x);
    ASSERT_EQ(got.scalar_type(), torch::kFloat);
    ASSERT_EQ(got.sizes(), want.sizes());
    // Tolerance: 1e-5 of the logits' scale (float32 sums past 2^24 and the folded bias round).
    const double error = ((got.to(torch::kDouble) - want).abs().max() / want.abs().max()).item<double>();
    EXPECT_LE(error, 1e-5) << "batch " << n;
  }
  // The output is not quantized again, so it takes no scale of its own; a convolution has none.
  EXPECT_THROW(OneDnnInt8Linear(weight, bias, {c.in_scale, 0, 0.5, 0, false, true}), c10::Error);
  const auto conv_weight = at::quantize_per_channel(torch::randn({4, 3, 3, 3}), torch::full({4}, 0.01, torch::kDouble),
                                                    torch::zeros({4}, torch::kLong), 0, torch::kQInt8);
  EXPECT_THROW(alexnet::OneDnnInt8Conv(conv_weight, torch::zeros({4}), {1, 1}, {1, 1}, {0.1, 0, 1.0, 0, false, true}),
               c10::Error);
}

TEST(OneDnnInt8Conv, GivesLibTorchsBytesForAlexNetsConvolutions) {
  if (!OneDnnInt8Linear::available()) GTEST_SKIP() << "built without oneDNN's headers";
  if (alexnet::Int8AlexNet::engine().empty()) GTEST_SKIP() << "this LibTorch has no quantized CPU kernels";
  torch::manual_seed(3);
  struct Conv {
    int64_t in, out, kernel, stride, padding, side, zero_point;
  };
  // features.0 (reading an image quantized with a zero point), .3, .6, .8 and .10 at the maps
  // of a 224 px image, and smaller ones.
  for (const Conv v : {Conv{3, 64, 11, 4, 2, 224, 113}, Conv{64, 192, 5, 1, 2, 27, 0}, Conv{192, 384, 3, 1, 1, 13, 0},
                       Conv{384, 256, 3, 1, 1, 13, 0}, Conv{256, 256, 3, 1, 1, 13, 0}, Conv{3, 64, 11, 4, 2, 63, 255},
                       Conv{64, 192, 5, 1, 2, 3, 0}, Conv{256, 256, 3, 1, 1, 1, 0}}) {
    const auto w = torch::randn({v.out, v.in, v.kernel, v.kernel}) * 0.02;  // (out, in, k, k)
    const auto scales = (w.reshape({v.out, -1}).abs().amax(1).to(torch::kDouble) / 127.0).clamp_min(1e-12);
    const auto weight = at::quantize_per_channel(w, scales, torch::zeros({v.out}, torch::kLong), 0, torch::kQInt8);
    const auto bias = torch::randn({v.out}) * 0.1;
    const std::vector<int64_t> one{1, 1}, stride{v.stride, v.stride}, pad{v.padding, v.padding};
    const auto packed = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("quantized::conv2d_prepack", "");
    std::vector<c10::IValue> stack{weight, bias, stride, pad, one, int64_t{1}};
    packed.callBoxed(&stack);
    const auto params = stack.front();
    const Case c{v.out, v.in, 0.04, v.zero_point, 0.06, 0, true};
    alexnet::OneDnnInt8Conv conv(weight, bias, stride, pad, requantization(c));
    for (const int64_t n : {1, 3}) {
      const auto x = activations(n * v.side * v.side, c)
                         .reshape({n, v.side, v.side, v.in})
                         .permute({0, 3, 1, 2});  // (N, in, side, side), channels-last
      const auto want = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::conv2d_relu", "new");
      std::vector<c10::IValue> args{x, params, c.out_scale, c.out_zero_point};
      want.callBoxed(&args);
      const auto expected = args.front().toTensor();
      const auto got = conv.forward(x);
      ASSERT_EQ(got.sizes(), expected.sizes());
      EXPECT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast));
      // Tolerance: one quantization step on at most 1 output in 10,000. LibTorch 1.13's own
      // kernel is oneDNN's with this requantization: 0 differ on AVX-512 and AMX; oneDNN's AVX2
      // kernels picked for the two calls can round a float near a tie apart (1 of 419,904 seen).
      const auto diff = (got.int_repr().to(torch::kInt) - expected.int_repr().to(torch::kInt)).abs();
      const auto differ = diff.ne(0).sum().item<int64_t>();
      EXPECT_LE(diff.max().item<int>(), 1);
      EXPECT_LE(differ * 10000, got.numel()) << "batch " << n << ", " << v.in << "->" << v.out << " at " << v.side
                                             << "x" << v.side << ": " << differ << " of " << got.numel()
                                             << " outputs differ";
    }
  }
  alexnet::OneDnnInt8Conv conv(at::quantize_per_channel(torch::randn({8, 4, 3, 3}), torch::full({8}, 0.01, torch::kDouble),
                                                        torch::zeros({8}, torch::kLong), 0, torch::kQInt8),
                               torch::zeros({8}), {1, 1}, {1, 1}, {0.1, 0, 0.1, 0, true});
  const auto empty = conv.forward(at::quantize_per_tensor(torch::rand({0, 4, 5, 5}), 0.1, 0, torch::kQUInt8));
  EXPECT_EQ(empty.sizes(), (std::vector<int64_t>{0, 8, 5, 5}));
  EXPECT_THROW(conv.forward(at::quantize_per_tensor(torch::rand({1, 4, 5, 5}), 0.1, 3, torch::kQUInt8)), c10::Error);
  EXPECT_THROW(conv.forward(at::quantize_per_tensor(torch::rand({1, 5, 5, 5}), 0.1, 0, torch::kQUInt8)), c10::Error);
  alexnet::OneDnnInt8Conv unpadded(at::quantize_per_channel(torch::randn({8, 4, 3, 3}),
                                                            torch::full({8}, 0.01, torch::kDouble),
                                                            torch::zeros({8}, torch::kLong), 0, torch::kQInt8),
                                    torch::zeros({8}), {1, 1}, {0, 0}, {0.1, 0, 0.1, 0, true});
  EXPECT_THROW(unpadded.forward(at::quantize_per_tensor(torch::rand({1, 4, 2, 2}), 0.1, 0, torch::kQUInt8)),
               c10::Error);
}

TEST(QuantizeChannelsLast, GivesAtenQuantizePerTensorsBytes) {
  const auto& engines = at::globalContext().supportedQEngines();
  if (std::find(engines.begin(), engines.end(), at::QEngine::FBGEMM) != engines.end())
    GTEST_SKIP() << "this LibTorch has fbgemm, whose quantize_per_tensor quantize_channels_last calls";
  torch::manual_seed(2);
  // 3 channels (the images: plane by plane), 20 (the flat path), channels-last input; sizes
  // that leave a partial block; a power-of-two scale so that half steps are exact ties.
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 3, 224, 224}, {5, 3, 33, 47}, {2, 20, 9, 9}}) {
    for (const bool channels_last : {false, true}) {
      for (const auto& [scale, zero_point] : std::vector<std::pair<double, int64_t>>{{0.02, 117}, {0.25, 0}, {0.03, 255}}) {
        auto x = torch::randn(shape) * 2;  // (N, C, H, W)
        x.view({-1}).slice(0, 0, 64).copy_(torch::arange(-32, 32).to(torch::kFloat) * (scale / 2));  // ties
        x.view({-1})[64] = 1e9;
        x.view({-1})[65] = -1e9;
        if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
        const auto want = at::quantize_per_tensor(x.contiguous(torch::MemoryFormat::ChannelsLast), scale, zero_point,
                                                  torch::kQUInt8);
        const auto got = alexnet::quantize_channels_last(x, scale, zero_point);
        ASSERT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast));
        EXPECT_EQ(got.q_scale(), scale);
        EXPECT_EQ(got.q_zero_point(), zero_point);
        // Tolerance: none (the same formula in the same float arithmetic).
        EXPECT_TRUE(torch::equal(got.int_repr(), want.int_repr()))
            << x.sizes() << (channels_last ? " channels-last" : "") << " scale " << scale << ": "
            << got.int_repr().ne(want.int_repr()).sum().item<int64_t>() << " values differ";
      }
    }
  }
  EXPECT_THROW(alexnet::quantize_channels_last(torch::rand({3, 4}), 0.1, 0), c10::Error);
  EXPECT_THROW(alexnet::quantize_channels_last(torch::rand({1, 3, 4, 4}), 0.1, 256), c10::Error);
}

// What the space-to-depth tiles must hold, from the image's values channels-last (N, H, W, C):
// the image padded with `fill` (or cut) to tiles_h x tiles_w tiles, each tile's pixels in
// (dy, dx, c) order.
torch::Tensor tiles_of(const torch::Tensor& image, double fill, const alexnet::SpaceToDepth& g) {
  const int64_t n = image.size(0), c = image.size(3), b = g.block;
  auto padded = torch::full({n, g.tiles_h * b, g.tiles_w * b, c}, fill, image.options());
  const int64_t rows = std::min(image.size(1), g.tiles_h * b - g.padding), cols = std::min(image.size(2), g.tiles_w * b - g.padding);
  padded.slice(1, g.padding, g.padding + rows).slice(2, g.padding, g.padding + cols)
      .copy_(image.slice(1, 0, rows).slice(2, 0, cols));
  return padded.reshape({n, g.tiles_h, b, g.tiles_w, b, c}).permute({0, 1, 3, 2, 4, 5}).reshape({n, g.tiles_h, g.tiles_w, -1});
}

// quantize_channels_last's bytes, in tiles.
torch::Tensor tiles_of(const torch::Tensor& x, double scale, int64_t zero_point, const alexnet::SpaceToDepth& g) {
  const auto q = alexnet::quantize_channels_last(x, scale, zero_point).int_repr().permute({0, 2, 3, 1});  // (N, H, W, C)
  return tiles_of(q, static_cast<double>(zero_point), g);
}

TEST(SpaceToDepth, QuantizesTheImageIntoTilesOfItsPaddedPixels) {
  torch::manual_seed(5);
  struct Geometry {
    std::vector<int64_t> shape;
    int64_t kernel, stride, padding;
  };
  // features.0 at 224 px and at sizes whose last tiles run past the padded image or stop
  // short of it; another block and channel count.
  for (const auto& v : {Geometry{{1, 3, 224, 224}, 11, 4, 2}, Geometry{{2, 3, 63, 50}, 11, 4, 2},
                        Geometry{{1, 3, 11, 14}, 11, 4, 0}, Geometry{{3, 2, 17, 16}, 5, 3, 1},
                        Geometry{{2, 1, 64, 64}, 11, 4, 2}}) {  // the main job's grey 64 px images
    const auto g = alexnet::SpaceToDepth::of(v.shape[2], v.shape[3], v.kernel, v.stride, v.padding);
    EXPECT_EQ(g.tiles_h - g.kernel + 1, (v.shape[2] + 2 * v.padding - v.kernel) / v.stride + 1);  // the output's rows
    for (const int64_t zero_point : {int64_t{0}, int64_t{113}}) {
      auto x = torch::randn(v.shape) * 2;  // (N, C, H, W)
      if (zero_point == 0) x = x.contiguous(torch::MemoryFormat::ChannelsLast);  // read row by row
      const auto got = alexnet::quantize_space_to_depth(x, 0.02, zero_point, g);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{v.shape[0], v.shape[1] * v.stride * v.stride, g.tiles_h, g.tiles_w}));
      ASSERT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast));
      EXPECT_EQ(got.q_zero_point(), zero_point);
      // Tolerance: none (the same bytes moved).
      EXPECT_TRUE(torch::equal(got.int_repr().permute({0, 2, 3, 1}), tiles_of(x, 0.02, zero_point, g)))
          << x.sizes() << (zero_point == 0 ? " channels-last" : "") << ", kernel " << v.kernel << ", stride "
          << v.stride << ", zero point " << zero_point;
    }
  }
  EXPECT_THROW(alexnet::SpaceToDepth::of(4, 4, 11, 4, 2), c10::Error);  // smaller than the kernel
  EXPECT_THROW(alexnet::SpaceToDepth::of(20, 20, 11, 0, 2), c10::Error);
}

// features.0 on the image, and on its tiles with the rewritten weight: the same int32 sums, so
// the same bytes, through LibTorch's quantized kernels and through oneDNN's where the build has it.
TEST(SpaceToDepth, GivesTheStridedConvolutionsBytes) {
  if (alexnet::Int8AlexNet::engine().empty()) GTEST_SKIP() << "this LibTorch has no quantized CPU kernels";
  torch::manual_seed(6);
  const auto w = torch::randn({64, 3, 11, 11}) * 0.02;  // (out, in, k, k)
  const auto scales = (w.reshape({64, -1}).abs().amax(1).to(torch::kDouble) / 127.0).clamp_min(1e-12);
  const auto weight = at::quantize_per_channel(w, scales, torch::zeros({64}, torch::kLong), 0, torch::kQInt8);
  const auto bias = torch::randn({64}) * 0.1;
  const auto rewritten = alexnet::space_to_depth_weight(weight, alexnet::SpaceToDepth::of(11, 11, 11, 4, 0));
  ASSERT_EQ(rewritten.sizes(), (std::vector<int64_t>{64, 48, 3, 3}));
  const auto prepack = [](const torch::Tensor& q, const torch::Tensor& b, int64_t stride, int64_t padding) {
    const std::vector<int64_t> s{stride, stride}, p{padding, padding}, one{1, 1};
    return call_op("quantized::conv2d_prepack", {q, b, s, p, one, int64_t{1}});
  };
  const auto strided = prepack(weight, bias, 4, 2), tiled = prepack(rewritten, bias, 1, 0);
  const double in_scale = 0.04, out_scale = 0.06;
  const int64_t qmax = alexnet::runtime::int8_activation_max(), zero_point = qmax / 2;
  std::unique_ptr<alexnet::OneDnnInt8Conv> onednn_strided, onednn_tiled;
  if (OneDnnInt8Linear::available()) {
    const alexnet::Int8Requantization rq{in_scale, zero_point, out_scale, 0, true};
    onednn_strided = std::make_unique<alexnet::OneDnnInt8Conv>(weight, bias, std::vector<int64_t>{4, 4},
                                                               std::vector<int64_t>{2, 2}, rq);
    onednn_tiled = std::make_unique<alexnet::OneDnnInt8Conv>(rewritten, bias, std::vector<int64_t>{1, 1},
                                                             std::vector<int64_t>{0, 0}, rq);
  }
  const auto run = [&](const c10::IValue& params, const torch::Tensor& x) {
    const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::conv2d_relu", "new");
    std::vector<c10::IValue> args{x, params, out_scale, int64_t{0}};
    op.callBoxed(&args);
    return args.front().toTensor();
  };
  // Tolerance: one quantization step on at most 1 output in 10,000, as for the convolutions
  // above (LibTorch may pick different kernels for the two shapes; each rounds its float
  // requantization itself).
  const auto expect_close = [](const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
    ASSERT_EQ(got.sizes(), want.sizes()) << what;
    const auto diff = (got.int_repr().to(torch::kInt) - want.int_repr().to(torch::kInt)).abs();
    const auto differ = diff.ne(0).sum().item<int64_t>();
    EXPECT_LE(diff.max().item<int>(), 1) << what;
    EXPECT_LE(differ * 10000, got.numel()) << what << ": " << differ << " of " << got.numel() << " outputs differ";
  };
  for (const int64_t side : {224, 63, 11}) {
    for (const int64_t n : {1, 2}) {
      // Values spread over [0, qmax] around the zero point, as the engine's images are.
      const auto x = (torch::rand({n, 3, side, side}) * qmax - zero_point) * in_scale;  // (N, 3, side, side)
      const auto g = alexnet::SpaceToDepth::of(side, side, 11, 4, 2);
      const auto image = alexnet::quantize_channels_last(x, in_scale, zero_point);
      const auto tiles = alexnet::quantize_space_to_depth(x, in_scale, zero_point, g);
      const std::string what = "batch " + std::to_string(n) + " at " + std::to_string(side) + " px";
      expect_close(run(tiled, tiles), run(strided, image), what + ", LibTorch");
      if (onednn_tiled) expect_close(onednn_tiled->forward(tiles), onednn_strided->forward(image), what + ", oneDNN");
    }
  }
  EXPECT_THROW(alexnet::space_to_depth_weight(weight, alexnet::SpaceToDepth::of(8, 8, 8, 4, 0)), c10::Error);
  // A float32 weight is rearranged as the qint8 one's integers are.
  EXPECT_TRUE(torch::equal(alexnet::space_to_depth_weight(weight.dequantize(), alexnet::SpaceToDepth::of(11, 11, 11, 4, 0)),
                           rewritten.dequantize()));
  EXPECT_THROW(alexnet::space_to_depth_weight(w.to(torch::kInt), alexnet::SpaceToDepth::of(11, 11, 11, 4, 0)),
               c10::Error);
}

// Special values for a bf16 rounding: ties both ways (odd and even last kept bit), just above
// and below them, NaN, infinities, the largest float (rounds to infinity), denormals, -0.
torch::Tensor with_rounding_cases(torch::Tensor x) {
  const std::vector<uint32_t> bits{0x3F808000u, 0x3F818000u, 0x3F808001u, 0x3F807FFFu, 0x7FC00000u, 0x7F800001u,
                                   0xFF800000u, 0x7F800000u, 0x7F7FFFFFu, 0x00000001u, 0x00018000u, 0x80000000u,
                                   0xBF808000u, 0xC0FF8000u};
  auto flat = x.view({-1});
  for (size_t i = 0; i < bits.size(); ++i) {
    float v;
    std::memcpy(&v, &bits[i], sizeof v);
    flat[static_cast<int64_t>(i) * 7] = v;
  }
  return x;
}

// Bitwise equality, NaN included (a NaN of either sign and payload counts as NaN).
bool same_bf16(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::equal(a.isnan(), b.isnan()) &&
         torch::equal(a.masked_fill(a.isnan(), 0).view(torch::kShort), b.masked_fill(b.isnan(), 0).view(torch::kShort));
}

TEST(Bf16ChannelsLast, RoundsAsLibTorchDoes) {
  torch::manual_seed(7);
  for (const auto& shape : std::vector<std::vector<int64_t>>{{1, 3, 224, 224}, {5, 3, 33, 47}, {2, 20, 9, 9}, {3, 1, 64, 64}}) {
    for (const bool channels_last : {false, true}) {
      auto x = with_rounding_cases(torch::randn(shape) * 3);  // (N, C, H, W)
      if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      const auto got = alexnet::bf16_channels_last(x);
      ASSERT_EQ(got.sizes(), x.sizes());
      ASSERT_EQ(got.scalar_type(), torch::kBFloat16);
      ASSERT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast));
      // Tolerance: none (LibTorch's rounding to nearest even, bit for bit; NaN stays NaN).
      EXPECT_TRUE(same_bf16(got.contiguous(), x.to(torch::kBFloat16).contiguous()))
          << x.sizes() << (channels_last ? " channels-last" : "");
    }
  }
  EXPECT_THROW(alexnet::bf16_channels_last(torch::rand({3, 4})), c10::Error);
  EXPECT_THROW(alexnet::bf16_channels_last(torch::rand({1, 3, 4, 4}).to(torch::kDouble)), c10::Error);
}

// Images (N, C, H, W) and features.0's padding for the tile tests: ImageNet's size, an odd
// and a non-square one, one channel, and an image barely larger than the kernel.
const std::vector<std::pair<std::vector<int64_t>, int64_t>>& tile_cases() {
  static const std::vector<std::pair<std::vector<int64_t>, int64_t>> cases = {
      {{2, 3, 224, 224}, 2}, {{1, 3, 63, 50}, 2}, {{2, 1, 64, 64}, 2}, {{1, 3, 11, 14}, 0}};
  return cases;
}

TEST(SpaceToDepth, RoundsTheImageIntoBf16Tiles) {
  torch::manual_seed(8);
  for (const auto& [shape, padding] : tile_cases()) {
    const auto g = alexnet::SpaceToDepth::of(shape[2], shape[3], 11, 4, padding);
    for (const bool channels_last : {false, true}) {
      auto x = with_rounding_cases(torch::randn(shape));  // (N, C, H, W)
      if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      const auto got = alexnet::bf16_space_to_depth(x, g);
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{shape[0], shape[1] * 16, g.tiles_h, g.tiles_w}));
      ASSERT_TRUE(got.is_contiguous(torch::MemoryFormat::ChannelsLast));
      // Tolerance: none (LibTorch's bf16 values moved; zeros for the padding).
      const auto want = tiles_of(x.to(torch::kBFloat16).permute({0, 2, 3, 1}), 0.0, g);  // (N, H', W', C * 16)
      EXPECT_TRUE(same_bf16(got.permute({0, 2, 3, 1}).contiguous(), want.contiguous()))
          << x.sizes() << (channels_last ? " channels-last" : "");
    }
  }
}

// The fp32 plan's features.0 input (model/onednn_plan.h, AVX2): the float32 values moved into
// the same tiles, zeros for the padding. Tolerance: none (a copy).
TEST(SpaceToDepth, MovesTheFloat32ImageIntoTiles) {
  torch::manual_seed(9);
  for (const auto& [shape, padding] : tile_cases()) {
    const auto g = alexnet::SpaceToDepth::of(shape[2], shape[3], 11, 4, padding);
    for (const bool channels_last : {false, true}) {
      auto x = torch::randn(shape);  // (N, C, H, W)
      if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
      auto got = torch::full({shape[0], g.tiles_h, g.tiles_w, shape[1] * 16}, std::nanf(""));
      alexnet::space_to_depth_into(x, g, got.data_ptr<float>());
      const auto want = tiles_of(x.permute({0, 2, 3, 1}), 0.0, g);  // (N, H', W', C * 16)
      EXPECT_TRUE(torch::equal(got, want.contiguous())) << x.sizes() << (channels_last ? " channels-last" : "");
    }
  }
}

TEST(Int8AlexNet, AnEmptyBatchGivesNoLogits) {
  if (!alexnet::Int8AlexNet::available()) GTEST_SKIP() << "this LibTorch has no quantized CPU kernels";
  torch::manual_seed(4);
  alexnet::AlexNet model(alexnet::AlexNetOptions().num_classes(10));
  model->eval();
  alexnet::Int8Calibrator calibrator(model);
  calibrator.observe(torch::randn({2, 3, 224, 224}));
  alexnet::Int8AlexNet engine(model, calibrator.finish(alexnet::runtime::int8_activation_max()),
                              alexnet::runtime::int8_activation_max());
  EXPECT_EQ(engine.forward(torch::randn({0, 3, 224, 224})).sizes(), (std::vector<int64_t>{0, 10}));
  EXPECT_EQ(engine.forward(torch::randn({1, 3, 224, 224})).sizes(), (std::vector<int64_t>{1, 10}));
  EXPECT_THROW(engine.forward(torch::randn({3, 224, 224})), c10::Error);
  EXPECT_THROW(engine.forward(torch::randn({1, 1, 224, 224})), c10::Error);  // a grey image
  EXPECT_THROW(engine.forward(torch::randn({1, 3, 8, 8})), c10::Error);      // smaller than features.0
}

}  // namespace
