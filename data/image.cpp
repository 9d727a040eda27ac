#include "data/image.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace alexnet::data {

std::pair<int64_t, int64_t> resized_shorter_side(int64_t height, int64_t width, int64_t size) {
  TORCH_CHECK(height > 0 && width > 0, "resize: empty image ", height, "x", width);
  TORCH_CHECK(size > 0, "resize: size must be positive, got ", size);
  const bool portrait = width <= height;
  const int64_t shorter = portrait ? width : height;
  const int64_t longer = portrait ? height : width;
  // torchvision: int(size * long / short), a float division truncated.
  const auto new_long = static_cast<int64_t>(static_cast<double>(size) * longer / shorter);
  return portrait ? std::make_pair(new_long, size) : std::make_pair(size, new_long);
}

namespace {

// PIL's fixed-point precision for 8-bit resampling (Resample.c: 32 - 8 - 2).
constexpr int kPrecisionBits = 22;

double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Filter taps for one axis, as PIL's precompute_coeffs + normalize_coeffs_8bpc.
struct Taps {
  int ksize = 0;
  std::vector<int> first;   // first source index per output index
  std::vector<int> count;   // number of taps per output index
  std::vector<int32_t> k;   // (out_size, ksize) fixed-point weights
};

Taps make_taps(int in_size, double in0, double in1, int out_size) {
  const double scale = (in1 - in0) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;  // bilinear support is 1
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.k.assign(static_cast<size_t>(out_size) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    // PIL rounds with a truncating cast, then clamps.
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    xmax = std::min(xmax, t.ksize);
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = triangle((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      t.k[static_cast<size_t>(xx) * t.ksize + x] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = std::max(xmax, 0);
  }
  return t;
}

inline uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// The vertical pass is built for AVX2 and for baseline x86-64, picked at load
// time: integer arithmetic, so both give the same pixels.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ALEXNET_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ALEXNET_SIMD_CLONES
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define ALEXNET_HAVE_SSE41_PATH 1
#include <immintrin.h>

// RGB along x with SSE4.1: one pixel's three channels (plus a spare lane) per
// 32-bit multiply-add, in the same integer arithmetic as the scalar loop, so
// the pixels are identical.
__attribute__((target("sse4.1"))) void resample_row_rgb_sse41(const uint8_t* src, const Taps& t,
                                                               int out_w, uint8_t* dst) {
  const __m128i half = _mm_set1_epi32(1 << (kPrecisionBits - 1));
  for (int xx = 0; xx < out_w; ++xx) {
    const int32_t* k = &t.k[static_cast<size_t>(xx) * t.ksize];
    const uint8_t* s = src + static_cast<size_t>(t.first[xx]) * 3;
    const int count = t.count[xx];
    __m128i acc = half;
    int x = 0;
    // Each load reads 4 bytes (R, G, B and the next pixel's R, weighted but unused);
    // the last tap is loaded bytewise so nothing past the row is touched.
    for (; x + 1 < count; ++x) {
      int32_t word;
      std::memcpy(&word, s + 3 * x, 4);
      const __m128i px = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(word));
      acc = _mm_add_epi32(acc, _mm_mullo_epi32(px, _mm_set1_epi32(k[x])));
    }
    if (x < count) {
      const __m128i px = _mm_setr_epi32(s[3 * x], s[3 * x + 1], s[3 * x + 2], 0);
      acc = _mm_add_epi32(acc, _mm_mullo_epi32(px, _mm_set1_epi32(k[x])));
    }
    alignas(16) int32_t lanes[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(lanes), acc);
    dst[3 * xx] = clip8(lanes[0]);
    dst[3 * xx + 1] = clip8(lanes[1]);
    dst[3 * xx + 2] = clip8(lanes[2]);
  }
}
#endif

// Resamples along x. in: rows [row0, row0 + rows) of a (H, in_w, C) image whose
// rows are in_stride bytes apart.
void resample_horizontal(const uint8_t* in, size_t in_stride, int row0, int rows, int channels,
                         const Taps& t, int out_w, uint8_t* out) {
#ifdef ALEXNET_HAVE_SSE41_PATH
  static const bool sse41 = __builtin_cpu_supports("sse4.1");
  if (channels == 3 && sse41) {
    for (int y = 0; y < rows; ++y)
      resample_row_rgb_sse41(in + static_cast<size_t>(row0 + y) * in_stride, t, out_w,
                             out + static_cast<size_t>(y) * out_w * 3);
    return;
  }
#endif
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = in + static_cast<size_t>(row0 + y) * in_stride;
    uint8_t* dst = out + static_cast<size_t>(y) * out_w * channels;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &t.k[static_cast<size_t>(xx) * t.ksize];
      const uint8_t* s = src + static_cast<size_t>(t.first[xx]) * channels;
      for (int c = 0; c < channels; ++c) {
        int32_t acc = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < t.count[xx]; ++x) acc += s[x * channels + c] * k[x];
        dst[xx * channels + c] = clip8(acc);
      }
    }
  }
}

// Resamples along y. in: (in_h, W, C) with rows in_stride bytes apart; first
// indices are relative to row_offset.
ALEXNET_SIMD_CLONES
void resample_vertical(const uint8_t* in, size_t in_stride, int width, int channels,
                       const Taps& t, int row_offset, int out_h, uint8_t* out) {
  const size_t row_size = static_cast<size_t>(width) * channels;
  std::vector<int32_t> acc(row_size);
  for (int yy = 0; yy < out_h; ++yy) {
    const int32_t* k = &t.k[static_cast<size_t>(yy) * t.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < t.count[yy]; ++y) {
      const uint8_t* row = in + static_cast<size_t>(t.first[yy] - row_offset + y) * in_stride;
      const int32_t ky = k[y];
      for (size_t i = 0; i < row_size; ++i) acc[i] += row[i] * ky;
    }
    uint8_t* dst = out + static_cast<size_t>(yy) * row_size;
    for (size_t i = 0; i < row_size; ++i) dst[i] = clip8(acc[i]);
  }
}

void check_image(const torch::Tensor& image, const char* what) {
  TORCH_CHECK(image.dim() == 3 && image.scalar_type() == torch::kUInt8, what,
              ": expected an (H, W, C) uint8 image, got ", image.sizes(), " ",
              image.scalar_type());
  TORCH_CHECK(image.size(0) > 0 && image.size(1) > 0, what, ": empty image");
}

}  // namespace

torch::Tensor resize_bilinear_aa_box(const torch::Tensor& image_in, int64_t out_height,
                                     int64_t out_width, double x0, double y0, double x1,
                                     double y1) {
  check_image(image_in, "resize");
  TORCH_CHECK(out_height > 0 && out_width > 0, "resize: output size must be positive, got ",
              out_height, "x", out_width);
  // Rows may be apart (a crop of a larger image); pixels within a row must be packed.
  const torch::Tensor image =
      image_in.stride(2) == 1 && image_in.stride(1) == image_in.size(2) && image_in.stride(0) > 0
          ? image_in
          : image_in.contiguous();
  const auto in_stride = static_cast<size_t>(image.stride(0));
  const int in_h = static_cast<int>(image.size(0));
  const int in_w = static_cast<int>(image.size(1));
  const int channels = static_cast<int>(image.size(2));
  TORCH_CHECK(x0 >= 0 && y0 >= 0 && x1 <= in_w && y1 <= in_h && x1 > x0 && y1 > y0,
              "resize: box (", x0, ", ", y0, ", ", x1, ", ", y1, ") outside the ", in_w, "x",
              in_h, " image");
  const int out_w = static_cast<int>(out_width);
  const int out_h = static_cast<int>(out_height);

  // PIL skips an axis whose size and box are unchanged.
  const bool need_h = out_w != in_w || x0 != 0 || x1 != out_w;
  const bool need_v = out_h != in_h || y0 != 0 || y1 != out_h;
  if (!need_h && !need_v) return image.is_contiguous() ? image.clone() : image.contiguous();

  const Taps th = make_taps(in_w, x0, x1, out_w);
  const Taps tv = make_taps(in_h, y0, y1, out_h);
  // Rows the vertical pass will read; the horizontal pass only computes those.
  const int row_first = tv.first[0];
  const int row_last = tv.first[out_h - 1] + tv.count[out_h - 1];

  torch::Tensor current = image;
  size_t current_stride = in_stride;
  int current_offset = 0;
  if (need_h) {
    torch::Tensor tmp = torch::empty({row_last - row_first, out_w, channels}, torch::kUInt8);
    resample_horizontal(image.data_ptr<uint8_t>(), in_stride, row_first, row_last - row_first,
                        channels, th, out_w, tmp.data_ptr<uint8_t>());
    current = tmp;
    current_stride = static_cast<size_t>(out_w) * channels;
    current_offset = row_first;
  }
  if (!need_v) return current.contiguous();
  torch::Tensor out = torch::empty({out_h, current.size(1), channels}, torch::kUInt8);
  resample_vertical(current.data_ptr<uint8_t>(), current_stride, static_cast<int>(current.size(1)),
                    channels, tv, current_offset, out_h, out.data_ptr<uint8_t>());
  return out;
}

torch::Tensor resize_bilinear_aa(const torch::Tensor& image, int64_t out_height,
                                 int64_t out_width) {
  check_image(image, "resize");
  return resize_bilinear_aa_box(image, out_height, out_width, 0.0, 0.0,
                                static_cast<double>(image.size(1)),
                                static_cast<double>(image.size(0)));
}

torch::Tensor center_crop(const torch::Tensor& image_in, int64_t crop_height, int64_t crop_width) {
  check_image(image_in, "center crop");
  TORCH_CHECK(crop_height > 0 && crop_width > 0, "center crop: size must be positive, got ",
              crop_height, "x", crop_width);
  torch::Tensor image = image_in;
  int64_t h = image.size(0), w = image.size(1);
  if (crop_height > h || crop_width > w) {
    // torchvision pads with zeros: left/top get the floor half, right/bottom the rest.
    const int64_t pad_left = crop_width > w ? (crop_width - w) / 2 : 0;
    const int64_t pad_top = crop_height > h ? (crop_height - h) / 2 : 0;
    const int64_t pad_right = crop_width > w ? (crop_width - w + 1) / 2 : 0;
    const int64_t pad_bottom = crop_height > h ? (crop_height - h + 1) / 2 : 0;
    torch::Tensor padded =
        torch::zeros({h + pad_top + pad_bottom, w + pad_left + pad_right, image.size(2)},
                     torch::kUInt8);
    padded.narrow(0, pad_top, h).narrow(1, pad_left, w).copy_(image);
    image = padded;
    h = image.size(0);
    w = image.size(1);
    if (crop_height == h && crop_width == w) return image;
  }
  // Python's round() rounds half to even; nearbyint does too in the default mode.
  const auto top = static_cast<int64_t>(std::nearbyint((h - crop_height) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((w - crop_width) / 2.0));
  return image.narrow(0, top, crop_height).narrow(1, left, crop_width).contiguous();
}

torch::Tensor to_normalized_chw(const torch::Tensor& image, const Rgb& mean, const Rgb& std) {
  check_image(image, "normalize");
  TORCH_CHECK(image.size(2) == 3, "normalize: expected 3 channels, got ", image.size(2));
  auto m = torch::tensor({mean[0], mean[1], mean[2]}).view({3, 1, 1});
  auto s = torch::tensor({std[0], std[1], std[2]}).view({3, 1, 1});
  // (H, W, 3) uint8 -> (3, H, W) float32 in [0, 1], then normalized.
  torch::Tensor x = image.permute({2, 0, 1}).contiguous().to(torch::kFloat32).div(255);
  return x.sub_(m).div_(s);
}

torch::Tensor eval_transform(const torch::Tensor& image, const EvalTransformOptions& options) {
  check_image(image, "eval transform");
  auto [h, w] = resized_shorter_side(image.size(0), image.size(1), options.resize_size());
  torch::Tensor resized = (h == image.size(0) && w == image.size(1))
                              ? image
                              : resize_bilinear_aa(image, h, w);
  torch::Tensor cropped = center_crop(resized, options.crop_size(), options.crop_size());
  return to_normalized_chw(cropped, options.mean(), options.std());
}

}  // namespace alexnet::data
