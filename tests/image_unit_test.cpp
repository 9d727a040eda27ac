// Unit tests of the image operations; no Python needed.
#include "data/error.h"
#include "data/image.h"
#include "data/labels.h"

#include <gtest/gtest.h>

namespace alexnet::data {
namespace {

TEST(ImageUnit, ShorterSideResizeSizes) {
  // torchvision: shorter side -> 256, longer -> int(256 * long / short).
  EXPECT_EQ(resized_shorter_side(480, 640, 256), (std::pair<int64_t, int64_t>{256, 341}));
  EXPECT_EQ(resized_shorter_side(533, 400, 256), (std::pair<int64_t, int64_t>{341, 256}));
  EXPECT_EQ(resized_shorter_side(500, 500, 256), (std::pair<int64_t, int64_t>{256, 256}));
  EXPECT_THROW(resized_shorter_side(0, 5, 256), c10::Error);
}

TEST(ImageUnit, ResizeToSameSizeIsIdentity) {
  auto img = torch::randint(0, 256, {37, 53, 3}, torch::kUInt8);
  EXPECT_TRUE(torch::equal(resize_bilinear_aa(img, 37, 53), img));
}

TEST(ImageUnit, ResizeOfConstantImageIsConstant) {
  auto img = torch::full({50, 70, 3}, 173, torch::kUInt8);
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{25, 35}, {101, 13}, {7, 200}}) {
    auto out = resize_bilinear_aa(img, h, w);
    ASSERT_EQ(out.sizes(), torch::IntArrayRef({h, w, 3}));
    // Normalised filter weights: a flat image stays flat exactly (tolerance 0).
    EXPECT_TRUE(torch::equal(out, torch::full({h, w, 3}, 173, torch::kUInt8))) << h << "x" << w;
  }
}

TEST(ImageUnit, CenterCropRoundsHalfToEven) {
  // 5 columns, crop 2: offset round(1.5) = 2 (Python's round); 7 -> 2: round(2.5) = 2.
  auto img = torch::arange(5, torch::kUInt8).view({1, 5, 1}).expand({1, 5, 3}).contiguous();
  EXPECT_EQ(center_crop(img, 1, 2)[0][0][0].item<int>(), 2);
  auto img7 = torch::arange(7, torch::kUInt8).view({1, 7, 1}).expand({1, 7, 3}).contiguous();
  EXPECT_EQ(center_crop(img7, 1, 2)[0][0][0].item<int>(), 2);
}

TEST(ImageUnit, CenterCropPadsWithZeros) {
  auto img = torch::full({2, 2, 3}, 9, torch::kUInt8);
  auto out = center_crop(img, 5, 4);  // pad top 1, bottom 2, left 1, right 1
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({5, 4, 3}));
  EXPECT_EQ(out.sum().item<int64_t>(), 9 * 4 * 3);
  EXPECT_EQ(out[1][1][0].item<int>(), 9);
  EXPECT_EQ(out[0][0][0].item<int>(), 0);
}

TEST(ImageUnit, NormalizeMatchesFormula) {
  auto img = torch::randint(0, 256, {4, 6, 3}, torch::kUInt8);
  auto x = to_normalized_chw(img);  // (3, 4, 6)
  ASSERT_EQ(x.sizes(), torch::IntArrayRef({3, 4, 6}));
  auto expect = (img.permute({2, 0, 1}).to(torch::kFloat32) / 255 -
                 torch::tensor({0.485f, 0.456f, 0.406f}).view({3, 1, 1})) /
                torch::tensor({0.229f, 0.224f, 0.225f}).view({3, 1, 1});
  EXPECT_LE((x - expect).abs().max().item<float>(), 1e-6f);  // float rounding only
}

TEST(ImageUnit, EvalTransformShape) {
  auto img = torch::randint(0, 256, {300, 451, 3}, torch::kUInt8);
  EXPECT_EQ(eval_transform(img).sizes(), torch::IntArrayRef({3, 224, 224}));
}

TEST(LabelsUnit, BuiltInImageNetList) {
  const auto& labels = imagenet_labels();
  ASSERT_EQ(labels.size(), 1000u);
  EXPECT_EQ(labels[0], "tench");
  EXPECT_EQ(labels[999], "toilet tissue");
  EXPECT_THROW(load_labels("/nonexistent/labels.txt"), DataError);
}

}  // namespace
}  // namespace alexnet::data
