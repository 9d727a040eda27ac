// Unit tests of datasets, transforms and the loader; no Python needed.
#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"

#ifdef ALEXNET_HAVE_OPENCV
#include <opencv2/imgcodecs.hpp>
#endif

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

namespace alexnet::data {
namespace {

namespace fs = std::filesystem;

// A fresh temporary folder, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "alexnet_data_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& rel) const { return (path_ / rel).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

// Expects `f` to throw an error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    for (const auto& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  }
}

// A synthetic in-memory dataset: n random (h, w, 3) images, label i % 3.
std::shared_ptr<TensorDataset> synthetic(int64_t n, int64_t h = 40, int64_t w = 52) {
  torch::manual_seed(1);
  return std::make_shared<TensorDataset>(
      DatasetKind::kCifar10, "synthetic", torch::randint(0, 256, {n, h, w, 3}, torch::kUInt8),
      torch::arange(n, torch::kInt64) % 3, std::vector<std::string>{"a", "b", "c"});
}

std::vector<Batch> all_batches(Loader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  while (auto b = loader.next()) out.push_back(*b);
  return out;
}

// ------------------------------------------------------------------ transforms

TEST(DataUnit, SampleRngIsDeterministicAndInRange) {
  SampleRng a(7, 1, 2), b(7, 1, 2), c(7, 1, 3);
  EXPECT_EQ(a.next_u64(), b.next_u64());
  EXPECT_NE(SampleRng(7, 1, 2).next_u64(), c.next_u64());
  for (int i = 0; i < 1000; ++i) {
    const int64_t k = a.uniform_int(3, 5);
    EXPECT_TRUE(k >= 3 && k <= 5);
    const double u = a.uniform(-1, 2);
    EXPECT_TRUE(u >= -1 && u < 2);
  }
}

TEST(DataUnit, RandomResizedCropFallsBackToTheClampedCentre) {
  // A 1-pixel-high strip: no area draw fits, so the fallback applies: ratio clamped to 4/3,
  // w = round(1 * 4/3) = 1, centred (exact).
  SampleRng rng(0);
  const CropBox b = random_resized_crop_box(1, 100, rng);
  EXPECT_EQ(b.height, 1);
  EXPECT_EQ(b.width, 1);
  EXPECT_EQ(b.left, 49);
  // A tall strip: h = round(100 / (3/4))... clamped to width / (3/4) = round(1.33) = 1.
  const CropBox t = random_resized_crop_box(100, 1, rng);
  EXPECT_EQ(t.width, 1);
  EXPECT_EQ(t.height, 1);
  EXPECT_EQ(t.top, 49);
}

TEST(DataUnit, PaddedCropShiftsAndZeroFills) {
  auto img = (torch::arange(12, torch::kUInt8).view({3, 4, 1}) + 1).expand({3, 4, 3}).contiguous();
  // Padded by 2, cut at (0, 0): the image moves 2 down and 2 right (exact).
  const torch::Tensor out = padded_crop(img, 2, 0, 0);
  EXPECT_EQ(out[0][0][0].item<int>(), 0);
  EXPECT_EQ(out[2][2][1].item<int>(), 1);
  EXPECT_EQ(out.sizes(), img.sizes());
  EXPECT_TRUE(torch::equal(padded_crop(img, 2, 2, 2), img));
  // Cut at (4, 3) of the padded image: output (y, x) is image (y + 2, x + 1).
  EXPECT_EQ(padded_crop(img, 2, 4, 3)[0][0][0].item<int>(), img[2][1][0].item<int>());
}

TEST(DataUnit, EvalPipelineShapesAndDefaults) {
  SampleRng rng(0);
  auto img = torch::randint(0, 256, {300, 200, 3}, torch::kUInt8);
  Pipeline eval(default_transform_options(DatasetKind::kImageFolder, false));
  EXPECT_EQ(eval(img, rng).sizes(), torch::IntArrayRef({3, 224, 224}));
  // Same as the existing eval_transform (exact).
  EXPECT_TRUE(torch::equal(eval(img, rng), eval_transform(img)));
  // Small datasets: 64 px, own statistics.
  auto small = default_transform_options(DatasetKind::kFashionMnist, false);
  EXPECT_EQ(small.image_size(), 64);
  EXPECT_FLOAT_EQ(small.mean()[0], 0.2860f);
  auto grey = torch::randint(0, 256, {28, 28, 1}, torch::kUInt8);
  EXPECT_EQ(Pipeline(small)(grey, rng).sizes(), torch::IntArrayRef({3, 64, 64}));
  EXPECT_EQ(Pipeline(small.in_channels(1))(grey, rng).sizes(), torch::IntArrayRef({1, 64, 64}));
  EXPECT_FALSE(default_transform_options(DatasetKind::kMnist, true).flip());
}

TEST(DataUnit, TrainPipelineDependsOnlyOnTheSampleStream) {
  auto img = torch::randint(0, 256, {120, 90, 3}, torch::kUInt8);
  Pipeline train(default_transform_options(DatasetKind::kImageFolder, true).lighting_std(0.1));
  SampleRng a(3, 4, 5), b(3, 4, 5), c(3, 4, 6);
  const torch::Tensor x = train(img, a);
  EXPECT_TRUE(torch::equal(x, train(img, b)));  // exact
  EXPECT_FALSE(torch::equal(x, train(img, c)));
  EXPECT_EQ(x.sizes(), torch::IntArrayRef({3, 224, 224}));
}

TEST(DataUnit, FlipMirrorsTheEvalOutput) {
  // Train with padding 0 and only the flip: each draw is the eval output or its mirror (exact).
  auto img = torch::randint(0, 256, {32, 32, 3}, torch::kUInt8);
  auto opts = default_transform_options(DatasetKind::kCifar10, true).crop_padding(0);
  Pipeline train(opts), eval(opts.train(false));
  SampleRng r0(0);
  const torch::Tensor plain = eval(img, r0);
  int flipped = 0;
  for (int64_t i = 0; i < 64; ++i) {
    SampleRng rng(1, 0, i);
    const torch::Tensor out = train(img, rng);
    if (torch::equal(out, plain)) continue;
    EXPECT_TRUE(torch::equal(out, plain.flip({2}))) << i;
    ++flipped;
  }
  // Binomial(64, 0.5): 10..54 holds with probability > 1 - 1e-8.
  EXPECT_GT(flipped, 10);
  EXPECT_LT(flipped, 54);
}

TEST(DataUnit, LightingShiftsEachChannelByItsOffset) {
  auto img = torch::full({64, 64, 3}, 128, torch::kUInt8);
  auto opts = default_transform_options(DatasetKind::kCifar10, true).crop_padding(0).flip(false);
  SampleRng r0(0);
  const torch::Tensor plain = Pipeline(opts)(img, r0);
  SampleRng r1(9), r2(9);
  const torch::Tensor lit = Pipeline(opts.lighting_std(0.1))(img, r1);
  const Rgb offset = pca_lighting_offset(r2, 0.1);
  for (int c = 0; c < 3; ++c) {
    // Shift in normalised units = offset / std; float32 rounding: tolerance 1e-5.
    const double shift = (lit[c] - plain[c]).mean().item<double>();
    EXPECT_NEAR(shift, offset[c] / opts.std()[c], 1e-5) << c;
  }
}

TEST(DataUnit, LumaMatchesPilFormula) {
  auto img = torch::tensor({255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30}, torch::kUInt8)
                 .view({2, 2, 3});
  const torch::Tensor l = rgb_to_luma(img);
  // PIL's convert("L"): (19595 R + 38470 G + 7471 B + 32768) >> 16 (exact).
  EXPECT_EQ(l[0][0][0].item<int>(), 76);
  EXPECT_EQ(l[0][1][0].item<int>(), 150);
  EXPECT_EQ(l[1][0][0].item<int>(), 29);
  EXPECT_EQ(l[1][1][0].item<int>(), (10 * 19595 + 200 * 38470 + 30 * 7471 + 32768) >> 16);
}

// -------------------------------------------------------------------- datasets

std::string idx_bytes(uint8_t ndim_code, const std::vector<uint32_t>& dims, size_t data_bytes) {
  std::string s = {0, 0, 8, static_cast<char>(ndim_code)};
  for (uint32_t d : dims) {
    for (int k = 3; k >= 0; --k) s.push_back(static_cast<char>((d >> (8 * k)) & 0xFF));
  }
  for (size_t i = 0; i < data_bytes; ++i) s.push_back(static_cast<char>(i * 7 % 251));
  return s;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

TEST(DataUnit, MnistReadsPlainAndGzipIdx) {
  TempDir dir;
  write_bytes(dir / "train-images-idx3-ubyte", idx_bytes(3, {4, 28, 28}, 4 * 28 * 28));
  write_gzip(dir / "train-labels-idx1-ubyte.gz", std::string{0, 0, 8, 1, 0, 0, 0, 4, 3, 1, 4, 1});
  auto ds = open_dataset("mnist:" + dir.str(), "train");
  EXPECT_EQ(ds->size(), 4);
  EXPECT_EQ(ds->channels(), 1);
  EXPECT_EQ(ds->label(2), 4);
  EXPECT_EQ(ds->load(1).sizes(), torch::IntArrayRef({28, 28, 1}));
  // Pixel k of the file is k * 7 % 251 (exact).
  EXPECT_EQ(ds->load(1)[0][1][0].item<int>(), (28 * 28 + 1) * 7 % 251);
  expect_error([&] { open_dataset("mnist:" + dir.str(), "test"); }, {"t10k-images-idx3-ubyte", dir.str()});
}

TEST(DataUnit, IdxErrorsNameTheFile) {
  TempDir dir;
  write_bytes(dir / "bad_magic", std::string{0, 0, 9, 3, 0, 0, 0, 0});
  expect_error([&] { read_idx_file(dir / "bad_magic"); }, {dir / "bad_magic", "magic"});
  write_bytes(dir / "short", idx_bytes(3, {2, 28, 28}, 2 * 28 * 28 - 5));
  expect_error([&] { read_idx_file(dir / "short"); }, {dir / "short", "promises"});
  write_bytes(dir / "empty", "");
  expect_error([&] { read_idx_file(dir / "empty"); }, {dir / "empty"});
  write_bytes(dir / "broken.gz", std::string("\x1f\x8b\x08\x00garbage", 12));
  expect_error([&] { read_idx_file(dir / "broken.gz"); }, {dir / "broken.gz"});
  // Image and label counts disagree.
  write_bytes(dir / "t10k-images-idx3-ubyte", idx_bytes(3, {3, 28, 28}, 3 * 28 * 28));
  write_bytes(dir / "t10k-labels-idx1-ubyte", std::string{0, 0, 8, 1, 0, 0, 0, 2, 1, 1});
  expect_error([&] { load_mnist(dir.str(), "test", DatasetKind::kFashionMnist); },
               {"t10k-labels-idx1-ubyte", "2 labels"});
  // Missing folder: the error names what is missing.
  expect_error([&] { open_dataset("fashion-mnist:" + (dir / "nowhere"), "train"); },
               {"train-images-idx3-ubyte", "nowhere"});
}

TEST(DataUnit, CifarErrorsNameTheFile) {
  TempDir dir;
  write_bytes(dir / "test.bin", std::string(3074 * 2 + 1, '\0'));
  expect_error([&] { load_cifar(dir.str(), "test", DatasetKind::kCifar100); },
               {dir / "test.bin", "3074-byte"});
  std::string record(3073, '\0');
  record[0] = 12;  // CIFAR-10 label out of range
  write_bytes(dir / "test_batch.bin", record);
  expect_error([&] { load_cifar(dir.str(), "test", DatasetKind::kCifar10); },
               {dir / "test_batch.bin", "label 12"});
  expect_error([&] { open_dataset("cifar10:" + (dir / "none"), "train"); }, {"data_batch_1.bin"});
}

TEST(DataUnit, SpecErrors) {
  expect_error([] { open_dataset("mnist", "train"); }, {"mnist:DIR"});
  expect_error([] { open_dataset("/no/such/dir", "train"); }, {"/no/such/dir"});
  expect_error([] { open_dataset("fashion-mnist", "dev"); }, {"split 'dev'"});
}

#ifdef ALEXNET_HAVE_OPENCV

std::string png_bytes(int h, int w, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  cv::randu(m, cv::Scalar::all(seed % 7), cv::Scalar::all(256));
  std::vector<uchar> buf;
  cv::imencode(".png", m, buf);
  return std::string(buf.begin(), buf.end());
}

std::string jpeg_bytes(int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  cv::randu(m, cv::Scalar::all(0), cv::Scalar::all(256));
  std::vector<uchar> buf;
  cv::imencode(".jpg", m, buf);
  return std::string(buf.begin(), buf.end());
}

TEST(DataUnit, ImageFolderStructureErrors) {
  TempDir dir;
  fs::create_directories(dir / "root");
  write_bytes(dir / "root/loose.png", png_bytes(8, 8, 1));
  expect_error([&] { ImageFolder f(dir / "root"); }, {dir / "root", "no class folders"});
  write_bytes(dir / "root/a/x.png", png_bytes(8, 8, 1));
  write_bytes(dir / "root/b/readme.txt", "text");
  fs::create_directories(dir / "root/c");
  expect_error([&] { ImageFolder f(dir / "root"); }, {dir / "root/b", dir / "root/c"});
  expect_error([&] { ImageFolder f(dir / "missing"); }, {dir / "missing"});
}

TEST(DataUnit, ImageFolderSplitsAndOrder) {
  TempDir dir;
  for (const char* rel : {"train/b/2.png", "train/b/1.PNG", "train/a/z/3.png", "train/a/y.png",
                          "val/a/1.png", "val/b/1.png"})
    write_bytes(dir / rel, png_bytes(10, 12, 3));
  auto train = std::dynamic_pointer_cast<ImageFolder>(open_dataset(dir.str(), "train"));
  ASSERT_TRUE(train);
  EXPECT_EQ(train->class_names(), (std::vector<std::string>{"a", "b"}));
  // Folders in path order (a before a/z), then file names sorted ("1.PNG" < "2.png").
  EXPECT_EQ(train->path(0), dir / "train/a/y.png");
  EXPECT_EQ(train->path(1), dir / "train/a/z/3.png");
  EXPECT_EQ(train->path(2), dir / "train/b/1.PNG");
  EXPECT_EQ(open_dataset(dir.str(), "val")->size(), 2);
  EXPECT_EQ(open_dataset(dir.str(), "test")->size(), 2);  // no test/: val/ serves
  EXPECT_EQ(train->load(0).sizes(), torch::IntArrayRef({10, 12, 3}));
}

// A folder with 2 good images then the bad ones, in sorted order.
struct BadFolder {
  TempDir dir;
  std::vector<std::string> bad;
  BadFolder() {
    write_bytes(dir / "c/0_good.png", png_bytes(20, 30, 1));
    write_bytes(dir / "c/1_good.jpg", jpeg_bytes(24, 24));
    write_bytes(dir / "c/2_corrupt.jpg", "this is not a JPEG at all");
    const std::string jpeg = jpeg_bytes(64, 64);
    write_bytes(dir / "c/3_truncated.jpg", jpeg.substr(0, jpeg.size() / 2));
    write_bytes(dir / "c/4_empty.png", "");
    fs::create_symlink(dir / "c/nowhere.png", dir / "c/5_dangling.png");
    const std::string png = png_bytes(40, 40, 2);
    write_bytes(dir / "c/6_truncated.png", png.substr(0, png.size() / 2));
    for (const char* f : {"2_corrupt.jpg", "3_truncated.jpg", "4_empty.png", "5_dangling.png",
                          "6_truncated.png"})
      bad.push_back(dir / (std::string("c/") + f));
  }
};

TEST(DataUnit, EveryBadImageFailsWithItsPath) {
  BadFolder f;
  ImageFolder folder(f.dir.str());
  ASSERT_EQ(folder.size(), 7);
  EXPECT_EQ(folder.load(1).sizes(), torch::IntArrayRef({24, 24, 3}));
  for (int64_t i = 2; i < folder.size(); ++i)
    expect_error([&] { folder.load(i); }, {f.bad[i - 2]});
}

TEST(DataUnit, LoaderFailsFastOnABadImage) {
  BadFolder f;
  auto folder = std::make_shared<ImageFolder>(f.dir.str());
  Loader loader(folder, Pipeline(default_transform_options(DatasetKind::kImageFolder, false)),
                LoaderOptions().batch_size(2).shuffle(false).workers(2));
  loader.start_epoch(0);
  ASSERT_TRUE(loader.next().has_value());  // the two good images
  expect_error([&] { loader.next(); }, {f.bad[0]});
  EXPECT_FALSE(loader.next().has_value());  // the epoch ended with the error
}

TEST(DataUnit, LoaderSkipsBadImagesWhenAsked) {
  BadFolder f;
  auto folder = std::make_shared<ImageFolder>(f.dir.str());
  for (int64_t workers : {0, 2}) {
    Loader loader(folder, Pipeline(default_transform_options(DatasetKind::kImageFolder, false)),
                  LoaderOptions().batch_size(2).shuffle(false).workers(workers).skip_bad(true));
    const auto batches = all_batches(loader, 0);
    // Batches {good, good}, {bad, bad} (skipped whole), {bad, bad}, {bad}: one batch of 2 left.
    ASSERT_EQ(batches.size(), 1u) << workers;
    EXPECT_EQ(batches[0].images.size(0), 2);
    EXPECT_EQ(loader.skipped(), 5);
  }
}

#endif  // ALEXNET_HAVE_OPENCV

// ---------------------------------------------------------------------- loader

TEST(DataUnit, SameSeedSameBatchesWhateverTheThreads) {
  auto ds = synthetic(37);
  auto opts = default_transform_options(DatasetKind::kImageFolder, true).image_size(24).lighting_std(0.1);
  std::vector<std::vector<Batch>> runs;
  for (int64_t workers : {0, 1, 2, 3}) {
    Loader loader(ds, Pipeline(opts), LoaderOptions().batch_size(8).seed(11).workers(workers).prefetch(2));
    runs.push_back(all_batches(loader, 3));
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    ASSERT_EQ(runs[r].size(), runs[0].size());
    for (size_t b = 0; b < runs[0].size(); ++b) {
      // Exact equality (tolerance 0).
      EXPECT_TRUE(torch::equal(runs[r][b].images, runs[0][b].images)) << r << " " << b;
      EXPECT_TRUE(torch::equal(runs[r][b].labels, runs[0][b].labels));
    }
  }
  EXPECT_EQ(runs[0].size(), 5u);  // ceil(37 / 8)
  EXPECT_EQ(runs[0][4].images.size(0), 5);
  // Another epoch reshuffles.
  Loader loader(ds, Pipeline(opts), LoaderOptions().batch_size(8).seed(11).workers(2));
  EXPECT_FALSE(torch::equal(all_batches(loader, 4)[0].indices, runs[0][0].indices));
}

TEST(DataUnit, BatchesAreFloatNchwWithLabels) {
  auto ds = synthetic(10);
  Loader loader(ds, Pipeline(default_transform_options(DatasetKind::kCifar10, false)),
                LoaderOptions().batch_size(4).shuffle(false).drop_last(true));
  EXPECT_EQ(loader.num_batches(), 2);
  const auto batches = all_batches(loader, 0);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].images.sizes(), torch::IntArrayRef({4, 3, 64, 64}));
  EXPECT_EQ(batches[0].images.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(batches[0].images.is_contiguous());
  EXPECT_EQ(batches[1].labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(batches[1].labels[0].item<int64_t>(), 4 % 3);
  Loader cl(ds, Pipeline(default_transform_options(DatasetKind::kCifar10, false)),
            LoaderOptions().batch_size(4).shuffle(false).channels_last(true));
  const auto cbatches = all_batches(cl, 0);
  EXPECT_TRUE(cbatches[0].images.is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(torch::equal(cbatches[0].images, batches[0].images));  // same values (exact)
}

TEST(DataUnit, ShardsPartitionThePaddedEpoch) {
  // 10 samples on 4 ranks: 3 each, padded with the first 2 of the permutation.
  std::vector<int64_t> seen;
  for (int64_t rank = 0; rank < 4; ++rank) {
    const auto mine = shard_indices(10, true, 5, 1, rank, 4);
    EXPECT_EQ(mine.size(), 3u);
    seen.insert(seen.end(), mine.begin(), mine.end());
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), 10u);
  EXPECT_EQ(shard_indices(5, false, 0, 0, 1, 2), (std::vector<int64_t>{1, 3, 0}));
  auto ds = synthetic(10, 8, 8);
  Loader loader(ds, Pipeline(default_transform_options(DatasetKind::kCifar10, false)),
                LoaderOptions().batch_size(2).rank(3).world_size(4));
  EXPECT_EQ(loader.num_samples(), 3);
  EXPECT_EQ(loader.num_batches(), 2);
}

TEST(DataUnit, StoppingEarlyDoesNotHang) {
  auto ds = synthetic(400, 200, 200);
  const auto start = std::chrono::steady_clock::now();
  for (int rep = 0; rep < 3; ++rep) {
    Loader loader(ds, Pipeline(default_transform_options(DatasetKind::kImageFolder, true)),
                  LoaderOptions().batch_size(16).workers(2).prefetch(2));
    loader.start_epoch(0);
    ASSERT_TRUE(loader.next().has_value());
    loader.start_epoch(1);  // abandon epoch 0 midway
    ASSERT_TRUE(loader.next().has_value());
  }  // destructors join with batches in flight
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // A full epoch per loader would take several seconds; abandoning is quick. Tolerance: 20 s.
  EXPECT_LT(seconds, 20.0);
}

}  // namespace
}  // namespace alexnet::data
