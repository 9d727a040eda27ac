// Training and evaluation transforms with torchvision's semantics, from an
// (H, W, C) uint8 image to a (C, S, S) float32 model input. Random choices
// come from a per-sample generator so a sample's augmentation depends only on
// (seed, epoch, index), never on which thread ran it.
#pragma once

#include "data/dataset.h"
#include "data/image.h"

#include <torch/torch.h>

#include <array>
#include <cstdint>

namespace alexnet::data {

/// A small, fast random stream (SplitMix64) for one sample's augmentation.
class SampleRng {
 public:
  /// The stream of sample `index` in `epoch` of a run seeded with `seed`.
  SampleRng(uint64_t seed, int64_t epoch, int64_t index);
  explicit SampleRng(uint64_t state) : state_(state) {}

  uint64_t next_u64();
  /// Uniform in [lo, hi), 53-bit resolution.
  double uniform(double lo, double hi);
  /// Uniform integer in [lo, hi] (both included).
  int64_t uniform_int(int64_t lo, int64_t hi);
  /// Bernoulli(0.5).
  bool coin() { return (next_u64() >> 63) != 0; }
  /// Normal(mean, std), Box-Muller.
  double normal(double mean, double std);

 private:
  uint64_t state_;
};

/// A crop in pixels: rows [top, top + height), columns [left, left + width).
struct CropBox {
  int64_t top = 0;
  int64_t left = 0;
  int64_t height = 0;
  int64_t width = 0;
};

/// torchvision 0.14's RandomResizedCrop.get_params: up to 10 tries of an area
/// fraction uniform in [scale_min, scale_max] and an aspect ratio (w / h)
/// log-uniform in [ratio_min, ratio_max], sides rounded half to even; the
/// first box that fits gets a uniform position. Otherwise the central crop
/// with the ratio clamped to the range.
CropBox random_resized_crop_box(int64_t height, int64_t width, SampleRng& rng,
                                double scale_min = 0.08, double scale_max = 1.0,
                                double ratio_min = 3.0 / 4.0, double ratio_max = 4.0 / 3.0);

/// The AlexNet paper's PCA lighting noise, as in fb.resnet.torch: eigenvalues
/// and eigenvectors of ImageNet's RGB covariance (pixel values in [0, 1]).
constexpr std::array<float, 3> kImageNetEigenvalues = {0.2175f, 0.0188f, 0.0045f};
/// Rows are R, G, B; column j is eigenvector j.
constexpr std::array<std::array<float, 3>, 3> kImageNetEigenvectors = {{
    {-0.5675f, 0.7192f, 0.4009f},
    {-0.5808f, -0.0045f, -0.8140f},
    {-0.5836f, -0.6948f, 0.4203f},
}};

/// Per-channel offset (in [0, 1] pixel units) PCA lighting adds to an image:
/// sum_j eigvec[c][j] * alpha_j * eigval_j with alpha_j ~ N(0, alpha_std).
Rgb pca_lighting_offset(SampleRng& rng, double alpha_std);

/// How training crops.
enum class TrainCrop {
  /// RandomResizedCrop(image_size, scale, ratio): the ImageNet recipe.
  kRandomResized,
  /// RandomCrop(native size, padding=crop_padding) then Resize(resize_size) and
  /// CenterCrop(image_size): the usual small-image recipe.
  kPadded,
};

/// What a Pipeline does. The defaults are torchvision's ImageNet evaluation
/// transform; default_transform_options() gives each dataset's recipe.
struct TransformOptions {
  /// Random augmentation (crop, flip, lighting) on; off is the evaluation transform.
  TORCH_ARG(bool, train) = false;
  /// Side of the square output.
  TORCH_ARG(int64_t, image_size) = 224;
  /// Shorter side after Resize, before CenterCrop(image_size) (evaluation, and
  /// training with kPadded).
  TORCH_ARG(int64_t, resize_size) = 256;
  TORCH_ARG(TrainCrop, train_crop) = TrainCrop::kRandomResized;
  /// RandomResizedCrop's area fraction range.
  TORCH_ARG(double, scale_min) = 0.08;
  TORCH_ARG(double, scale_max) = 1.0;
  /// RandomResizedCrop's aspect ratio (width / height) range.
  TORCH_ARG(double, ratio_min) = 3.0 / 4.0;
  TORCH_ARG(double, ratio_max) = 4.0 / 3.0;
  /// Zero padding (pixels) of kPadded's random crop.
  TORCH_ARG(int64_t, crop_padding) = 4;
  /// RandomHorizontalFlip(0.5) when training.
  TORCH_ARG(bool, flip) = true;
  /// PCA lighting noise std when training (AlexNet paper: 0.1); 0 = off.
  TORCH_ARG(double, lighting_std) = 0.0;
  /// Output channels: 3 (grey images replicated) or 1 (colour images
  /// converted to luma like PIL's convert("L")).
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Normalize's mean and std; for 1 channel only the first entry is used.
  TORCH_ARG(Rgb, mean) = kImageNetMean;
  TORCH_ARG(Rgb, std) = kImageNetStd;
};

/// Mean and std of a dataset's training images (torchvision's usual values;
/// ImageNet's for image folders). Grey datasets repeat their value 3 times.
std::pair<Rgb, Rgb> dataset_statistics(DatasetKind kind);

/// The recipe for a dataset family:
///  image folders: train RandomResizedCrop(224) + flip; eval Resize(256) + CenterCrop(224);
///  (Fashion-)MNIST, CIFAR: resized to 64 px (AlexNet needs at least 63); train adds
///  RandomCrop(native, padding 2 for 28 px / 4 for 32 px) and, except for MNIST digits,
///  flips; normalised with the dataset's own mean and std.
TransformOptions default_transform_options(DatasetKind kind, bool train);

/// A transform built from TransformOptions. Thread-safe: apply() only reads it.
class Pipeline {
 public:
  explicit Pipeline(TransformOptions options = {});

  const TransformOptions& options() const { return options_; }
  /// Output shape (C, S, S).
  std::array<int64_t, 3> output_shape() const;

  /// image: (H, W, 1 or 3) uint8 -> (C, S, S) float32. rng is only used when training.
  torch::Tensor operator()(const torch::Tensor& image, SampleRng& rng) const;
  /// The same, writing C * S * S floats to out: (C, S, S) order, or (S, S, C)
  /// with channels_last.
  void apply_into(const torch::Tensor& image, SampleRng& rng, float* out,
                  bool channels_last = false) const;

 private:
  TransformOptions options_;
};

/// PIL's convert("L") of an RGB image: (H, W, 3) uint8 -> (H, W, 1) uint8,
/// L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16.
torch::Tensor rgb_to_luma(const torch::Tensor& image);

/// torchvision's RandomCrop(size=(H, W), padding) at a chosen position: the image
/// padded with zeros by `padding` on every side, cut at (top, left) of the padded image.
torch::Tensor padded_crop(const torch::Tensor& image, int64_t padding, int64_t top, int64_t left);

}  // namespace alexnet::data
