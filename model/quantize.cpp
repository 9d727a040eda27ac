// quantize_channels_last (model/quantize.h).
#include "model/quantize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace alexnet {

namespace {

// One value: clamped to [-z, 255 - z] first (integers, so clamping before rounding is
// clamping after), rounded half to even by adding and taking away 1.5 * 2^23 (exact for
// |r| < 2^22; nearbyint in the default rounding mode, but written so that GCC
// vectorizes it), then shifted by z. NaN becomes 0 (std::max(lo, NaN) is lo).
struct Quantizer {
  float inverse, lo, hi, zero;

  uint8_t operator()(float a) const {
    const float r = std::min(hi, std::max(lo, a * inverse));
    return static_cast<uint8_t>(static_cast<int>((r + 12582912.0f) - 12582912.0f + zero));
  }

  void run(const float* src, uint8_t* dst, int64_t n) const {
    for (int64_t i = 0; i < n; ++i) dst[i] = (*this)(src[i]);
  }
};

constexpr int64_t kBlock = 1024;  // pixels per task: C blocks of uint8 fit in L1
constexpr int64_t kMaxChannels = 16;

}  // namespace

torch::Tensor quantize_channels_last(const torch::Tensor& input, double scale, int64_t zero_point) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat && input.device().is_cpu(),
              "quantize: expected (N, C, H, W) float32 on the CPU, got ", input.sizes(), " ", input.scalar_type(),
              " on ", input.device());
  TORCH_CHECK(scale > 0 && zero_point >= 0 && zero_point <= 255, "quantize: expected a positive scale and a quint8 zero point");
  const Quantizer q{1.0f / static_cast<float>(scale), static_cast<float>(-zero_point),
                    static_cast<float>(255 - zero_point), static_cast<float>(zero_point)};
  // With fbgemm (PyPI's LibTorch), ATen's quantize_per_tensor is fbgemm's vectorized loop,
  // whose fused multiply-add rounds some near-ties the other way than the formula above.
  const auto& engines = at::globalContext().supportedQEngines();
  if (std::find(engines.begin(), engines.end(), at::QEngine::FBGEMM) != engines.end())
    return at::quantize_per_tensor(input.contiguous(torch::MemoryFormat::ChannelsLast), scale, zero_point,
                                   torch::kQUInt8);
  auto y = at::_empty_affine_quantized(input.sizes(), input.options().dtype(torch::kQUInt8), scale, zero_point,
                                       torch::MemoryFormat::ChannelsLast);  // (N, C, H, W), channels-last
  auto* dst = reinterpret_cast<uint8_t*>(y.data_ptr());
  const int64_t channels = input.size(1), pixels = input.size(2) * input.size(3);
  if (input.is_contiguous(torch::MemoryFormat::ChannelsLast) || channels > kMaxChannels) {
    const auto x = input.contiguous(torch::MemoryFormat::ChannelsLast);  // (N, H, W, C) in memory
    const float* src = x.data_ptr<float>();
    at::parallel_for(0, x.numel(), kBlock * kMaxChannels,
                     [&](int64_t begin, int64_t end) { q.run(src + begin, dst + begin, end - begin); });
    return y;
  }
  const auto x = input.contiguous();  // (N, C, H, W)
  const float* src = x.data_ptr<float>();
  const int64_t blocks = (pixels + kBlock - 1) / kBlock;
  at::parallel_for(0, input.size(0) * blocks, 1, [&](int64_t begin, int64_t end) {
    uint8_t planes[kMaxChannels][kBlock];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, first = (task % blocks) * kBlock, count = std::min(kBlock, pixels - first);
      for (int64_t c = 0; c < channels; ++c) q.run(src + (n * channels + c) * pixels + first, planes[c], count);
      uint8_t* out = dst + (n * pixels + first) * channels;  // (count, C)
      if (channels == 3) {  // images: a constant stride, which the compiler unrolls (1.5x the rate)
        for (int64_t p = 0; p < count; ++p) {
          out[3 * p] = planes[0][p];
          out[3 * p + 1] = planes[1][p];
          out[3 * p + 2] = planes[2][p];
        }
      } else {
        for (int64_t p = 0; p < count; ++p)
          for (int64_t c = 0; c < channels; ++c) out[p * channels + c] = planes[c][p];
      }
    }
  });
  return y;
}

}  // namespace alexnet
