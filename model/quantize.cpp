// The engines' input conversion (model/quantize.h).

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(), which
// -Wmaybe-uninitialized then reports inside the headers (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "model/quantize.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace alexnet {

namespace {

// One value: clamped to [-z, 255 - z] first (integers, so clamping before rounding is
// clamping after), rounded half to even by adding and taking away 1.5 * 2^23 (exact for
// |r| < 2^22; nearbyint in the default rounding mode, but written so that GCC
// vectorizes it), then shifted by z. NaN becomes 0 (std::max(lo, NaN) is lo).
struct Quantizer {
  using Out = uint8_t;
  float inverse, lo, hi, zero;

  uint8_t operator()(float a) const {
    const float r = std::min(hi, std::max(lo, a * inverse));
    return static_cast<uint8_t>(static_cast<int>((r + 12582912.0f) - 12582912.0f + zero));
  }
};

// One value to bf16 as c10::BFloat16 rounds it: to nearest, ties to even; NaN to 0x7FC0.
// Branch-free, so that GCC vectorizes it.
struct Bf16Rounder {
  using Out = uint16_t;

  uint16_t operator()(float a) const {
    uint32_t u;
    std::memcpy(&u, &a, sizeof u);
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return static_cast<uint16_t>(a != a ? 0x7FC0u : rounded);
  }
};

// Values copied as they are: bytes already converted (ATen's quantization), or float32 tiles.
template <typename T>
struct Copy {
  using Out = T;
  T operator()(T a) const { return a; }
};

template <typename Src, typename Convert>
void convert(const Convert& f, const Src* src, typename Convert::Out* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f(src[i]);
}

constexpr int64_t kBlock = 1024;  // pixels per task: C blocks of the output type fit in L1
constexpr int64_t kMaxChannels = 16;

Quantizer quantizer(double scale, int64_t zero_point) {
  TORCH_CHECK(scale > 0 && zero_point >= 0 && zero_point <= 255, "quantize: expected a positive scale and a quint8 zero point");
  return {1.0f / static_cast<float>(scale), static_cast<float>(-zero_point), static_cast<float>(255 - zero_point),
          static_cast<float>(zero_point)};
}

void check_images(const torch::Tensor& input, const char* who) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat && input.device().is_cpu(), who,
              ": expected (N, C, H, W) float32 on the CPU, got ", input.sizes(), " ", input.scalar_type(), " on ",
              input.device());
}

// With fbgemm (PyPI's LibTorch), ATen's quantize_per_tensor is fbgemm's vectorized loop,
// whose fused multiply-add rounds some near-ties the other way than the formula above.
bool aten_is_fbgemm() {
  const auto& engines = at::globalContext().supportedQEngines();
  return std::find(engines.begin(), engines.end(), at::QEngine::FBGEMM) != engines.end();
}

// planes[c][p] (C planes `stride` apart) -> out[p * C + c], for `count` pixels.
template <typename T>
void interleave(const T* planes, int64_t stride, int64_t channels, int64_t count, T* out) {
  if (channels == 3) {  // images: a constant stride, which the compiler unrolls (1.5x the rate)
    const T *r = planes, *g = planes + stride, *b = planes + 2 * stride;
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

// Consecutive chunks of `row` (`size` values each) to `tiles` places `stride` apart. A constant
// size for features.0's chunks (4 pixels x 3 channels): a few moves each instead of a call to memcpy.
template <typename T>
void scatter_chunks(const T* row, int64_t size, int64_t tiles, int64_t stride, T* out) {
  if (size == 12) {
    for (int64_t t = 0; t < tiles; ++t) std::memcpy(out + t * stride, row + t * 12, 12 * sizeof(T));
    return;
  }
  for (int64_t t = 0; t < tiles; ++t) std::memcpy(out + t * stride, row + t * size, size * sizeof(T));
}

// features.0's rows of tiles (3 channels, 4x4 tiles) from an NCHW image, 16 pixels at a time in
// AVX-512: each channel's 16 values converted in one register, then each tile's 12 values
// (4 pixels x 3 channels) gathered by one permutation and stored under a mask. 2x the rate of the
// portable loop below, which converts, interleaves and scatters in three passes over each row.
#define ALEXNET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
bool has_avx512bw_vl() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

ALEXNET_AVX512 inline __m512i convert16(const Quantizer& q, __m512 a) {  // 16 x int32 in [0, 255]
  // max_ps gives its second operand for a NaN: lo, as std::max(lo, NaN) above.
  const __m512 r = _mm512_min_ps(_mm512_set1_ps(q.hi), _mm512_max_ps(_mm512_mul_ps(a, _mm512_set1_ps(q.inverse)),
                                                                   _mm512_set1_ps(q.lo)));
  const __m512 rounded = _mm512_roundscale_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_cvttps_epi32(_mm512_add_ps(rounded, _mm512_set1_ps(q.zero)));
}

ALEXNET_AVX512 inline __m512i convert16(const Bf16Rounder&, __m512 a) {  // 16 x int32, bf16 bits
  const __m512i u = _mm512_castps_si512(a);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), odd), 16);
  return _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
}

// One row of features.0's tiles: tile t's 12 values (pixel 4t + k / 3 - padding of the image row,
// channel k % 3; `fill` outside the row) at out + t * 48, for t < tiles. planes: the row's three
// channels, w values each.
template <typename Convert>
ALEXNET_AVX512 void tile_row_3x4(const Convert& f, const float* const planes[3], int64_t w, int64_t padding,
                                 int64_t tiles, typename Convert::Out fill, typename Convert::Out* out) {
  using T = typename Convert::Out;
  // Lane k of tile j's permutation: pixel 4j + k / 3 of channel k % 3, from (R | G) and B.
  static const auto indices = [] {
    std::array<std::array<int16_t, 32>, 4> idx{};
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 12; ++k) idx[j][k] = static_cast<int16_t>((k % 3) * 16 + 4 * j + k / 3);
    return idx;
  }();
  const __m512i fill32 = _mm512_set1_epi32(fill);
  for (int64_t t0 = 0; t0 < tiles; t0 += 4) {
    const int64_t x0 = 4 * t0 - padding;  // the image column of the first of 16 pixels
    __mmask16 inside = 0xFFFF;
    if (x0 < 0) inside &= static_cast<__mmask16>(0xFFFF << -x0);
    if (x0 + 16 > w) inside &= static_cast<__mmask16>(x0 >= w ? 0 : 0xFFFF >> (x0 + 16 - w));
    __m256i channel[3];
    for (int c = 0; c < 3; ++c) {
      const __m512 a = _mm512_maskz_loadu_ps(inside, planes[c] + x0);
      channel[c] = _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(fill32, inside, convert16(f, a)));
    }
    const __m512i rg = _mm512_inserti64x4(_mm512_castsi256_si512(channel[0]), channel[1], 1);
    const __m512i b = _mm512_castsi256_si512(channel[2]);
    for (int j = 0; j < 4 && t0 + j < tiles; ++j) {
      const __m512i tile = _mm512_permutex2var_epi16(rg, _mm512_loadu_si512(indices[j].data()), b);
      T* dst = out + (t0 + j) * 48;
      if constexpr (std::is_same_v<T, uint16_t>) {
        _mm256_mask_storeu_epi16(dst, 0x0FFF, _mm512_castsi512_si256(tile));
      } else {
        _mm256_mask_storeu_epi8(dst, 0x0FFF, _mm512_cvtepi16_epi8(tile));
      }
    }
  }
}

// input (N, C, H, W) float32, any layout -> dst (N, H, W, C), each value through f: read once, in the
// input's own layout (an NCHW image block by block, plane by plane, then interleaved).
template <typename Convert>
void to_channels_last(const torch::Tensor& input, const Convert& f, typename Convert::Out* dst) {
  using T = typename Convert::Out;
  const int64_t channels = input.size(1), pixels = input.size(2) * input.size(3);
  if (input.is_contiguous(torch::MemoryFormat::ChannelsLast) || channels > kMaxChannels) {
    const auto x = input.contiguous(torch::MemoryFormat::ChannelsLast);  // (N, H, W, C) in memory
    const float* src = x.data_ptr<float>();
    at::parallel_for(0, x.numel(), kBlock * kMaxChannels,
                     [&](int64_t begin, int64_t end) { convert(f, src + begin, dst + begin, end - begin); });
    return;
  }
  const auto x = input.contiguous();  // (N, C, H, W)
  const float* src = x.data_ptr<float>();
  const int64_t blocks = (pixels + kBlock - 1) / kBlock;
  at::parallel_for(0, input.size(0) * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> planes(kMaxChannels * kBlock);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, first = (task % blocks) * kBlock, count = std::min(kBlock, pixels - first);
      for (int64_t c = 0; c < channels; ++c)
        convert(f, src + (n * channels + c) * pixels + first, planes.data() + c * kBlock, count);
      interleave(planes.data(), kBlock, channels, count, dst + (n * pixels + first) * channels);  // (count, C)
    }
  });
}

// An image batch (N, C, H, W) at `image`: NCHW where `planar`, else (N, H, W, C), each value through
// f -> dst (N, tiles_h, tiles_w, C * block^2), `fill` outside the image (model/quantize.h).
template <typename Src, typename Convert>
void to_tiles(const Src* image, bool planar, const std::array<int64_t, 4>& shape, const Convert& f,
              typename Convert::Out fill, const SpaceToDepth& g, typename Convert::Out* dst) {
  using T = typename Convert::Out;
  const auto [n, channels, h, w] = shape;
  const int64_t b = g.block, tile_size = channels * b * b, row_size = g.tiles_w * b * channels;  // a padded row: (x, c)
  // Columns of the image a padded row holds: from column `padding` of the row on.
  const int64_t count = std::max<int64_t>(0, std::min(w, g.tiles_w * b - g.padding));
  const bool fast = std::is_same_v<Src, float> && sizeof(T) < 4 && planar && channels == 3 && b == 4 &&
                    g.padding < 16 && has_avx512bw_vl();
  at::parallel_for(0, n * g.tiles_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> row(row_size), planes(planar ? channels * w : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t image_index = task / g.tiles_h, ty = task % g.tiles_h;
      T* tiles = dst + task * g.tiles_w * tile_size;  // the row of tiles ty: (tiles_w, b, b, C)
      for (int64_t dy = 0; dy < b; ++dy) {
        const int64_t r = ty * b + dy - g.padding;  // the image's row
        if (r < 0 || r >= h || count == 0) {
          std::fill(row.begin(), row.end(), fill);
        } else {
          T* pixels = row.data() + g.padding * channels;
          if constexpr (std::is_same_v<Src, float> && sizeof(T) < 4) {
            if (fast) {
              const float* row_of[3];
              for (int c = 0; c < 3; ++c) row_of[c] = image + ((image_index * 3 + c) * h + r) * w;
              tile_row_3x4(f, row_of, w, g.padding, g.tiles_w, fill, tiles + dy * 12);
              continue;
            }
          }
          if (!planar) {
            convert(f, image + ((image_index * h + r) * w) * channels, pixels, count * channels);
          } else {
            for (int64_t c = 0; c < channels; ++c)
              convert(f, image + ((image_index * channels + c) * h + r) * w, planes.data() + c * w, count);
            interleave(planes.data(), w, channels, count, pixels);
          }
          std::fill(row.begin(), row.begin() + g.padding * channels, fill);
          std::fill(pixels + count * channels, row.data() + row_size, fill);
        }
        scatter_chunks(row.data(), b * channels, g.tiles_w, tile_size, tiles + dy * b * channels);
      }
    }
  });
}

}  // namespace

torch::Tensor quantize_channels_last(const torch::Tensor& input, double scale, int64_t zero_point) {
  check_images(input, "quantize");
  const Quantizer q = quantizer(scale, zero_point);
  if (aten_is_fbgemm())
    return at::quantize_per_tensor(input.contiguous(torch::MemoryFormat::ChannelsLast), scale, zero_point,
                                   torch::kQUInt8);
  auto y = at::_empty_affine_quantized(input.sizes(), input.options().dtype(torch::kQUInt8), scale, zero_point,
                                       torch::MemoryFormat::ChannelsLast);  // (N, C, H, W), channels-last
  to_channels_last(input, q, reinterpret_cast<uint8_t*>(y.data_ptr()));
  return y;
}

torch::Tensor bf16_channels_last(const torch::Tensor& input) {
  check_images(input, "bf16 conversion");
  auto y = torch::empty(input.sizes(), input.options().dtype(torch::kBFloat16).memory_format(torch::MemoryFormat::ChannelsLast));
  to_channels_last(input, Bf16Rounder{}, reinterpret_cast<uint16_t*>(y.data_ptr()));
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
  check_images(input, "quantize");
  const Quantizer q = quantizer(scale, zero_point);
  const std::array<int64_t, 4> shape{input.size(0), input.size(1), input.size(2), input.size(3)};
  auto y = at::_empty_affine_quantized({shape[0], shape[1] * g.block * g.block, g.tiles_h, g.tiles_w},
                                       input.options().dtype(torch::kQUInt8), scale, zero_point,
                                       torch::MemoryFormat::ChannelsLast);
  auto* dst = reinterpret_cast<uint8_t*>(y.data_ptr());
  const auto fill = static_cast<uint8_t>(zero_point);
  if (aten_is_fbgemm()) {  // the image's bytes from ATen (channels-last), then cut into tiles
    const auto x = at::quantize_per_tensor(input.contiguous(torch::MemoryFormat::ChannelsLast), scale, zero_point,
                                           torch::kQUInt8);
    to_tiles(reinterpret_cast<const uint8_t*>(x.data_ptr()), false, shape, Copy<uint8_t>{}, fill, g, dst);
    return y;
  }
  const bool planar = !input.is_contiguous(torch::MemoryFormat::ChannelsLast);
  const auto x = input.contiguous(planar ? torch::MemoryFormat::Contiguous : torch::MemoryFormat::ChannelsLast);
  to_tiles(x.data_ptr<float>(), planar, shape, q, fill, g, dst);
  return y;
}

torch::Tensor bf16_space_to_depth(const torch::Tensor& input, const SpaceToDepth& g) {
  check_images(input, "bf16 conversion");
  const std::array<int64_t, 4> shape{input.size(0), input.size(1), input.size(2), input.size(3)};
  auto y = torch::empty({shape[0], shape[1] * g.block * g.block, g.tiles_h, g.tiles_w},
                        input.options().dtype(torch::kBFloat16).memory_format(torch::MemoryFormat::ChannelsLast));
  const bool planar = !input.is_contiguous(torch::MemoryFormat::ChannelsLast);
  const auto x = input.contiguous(planar ? torch::MemoryFormat::Contiguous : torch::MemoryFormat::ChannelsLast);
  to_tiles(x.data_ptr<float>(), planar, shape, Bf16Rounder{}, uint16_t{0}, g, reinterpret_cast<uint16_t*>(y.data_ptr()));
  return y;
}

void space_to_depth_into(const torch::Tensor& input, const SpaceToDepth& g, float* dst) {
  check_images(input, "space to depth");
  const std::array<int64_t, 4> shape{input.size(0), input.size(1), input.size(2), input.size(3)};
  const bool planar = !input.is_contiguous(torch::MemoryFormat::ChannelsLast);
  const auto x = input.contiguous(planar ? torch::MemoryFormat::Contiguous : torch::MemoryFormat::ChannelsLast);
  to_tiles(x.data_ptr<float>(), planar, shape, Copy<float>{}, 0.0f, g, dst);
}

namespace {

// w: (out, C, k, k) plain values -> (out, C * block^2, kernel, kernel), 0 past k (no contribution).
torch::Tensor rearrange_weight(const torch::Tensor& w, const SpaceToDepth& g) {
  const int64_t out = w.size(0), channels = w.size(1), k = w.size(2), b = g.block, kk = g.kernel;
  auto padded = torch::zeros({out, channels, kk * b, kk * b}, w.options());
  padded.slice(2, 0, k).slice(3, 0, k).copy_(w);
  // (out, C, ky, dy, kx, dx) -> (out, dy, dx, C, ky, kx)
  return padded.reshape({out, channels, kk, b, kk, b})
      .permute({0, 3, 5, 1, 2, 4})
      .reshape({out, b * b * channels, kk, kk})
      .contiguous();
}

}  // namespace

torch::Tensor space_to_depth_weight(const torch::Tensor& weight, const SpaceToDepth& g) {
  const bool quantized = weight.is_quantized();
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3) && weight.size(2) <= g.kernel * g.block &&
                  (quantized ? weight.scalar_type() == torch::kQInt8 && weight.qscheme() == torch::kPerChannelAffine &&
                                   weight.q_per_channel_axis() == 0
                             : weight.is_floating_point()),
              "space to depth: expected a square floating-point weight or qint8 one per output channel, at most ",
              g.kernel * g.block, " wide, got ", weight.sizes(), " ", weight.scalar_type());
  if (!quantized) return rearrange_weight(weight, g);
  return at::_make_per_channel_quantized_tensor(rearrange_weight(weight.int_repr(), g), weight.q_per_channel_scales(),
                                                weight.q_per_channel_zero_points(), 0);
}

}  // namespace alexnet
