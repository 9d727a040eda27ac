// quantize_channels_last (model/quantize.h).
#include "model/quantize.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

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

Quantizer quantizer(double scale, int64_t zero_point) {
  TORCH_CHECK(scale > 0 && zero_point >= 0 && zero_point <= 255, "quantize: expected a positive scale and a quint8 zero point");
  return {1.0f / static_cast<float>(scale), static_cast<float>(-zero_point), static_cast<float>(255 - zero_point),
          static_cast<float>(zero_point)};
}

void check_images(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat && input.device().is_cpu(),
              "quantize: expected (N, C, H, W) float32 on the CPU, got ", input.sizes(), " ", input.scalar_type(),
              " on ", input.device());
}

// With fbgemm (PyPI's LibTorch), ATen's quantize_per_tensor is fbgemm's vectorized loop,
// whose fused multiply-add rounds some near-ties the other way than the formula above.
bool aten_is_fbgemm() {
  const auto& engines = at::globalContext().supportedQEngines();
  return std::find(engines.begin(), engines.end(), at::QEngine::FBGEMM) != engines.end();
}

// planes[c][p] (C planes `stride` apart) -> out[p * C + c], for `count` pixels.
void interleave(const uint8_t* planes, int64_t stride, int64_t channels, int64_t count, uint8_t* out) {
  if (channels == 3) {  // images: a constant stride, which the compiler unrolls (1.5x the rate)
    const uint8_t *r = planes, *g = planes + stride, *b = planes + 2 * stride;
    for (int64_t p = 0; p < count; ++p) {
      out[3 * p] = r[p];
      out[3 * p + 1] = g[p];
      out[3 * p + 2] = b[p];
    }
    return;
  }
  for (int64_t p = 0; p < count; ++p)
    for (int64_t c = 0; c < channels; ++c) out[p * channels + c] = planes[c * stride + p];
}

// Consecutive chunks of `row` (`bytes` each) to `tiles` places `stride` apart. A constant size
// for features.0's chunks (4 pixels x 3 channels): two moves each instead of a call to memcpy.
void scatter_chunks(const uint8_t* row, int64_t bytes, int64_t tiles, int64_t stride, uint8_t* out) {
  if (bytes == 12) {
    for (int64_t t = 0; t < tiles; ++t) std::memcpy(out + t * stride, row + t * 12, 12);
    return;
  }
  for (int64_t t = 0; t < tiles; ++t) std::memcpy(out + t * stride, row + t * bytes, bytes);
}

}  // namespace

torch::Tensor quantize_channels_last(const torch::Tensor& input, double scale, int64_t zero_point) {
  check_images(input);
  const Quantizer q = quantizer(scale, zero_point);
  if (aten_is_fbgemm())
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
      interleave(planes[0], kBlock, channels, count, dst + (n * pixels + first) * channels);  // (count, C)
    }
  });
  return y;
}

SpaceToDepth SpaceToDepth::of(int64_t h, int64_t w, int64_t kernel, int64_t stride, int64_t padding) {
  TORCH_CHECK(kernel > 0 && stride > 0 && padding >= 0, "space to depth: expected a positive kernel and stride and a "
              "padding >= 0, got ", kernel, ", ", stride, ", ", padding);
  TORCH_CHECK(h + 2 * padding >= kernel && w + 2 * padding >= kernel, "the input (", h, "x", w,
              ") is smaller than the kernel (", kernel, "x", kernel, ")");
  SpaceToDepth g;
  g.block = stride;
  g.padding = padding;
  g.kernel = (kernel + stride - 1) / stride;
  // Output o reads padded rows o * stride .. o * stride + kernel - 1, tiles o .. o + g.kernel - 1.
  g.tiles_h = (h + 2 * padding - kernel) / stride + g.kernel;
  g.tiles_w = (w + 2 * padding - kernel) / stride + g.kernel;
  return g;
}

torch::Tensor quantize_space_to_depth(const torch::Tensor& input, double scale, int64_t zero_point,
                                      const SpaceToDepth& g) {
  check_images(input);
  const Quantizer q = quantizer(scale, zero_point);
  const int64_t n = input.size(0), channels = input.size(1), h = input.size(2), w = input.size(3), b = g.block;
  const int64_t tile_bytes = channels * b * b, row_bytes = g.tiles_w * b * channels;  // a padded row: (x, c)
  auto y = at::_empty_affine_quantized({n, tile_bytes, g.tiles_h, g.tiles_w}, input.options().dtype(torch::kQUInt8),
                                       scale, zero_point, torch::MemoryFormat::ChannelsLast);
  auto* dst = reinterpret_cast<uint8_t*>(y.data_ptr());
  // The image's bytes: ATen's where fbgemm quantizes (channels-last), else the formula here on
  // each row: in one go for a channels-last image, channel by channel for an NCHW one.
  const bool aten = aten_is_fbgemm();
  const bool planar = !aten && !input.is_contiguous(torch::MemoryFormat::ChannelsLast);
  const auto x = aten ? at::quantize_per_tensor(input.contiguous(torch::MemoryFormat::ChannelsLast), scale,
                                                zero_point, torch::kQUInt8)
                      : input.contiguous(planar ? torch::MemoryFormat::Contiguous : torch::MemoryFormat::ChannelsLast);
  const auto* quantized = aten ? reinterpret_cast<const uint8_t*>(x.data_ptr()) : nullptr;  // (N, H, W, C)
  const float* image = aten ? nullptr : x.data_ptr<float>();  // (N, C, H, W), or (N, H, W, C) where !planar
  // Columns of the image a padded row holds: from column `padding` of the row on.
  const int64_t count = std::max<int64_t>(0, std::min(w, g.tiles_w * b - g.padding));
  const uint8_t fill = static_cast<uint8_t>(zero_point);
  at::parallel_for(0, n * g.tiles_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> row(row_bytes), planes(planar ? channels * w : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image_index = task / g.tiles_h, ty = task % g.tiles_h;
      uint8_t* tiles = dst + task * g.tiles_w * tile_bytes;  // the row of tiles ty: (tiles_w, b, b, C)
      for (int64_t dy = 0; dy < b; ++dy) {
        const int64_t r = ty * b + dy - g.padding;  // the image's row
        if (r < 0 || r >= h || count == 0) {
          std::fill(row.begin(), row.end(), fill);
        } else {
          uint8_t* pixels = row.data() + g.padding * channels;
          if (aten) {
            std::memcpy(pixels, quantized + ((image_index * h + r) * w) * channels, count * channels);
          } else if (!planar) {
            q.run(image + ((image_index * h + r) * w) * channels, pixels, count * channels);
          } else {
            for (int64_t c = 0; c < channels; ++c)
              q.run(image + ((image_index * channels + c) * h + r) * w, planes.data() + c * w, count);
            interleave(planes.data(), w, channels, count, pixels);
          }
          std::fill(row.begin(), row.begin() + g.padding * channels, fill);
          std::fill(pixels + count * channels, row.data() + row_bytes, fill);
        }
        scatter_chunks(row.data(), b * channels, g.tiles_w, tile_bytes, tiles + dy * b * channels);
      }
    }
  });
  return y;
}

torch::Tensor space_to_depth_weight(const torch::Tensor& weight, const SpaceToDepth& g) {
  TORCH_CHECK(weight.dim() == 4 && weight.scalar_type() == torch::kQInt8 &&
                  weight.qscheme() == torch::kPerChannelAffine && weight.q_per_channel_axis() == 0 &&
                  weight.size(2) == weight.size(3) && weight.size(2) <= g.kernel * g.block,
              "space to depth: expected a square qint8 weight per output channel, at most ", g.kernel * g.block,
              " wide, got ", weight.sizes());
  const int64_t out = weight.size(0), channels = weight.size(1), k = weight.size(2), b = g.block, kk = g.kernel;
  auto padded = torch::zeros({out, channels, kk * b, kk * b}, torch::kInt8);  // 0 past k: no contribution
  padded.slice(2, 0, k).slice(3, 0, k).copy_(weight.int_repr());
  // (out, C, ky, dy, kx, dx) -> (out, dy, dx, C, ky, kx)
  const auto values = padded.reshape({out, channels, kk, b, kk, b})
                          .permute({0, 3, 5, 1, 2, 4})
                          .reshape({out, b * b * channels, kk, kk})
                          .contiguous();
  return at::_make_per_channel_quantized_tensor(values, weight.q_per_channel_scales(),
                                                weight.q_per_channel_zero_points(), 0);
}

}  // namespace alexnet
