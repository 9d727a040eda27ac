// data/ against torchvision: the fixtures come from tests/make_data_reference.py
// (ctest fixture data_reference), generated at test time.
#include "data/dataset.h"
#include "data/decode.h"
#include "data/error.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "tests/fixture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

namespace alexnet::data {
namespace {

std::string data_ref(const std::string& name) { return testing::reference_path("data/" + name); }

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path << " missing (run ctest -R data_reference_setup)";
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(DataReference, ImageFolderMatchesTorchvisionSamples) {
  ImageFolder folder(data_ref("folder"));
  // Exact: same classes in the same order, same files in the same order with the same labels.
  EXPECT_EQ(folder.class_names(), read_lines(data_ref("folder_classes.txt")));
  const auto samples = read_lines(data_ref("folder_samples.txt"));
  ASSERT_EQ(folder.size(), static_cast<int64_t>(samples.size()));
  for (int64_t i = 0; i < folder.size(); ++i) {
    const auto tab = samples[i].find('\t');
    EXPECT_EQ(folder.label(i), std::stoll(samples[i].substr(0, tab))) << i;
    EXPECT_EQ(folder.path(i), data_ref("folder") + "/" + samples[i].substr(tab + 1)) << i;
  }
}

TEST(DataReference, DecodeAndEvalTransformMatchPil) {
  ImageFolder folder(data_ref("folder"));
  const auto ref = testing::read_fixture(data_ref("folder.bin"));
  Pipeline eval(default_transform_options(DatasetKind::kImageFolder, /*train=*/false));
  SampleRng rng(0);
  double worst_mean = 0, worst_max = 0;
  for (int64_t i = 0; i < folder.size(); ++i) {
    SCOPED_TRACE(folder.path(i));
    const torch::Tensor decoded = folder.load(i);  // (H, W, 3) uint8
    const torch::Tensor& want = ref.at("decoded_" + std::to_string(i));
    ASSERT_EQ(decoded.sizes(), want.sizes());
    const int64_t max_decode = (decoded.to(torch::kInt32) - want.to(torch::kInt32)).abs().max().item<int64_t>();
    // Goal bit-exact; tolerance 0 grey levels.
    EXPECT_EQ(max_decode, 0) << "decode differs from PIL's convert(\"RGB\") by up to " << max_decode;

    const torch::Tensor out = eval(decoded, rng);  // (3, 224, 224)
    const torch::Tensor diff = (out - ref.at("eval_" + std::to_string(i))).abs();
    const double mean = diff.mean().item<double>(), max = diff.max().item<double>();
    worst_mean = std::max(worst_mean, mean);
    worst_max = std::max(worst_max, max);
    // Normalised units: 1/255 of a grey level divided by std (~0.225) is ~0.0174.
    EXPECT_LT(mean, 1.0 / 255 / 0.225) << "mean abs diff";
  }
  std::printf("eval transform vs torchvision over %lld images: max mean abs diff %.3g, max abs diff %.3g\n",
              static_cast<long long>(folder.size()), worst_mean, worst_max);
  // Bit-exact goal: max abs diff 0 (float32 results computed in the same order).
  EXPECT_EQ(worst_max, 0.0);
}

TEST(DataReference, RandomResizedCropStatisticsMatch) {
  const auto ref = testing::read_fixture(data_ref("rrc.bin"));
  for (const char* name_c : {"photo", "wide", "small"}) {
    const std::string name = name_c;
    SCOPED_TRACE(name);
    const torch::Tensor size = ref.at(name + "_size");
    const int64_t h = size[0].item<int64_t>(), w = size[1].item<int64_t>();
    const torch::Tensor want = ref.at(name + "_boxes");  // (N, 4) top, left, height, width
    const int64_t n = want.size(0);
    torch::Tensor got = torch::empty({n, 4}, torch::kFloat64);
    for (int64_t k = 0; k < n; ++k) {
      SampleRng rng(42, 0, k);
      const CropBox b = random_resized_crop_box(h, w, rng);
      ASSERT_TRUE(b.top >= 0 && b.left >= 0 && b.top + b.height <= h && b.left + b.width <= w);
      got[k] = torch::tensor({double(b.top), double(b.left), double(b.height), double(b.width)},
                             torch::kFloat64);
    }
    auto stats = [&](const torch::Tensor& boxes) {
      const torch::Tensor area = boxes.select(1, 2) * boxes.select(1, 3) / double(h * w);
      const torch::Tensor log_ratio = (boxes.select(1, 3) / boxes.select(1, 2)).log();
      // Centre of the box relative to the image: checks the position draws.
      const torch::Tensor cy = (boxes.select(1, 0) + boxes.select(1, 2) / 2) / h;
      const torch::Tensor cx = (boxes.select(1, 1) + boxes.select(1, 3) / 2) / w;
      const torch::Tensor full = (boxes.select(1, 2) == h).logical_and(boxes.select(1, 3) == w);
      return std::vector<double>{area.mean().item<double>(), area.std().item<double>(),
                                 log_ratio.mean().item<double>(), log_ratio.std().item<double>(),
                                 cy.mean().item<double>(), cx.mean().item<double>(),
                                 full.to(torch::kFloat64).mean().item<double>()};
    };
    const auto g = stats(got), t = stats(want);
    const char* what[] = {"area mean", "area std", "log ratio mean", "log ratio std",
                          "centre y", "centre x", "whole-image fraction"};
    for (size_t s = 0; s < g.size(); ++s) {
      // 20000 draws: standard errors are below 0.003 for these quantities; tolerance 0.015.
      EXPECT_NEAR(g[s], t[s], 0.015) << what[s];
    }
  }
}

TEST(DataReference, FashionMnistMatchesTorchvision) {
  const auto ref = testing::read_fixture(data_ref("fashion.bin"));
  // The unzipped copy torchvision read, and Debian's gzip files: both exactly equal (tolerance 0).
  for (const std::string& dir : {data_ref("fashion"), std::string(kSystemFashionMnistDir)}) {
    SCOPED_TRACE(dir);
    if (dir == kSystemFashionMnistDir && !std::ifstream(dir + "/t10k-labels-idx1-ubyte.gz")) {
      GTEST_SKIP() << "Debian's dataset-fashion-mnist package is not installed";
    }
    auto ds = load_mnist(dir, "test", DatasetKind::kFashionMnist);
    ASSERT_EQ(ds->size(), 10000);
    EXPECT_TRUE(torch::equal(ds->images().squeeze(3), ref.at("data")));
    EXPECT_TRUE(torch::equal(ds->labels(), ref.at("targets")));
    EXPECT_EQ(ds->class_names()[9], "Ankle boot");
  }
  // Resize(64) + ToTensor + Normalize on the grey images, 1 channel: bit-exact (tolerance 0).
  auto ds = open_dataset("fashion-mnist:" + data_ref("fashion"), "test");
  Pipeline eval(default_transform_options(ds->kind(), false).in_channels(1));
  const torch::Tensor want = ref.at("eval_first32");  // (32, 1, 64, 64)
  SampleRng rng(0);
  for (int64_t i = 0; i < want.size(0); ++i) {
    const torch::Tensor got = eval(ds->load(i), rng);
    EXPECT_EQ((got - want[i]).abs().max().item<double>(), 0.0) << "image " << i;
  }
  // 3 channels: the grey channel replicated.
  Pipeline eval3(default_transform_options(ds->kind(), false));
  const torch::Tensor got3 = eval3(ds->load(0), rng);
  EXPECT_TRUE(torch::equal(got3, want[0].expand({3, 64, 64})));
}

TEST(DataReference, CifarMatchesTorchvision) {
  const auto ref = testing::read_fixture(data_ref("cifar.bin"));
  for (const char* kind_c : {"cifar10", "cifar100"}) {
    const std::string kind = kind_c;
    for (const char* split_c : {"train", "test"}) {
      const std::string split = split_c;
      SCOPED_TRACE(kind + " " + split);
      auto ds = std::dynamic_pointer_cast<TensorDataset>(
          open_dataset(kind + ":" + data_ref(kind), split));
      ASSERT_TRUE(ds);
      // Exact (tolerance 0): images (N, 32, 32, 3) and fine labels.
      EXPECT_TRUE(torch::equal(ds->images(), ref.at(kind + "_" + split + "_data")));
      EXPECT_TRUE(torch::equal(ds->labels(), ref.at(kind + "_" + split + "_targets")));
      EXPECT_EQ(ds->num_classes(), kind == "cifar10" ? 10 : 100);
    }
  }
  try {
    open_dataset("cifar10:" + data_ref("cifar10_bad"), "test");
    FAIL() << "a truncated CIFAR file was accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("test_batch.bin"), std::string::npos) << e.what();
  }
}

TEST(DataReference, ShardsMatchDistributedSampler) {
  const auto ref = testing::read_fixture(data_ref("sampler.bin"));
  struct Case { int64_t n, world; uint64_t seed; int64_t epoch; };
  for (const Case c : {Case{10, 1, 0, 0}, Case{10, 3, 7, 2}, Case{5, 4, 123, 5}, Case{3, 8, 1, 0}}) {
    for (int64_t rank = 0; rank < c.world; ++rank) {
      const std::string key = "n" + std::to_string(c.n) + "_w" + std::to_string(c.world) + "_s" +
                              std::to_string(c.seed) + "_e" + std::to_string(c.epoch) + "_r" +
                              std::to_string(rank);
      const auto got = shard_indices(c.n, true, c.seed, c.epoch, rank, c.world);
      const torch::Tensor want = ref.at(key);
      // Exact index lists.
      EXPECT_TRUE(torch::equal(torch::tensor(got, torch::kInt64), want)) << key;
    }
  }
}

TEST(DataReference, LoaderBatchesEqualThePipelineOnTheFolder) {
  // The loader with 2 workers gives the same tensors as the pipeline applied one by one.
  auto folder = std::make_shared<ImageFolder>(data_ref("folder"));
  Pipeline eval(default_transform_options(DatasetKind::kImageFolder, false));
  Loader loader(folder, eval, LoaderOptions().batch_size(5).shuffle(false).workers(2));
  loader.start_epoch(0);
  int64_t seen = 0;
  while (auto batch = loader.next()) {
    for (int64_t k = 0; k < batch->images.size(0); ++k, ++seen) {
      SampleRng rng(0);
      EXPECT_TRUE(torch::equal(batch->images[k], eval(folder->load(seen), rng))) << seen;
      EXPECT_EQ(batch->labels[k].item<int64_t>(), folder->label(seen));
    }
  }
  EXPECT_EQ(seen, folder->size());
}

}  // namespace
}  // namespace alexnet::data
