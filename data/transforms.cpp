#include "data/transforms.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace alexnet::data {

// ------------------------------------------------------------------- SampleRng

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

SampleRng::SampleRng(uint64_t seed, int64_t epoch, int64_t index) {
  // Hash the three numbers in turn so nearby (epoch, index) pairs get unrelated streams.
  uint64_t s = seed;
  uint64_t h = splitmix64(s);
  s = h ^ static_cast<uint64_t>(epoch);
  h = splitmix64(s);
  s = h ^ static_cast<uint64_t>(index);
  state_ = splitmix64(s);
}

uint64_t SampleRng::next_u64() { return splitmix64(state_); }

double SampleRng::uniform(double lo, double hi) {
  const double u = static_cast<double>(next_u64() >> 11) * 0x1.0p-53;  // [0, 1)
  return lo + (hi - lo) * u;
}

int64_t SampleRng::uniform_int(int64_t lo, int64_t hi) {
  TORCH_CHECK(hi >= lo, "SampleRng: empty range [", lo, ", ", hi, "]");
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  // Rejection sampling: no modulo bias.
  const uint64_t limit = span == 0 ? 0 : (~uint64_t{0} / span) * span;
  uint64_t x = next_u64();
  while (limit != 0 && x >= limit) x = next_u64();
  return lo + static_cast<int64_t>(span == 0 ? x : x % span);
}

double SampleRng::normal(double mean, double std) {
  const double u1 = 1.0 - uniform(0.0, 1.0);  // (0, 1]: log is finite
  const double u2 = uniform(0.0, 1.0);
  return mean + std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// -------------------------------------------------------------- random crops

CropBox random_resized_crop_box(int64_t height, int64_t width, SampleRng& rng, double scale_min,
                                double scale_max, double ratio_min, double ratio_max) {
  TORCH_CHECK(height > 0 && width > 0, "random resized crop: empty image ", height, "x", width);
  const double area = static_cast<double>(height) * width;
  const double log_min = std::log(ratio_min);
  const double log_max = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(scale_min, scale_max);
    const double aspect = std::exp(rng.uniform(log_min, log_max));
    // Python's round(): half to even, like nearbyint in the default rounding mode.
    const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
    const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int64_t top = rng.uniform_int(0, height - h);
      const int64_t left = rng.uniform_int(0, width - w);
      return {top, left, h, w};
    }
  }
  // Fallback: the central crop, its ratio clamped to the allowed range.
  const double in_ratio = static_cast<double>(width) / height;
  int64_t w = width, h = height;
  if (in_ratio < std::min(ratio_min, ratio_max)) {
    h = static_cast<int64_t>(std::nearbyint(w / std::min(ratio_min, ratio_max)));
  } else if (in_ratio > std::max(ratio_min, ratio_max)) {
    w = static_cast<int64_t>(std::nearbyint(h * std::max(ratio_min, ratio_max)));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

Rgb pca_lighting_offset(SampleRng& rng, double alpha_std) {
  Rgb offset = {0.f, 0.f, 0.f};
  if (alpha_std == 0.0) return offset;
  std::array<double, 3> alpha{};
  for (auto& a : alpha) a = rng.normal(0.0, alpha_std);
  for (int c = 0; c < 3; ++c) {
    double sum = 0.0;
    for (int j = 0; j < 3; ++j)
      sum += kImageNetEigenvectors[c][j] * alpha[j] * kImageNetEigenvalues[j];
    offset[c] = static_cast<float>(sum);
  }
  return offset;
}

torch::Tensor padded_crop(const torch::Tensor& image, int64_t padding, int64_t top, int64_t left) {
  TORCH_CHECK(image.dim() == 3 && image.scalar_type() == torch::kUInt8,
              "padded crop: expected an (H, W, C) uint8 image, got ", image.sizes());
  const int64_t h = image.size(0), w = image.size(1);
  TORCH_CHECK(padding >= 0 && top >= 0 && left >= 0 && top <= 2 * padding && left <= 2 * padding,
              "padded crop: offset (", top, ", ", left, ") outside padding ", padding);
  if (top == padding && left == padding) return image;
  torch::Tensor out = torch::zeros_like(image);  // (H, W, C) uint8, zero fill
  // Source rows/columns that land inside the output window.
  const int64_t dy = top - padding, dx = left - padding;  // output (y, x) reads image (y + dy, x + dx)
  const int64_t y0 = std::max<int64_t>(0, -dy), y1 = std::min(h, h - dy);
  const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min(w, w - dx);
  if (y1 > y0 && x1 > x0)
    out.narrow(0, y0, y1 - y0).narrow(1, x0, x1 - x0)
        .copy_(image.narrow(0, y0 + dy, y1 - y0).narrow(1, x0 + dx, x1 - x0));
  return out;
}

torch::Tensor rgb_to_luma(const torch::Tensor& image_in) {
  TORCH_CHECK(image_in.dim() == 3 && image_in.size(2) == 3 && image_in.scalar_type() == torch::kUInt8,
              "rgb to luma: expected an (H, W, 3) uint8 image, got ", image_in.sizes());
  const torch::Tensor image = image_in.contiguous();
  torch::Tensor out = torch::empty({image.size(0), image.size(1), 1}, torch::kUInt8);
  const uint8_t* s = image.data_ptr<uint8_t>();
  uint8_t* d = out.data_ptr<uint8_t>();
  const int64_t n = image.size(0) * image.size(1);
  for (int64_t i = 0; i < n; ++i, s += 3)
    d[i] = static_cast<uint8_t>((s[0] * 19595u + s[1] * 38470u + s[2] * 7471u + 0x8000u) >> 16);
  return out;
}

// -------------------------------------------------------------------- recipes

std::pair<Rgb, Rgb> dataset_statistics(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::kMnist: return {{0.1307f, 0.1307f, 0.1307f}, {0.3081f, 0.3081f, 0.3081f}};
    case DatasetKind::kFashionMnist:
      return {{0.2860f, 0.2860f, 0.2860f}, {0.3530f, 0.3530f, 0.3530f}};
    case DatasetKind::kCifar10:
      return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
    case DatasetKind::kCifar100:
      return {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
    case DatasetKind::kImageFolder: break;
  }
  return {kImageNetMean, kImageNetStd};
}

TransformOptions default_transform_options(DatasetKind kind, bool train) {
  TransformOptions o;
  o.train(train);
  const auto [mean, std] = dataset_statistics(kind);
  o.mean(mean).std(std);
  if (kind == DatasetKind::kImageFolder) return o;  // torchvision's ImageNet reference recipe
  // Small images: 64 px is the smallest power of two AlexNet's 6x6 pooling accepts (>= 63).
  o.image_size(64).resize_size(64).train_crop(TrainCrop::kPadded);
  const bool cifar = kind == DatasetKind::kCifar10 || kind == DatasetKind::kCifar100;
  o.crop_padding(cifar ? 4 : 2);
  o.flip(kind != DatasetKind::kMnist);  // a mirrored digit is another symbol
  return o;
}

// -------------------------------------------------------------------- Pipeline

Pipeline::Pipeline(TransformOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  TORCH_CHECK(o.image_size() > 0, "transform: image_size must be positive, got ", o.image_size());
  TORCH_CHECK(o.resize_size() > 0, "transform: resize_size must be positive, got ",
              o.resize_size());
  TORCH_CHECK(o.in_channels() == 1 || o.in_channels() == 3,
              "transform: in_channels must be 1 or 3, got ", o.in_channels());
  TORCH_CHECK(0 < o.scale_min() && o.scale_min() <= o.scale_max(),
              "transform: bad scale range (", o.scale_min(), ", ", o.scale_max(), ")");
  TORCH_CHECK(0 < o.ratio_min() && o.ratio_min() <= o.ratio_max(),
              "transform: bad ratio range (", o.ratio_min(), ", ", o.ratio_max(), ")");
  TORCH_CHECK(o.crop_padding() >= 0, "transform: negative crop padding ", o.crop_padding());
  TORCH_CHECK(o.lighting_std() >= 0, "transform: negative lighting std ", o.lighting_std());
  for (int c = 0; c < 3; ++c)
    TORCH_CHECK(o.std()[c] > 0, "transform: std[", c, "] must be positive, got ", o.std()[c]);
}

std::array<int64_t, 3> Pipeline::output_shape() const {
  return {options_.in_channels(), options_.image_size(), options_.image_size()};
}

namespace {

// Resize(size) + CenterCrop(crop), skipping the resize when it changes nothing.
// The crop is a view (no copy) unless it needs padding.
torch::Tensor resize_center_crop(const torch::Tensor& image, int64_t size, int64_t crop) {
  auto [h, w] = resized_shorter_side(image.size(0), image.size(1), size);
  const torch::Tensor resized =
      (h == image.size(0) && w == image.size(1)) ? image : resize_bilinear_aa(image, h, w);
  if (crop > h || crop > w) return center_crop(resized, crop, crop);
  // center_crop's offsets: Python's round(), half to even.
  const auto top = static_cast<int64_t>(std::nearbyint((h - crop) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((w - crop) / 2.0));
  return resized.narrow(0, top, crop).narrow(1, left, crop);
}

}  // namespace

void Pipeline::apply_into(const torch::Tensor& image_in, SampleRng& rng, float* out,
                          bool channels_last) const {
  const auto& o = options_;
  TORCH_CHECK(image_in.dim() == 3 && image_in.scalar_type() == torch::kUInt8 &&
                  (image_in.size(2) == 1 || image_in.size(2) == 3) && image_in.size(0) > 0 &&
                  image_in.size(1) > 0,
              "transform: expected an (H, W, 1 or 3) uint8 image, got ", image_in.sizes(), " ",
              image_in.scalar_type());
  torch::Tensor image = image_in;
  if (o.in_channels() == 1 && image.size(2) == 3) image = rgb_to_luma(image);

  // Geometry, on uint8 like torchvision on PIL images. (S, S, C) afterwards.
  const int64_t s = o.image_size();
  if (o.train() && o.train_crop() == TrainCrop::kRandomResized) {
    const CropBox box = random_resized_crop_box(image.size(0), image.size(1), rng, o.scale_min(),
                                                o.scale_max(), o.ratio_min(), o.ratio_max());
    // F.resized_crop crops, then resizes the cropped image: the filter never
    // reads pixels outside the box, so crop first rather than resize with a box.
    image = resize_bilinear_aa(
        image.narrow(0, box.top, box.height).narrow(1, box.left, box.width), s, s);
  } else {
    if (o.train() && o.train_crop() == TrainCrop::kPadded && o.crop_padding() > 0) {
      const int64_t top = rng.uniform_int(0, 2 * o.crop_padding());
      const int64_t left = rng.uniform_int(0, 2 * o.crop_padding());
      image = padded_crop(image, o.crop_padding(), top, left);
    }
    image = resize_center_crop(image, o.resize_size(), s);
  }
  // (S, S, C) with packed pixels; rows may be apart (a crop view).
  if (image.stride(2) != 1 || image.stride(1) != image.size(2)) image = image.contiguous();
  const bool flip = o.train() && o.flip() && rng.coin();
  Rgb offset = {0.f, 0.f, 0.f};
  if (o.train() && o.lighting_std() > 0 && o.in_channels() == 3)
    offset = pca_lighting_offset(rng, o.lighting_std());

  // ToTensor + (lighting) + Normalize through a per-channel table, computed in
  // torchvision's order: x / 255, (+ offset), - mean, / std, all in float32.
  const int64_t out_c = o.in_channels();
  const int64_t src_c = image.size(2);
  float table[3][256];
  for (int64_t c = 0; c < out_c; ++c) {
    const float mean = o.mean()[c], std = o.std()[c];
    for (int v = 0; v < 256; ++v) {
      // Adding a zero offset leaves x unchanged, so evaluation stays bit-exact.
      const float x = static_cast<float>(v) / 255.0f + offset[c];
      table[c][v] = (x - mean) / std;
    }
  }
  const uint8_t* src = image.data_ptr<uint8_t>();
  const int64_t row_stride = image.stride(0);
  // Output element (c, y, x) lives at c * c_step + (y * s + x) * x_step.
  const int64_t c_step = channels_last ? 1 : s * s;
  const int64_t x_step = channels_last ? out_c : 1;
  for (int64_t c = 0; c < out_c; ++c) {
    const float* t = table[c];
    const int64_t sc = src_c == 1 ? 0 : c;  // grey images feed every channel
    for (int64_t y = 0; y < s; ++y) {
      const uint8_t* row = src + y * row_stride + sc;
      float* dst = out + c * c_step + y * s * x_step;
      if (flip) {
        for (int64_t x = 0; x < s; ++x) dst[x * x_step] = t[row[(s - 1 - x) * src_c]];
      } else {
        for (int64_t x = 0; x < s; ++x) dst[x * x_step] = t[row[x * src_c]];
      }
    }
  }
}

torch::Tensor Pipeline::operator()(const torch::Tensor& image, SampleRng& rng) const {
  const auto shape = output_shape();
  torch::Tensor out = torch::empty({shape[0], shape[1], shape[2]}, torch::kFloat32);
  apply_into(image, rng, out.data_ptr<float>());
  return out;
}

}  // namespace alexnet::data
