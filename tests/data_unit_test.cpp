// Unit tests of datasets, transforms and the loader; no Python needed.
#include "data/cifar_file.h"
#include "data/dataset.h"
#include "data/error.h"
#include "data/file.h"
#include "data/idx_file.h"
#include "data/image_header.h"
#include "data/labels.h"
#include "data/loader.h"
#include "data/transforms.h"

#ifdef ALEXNET_HAVE_OPENCV
#include "data/decode.h"

#include <opencv2/imgcodecs.hpp>
#endif

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
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
  std::string what;
  try {
    f();
    ADD_FAILURE() << "no error thrown";
    return;
  } catch (const c10::Error& e) {
    what = e.what_without_backtrace();
  } catch (const DataError& e) {  // the LibTorch-free readers (data/error.h)
    what = e.what();
  }
  for (const auto& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
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

// ------------------------------------------------------------- hostile files

// Ends the test process (SIGALRM's default action) if it hangs, e.g. blocked
// opening a FIFO: a regression then fails instead of stalling the suite.
class Watchdog {
 public:
  explicit Watchdog(unsigned seconds) { ::alarm(seconds); }
  ~Watchdog() { ::alarm(0); }
};

// Peak resident memory of this process so far, in MiB. ctest runs each test
// case in a process of its own, so a rise during a test is that test's.
int64_t peak_rss_mib() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;  // KiB on Linux
}

// A gzip file of `head` followed by `zeros` zero bytes, compressed 1 MiB at a time.
void write_gzip_zeros(const std::string& path, const std::string& head, int64_t zeros) {
  gzFile f = gzopen(path.c_str(), "wb9");
  ASSERT_NE(f, nullptr);
  gzwrite(f, head.data(), static_cast<unsigned>(head.size()));
  const std::string chunk(1 << 20, '\0');
  for (int64_t left = zeros; left > 0; left -= static_cast<int64_t>(chunk.size()))
    gzwrite(f, chunk.data(), static_cast<unsigned>(std::min<int64_t>(left, chunk.size())));
  gzclose(f);
}

// A file of `head` then zeros up to `size` bytes, sparse: no disk used for the zeros.
void write_sparse(const std::string& path, const std::string& head, uintmax_t size) {
  write_bytes(path, head);
  fs::resize_file(path, size);
}

void make_fifo(const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path;
}

// A UNIX socket file at path (the socket itself is closed; the file stays).
void make_socket(const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof(address.sun_path)) << path;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0) << path;
  ::close(fd);
}

TEST(DataUnit, IdxGzipBombIsRefusedAfterTheDeclaredSize) {
  TempDir dir;
  // A header declaring 2 images of 28x28 (1568 bytes), then 256 MiB of zeros: about 250 KB of gzip.
  const std::string bomb = dir / "bomb.gz";
  write_gzip_zeros(bomb, idx_bytes(3, {2, 28, 28}, 0), int64_t{256} << 20);
  const int64_t before = peak_rss_mib();
  expect_error([&] { read_idx_file(bomb); },
               {bomb, "more data after the 1568 bytes", "[2, 28, 28]"});
  // The reader inflates 1569 bytes; inflating the whole would take 256 MiB. Tolerance: 16 MiB.
  EXPECT_LT(peak_rss_mib() - before, 16);
  // The same header with exactly its data reads.
  write_gzip_zeros(dir / "exact.gz", idx_bytes(3, {2, 28, 28}, 0), 1568);
  EXPECT_EQ(read_idx_file(dir / "exact.gz").sizes(), torch::IntArrayRef({2, 28, 28}));
  // A header declaring more than a gzip file of its size can inflate to (1032:1) is refused unread.
  write_gzip_zeros(dir / "promises.gz", idx_bytes(3, {60000, 28, 28}, 0), 0);
  expect_error([&] { read_idx_file(dir / "promises.gz"); },
               {dir / "promises.gz", "47040000 bytes", "more than a gzip file of"});
  // Short gzip data: what it holds is named.
  write_gzip_zeros(dir / "short.gz", idx_bytes(3, {2, 28, 28}, 0), 1000);
  expect_error([&] { read_idx_file(dir / "short.gz"); },
               {dir / "short.gz", "promises 1568", "holds 1000"});
}

TEST(DataUnit, IdxPlainFileIsCheckedAgainstItsHeaderBeforeReading) {
  TempDir dir;
  // 1568 bytes declared, 1 GiB on disk (sparse).
  const std::string big = dir / "big";
  write_sparse(big, idx_bytes(3, {2, 28, 28}, 1568), uintmax_t{1} << 30);
  const int64_t before = peak_rss_mib();
  const std::string excess = std::to_string((int64_t{1} << 30) - 16 - 1568);
  expect_error([&] { read_idx_file(big); }, {big, excess + " bytes of data after the 1568"});
  EXPECT_LT(peak_rss_mib() - before, 16);  // MiB; nothing of the data is read
  // Sizes whose product overflows 64 bits.
  write_bytes(dir / "huge", idx_bytes(3, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, 0));
  expect_error([&] { read_idx_file(dir / "huge"); }, {dir / "huge", "more than 2^63 bytes"});
  write_gzip_zeros(dir / "huge.gz", idx_bytes(3, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, 0), 0);
  expect_error([&] { read_idx_file(dir / "huge.gz"); }, {dir / "huge.gz", "more than 2^63 bytes"});
}

TEST(DataUnit, CifarSizeIsCheckedBeforeReading) {
  TempDir dir;
  // 1 GiB + 1 byte (sparse): not a whole number of records, refused unread.
  write_sparse(dir / "test_batch.bin", "", (uintmax_t{1} << 30) + 1);
  const int64_t before = peak_rss_mib();
  expect_error([&] { load_cifar(dir.str(), "test", DatasetKind::kCifar10); },
               {dir / "test_batch.bin", "1073741825 bytes", "3073-byte"});
  EXPECT_LT(peak_rss_mib() - before, 16);  // MiB
}

TEST(DataUnit, OnlyRegularFilesAreRead) {
  const Watchdog watchdog(60);  // s; opening a FIFO for reading blocks without O_NONBLOCK
  TempDir dir;
  make_fifo(dir / "fifo");
  make_socket(dir / "socket");
  const std::vector<std::pair<std::string, std::string>> specials = {
      {dir / "fifo", "a FIFO"},
      {dir / "socket", "a socket"},
      {"/dev/null", "a character device"},
      {dir.str(), "a directory"}};
  for (const auto& [path, kind] : specials) {
    const std::string message = "not a regular file (" + kind + ")";
    expect_error([&] { read_regular_file(path); }, {path, message});
    expect_error([&] { RegularFile file(path); }, {path, message});
    expect_error([&] { read_idx_file(path); }, {path, message});
    expect_error([&] { load_labels(path); }, {path, message});
  }
  expect_error([&] { read_regular_file(dir / "missing"); }, {dir / "missing", "no such file"});
  // Text files have a size cap.
  write_bytes(dir / "labels.txt", "a\nb\nc\n");
  EXPECT_EQ(load_labels(dir / "labels.txt").size(), 3u);
  expect_error([&] { read_regular_file(dir / "labels.txt", 4, "labels file"); },
               {dir / "labels.txt", "6 bytes, more than a labels file may hold (4)"});

  // Dataset files named as the readers expect them.
  make_fifo(dir / "mnist/train-images-idx3-ubyte");
  expect_error([&] { open_dataset("mnist:" + (dir / "mnist"), "train"); },
               {dir / "mnist/train-images-idx3-ubyte", "not a regular file (a FIFO)"});
  make_fifo(dir / "cifar/test_batch.bin");
  expect_error([&] { open_dataset("cifar10:" + (dir / "cifar"), "test"); },
               {dir / "cifar/test_batch.bin", "not a regular file (a FIFO)"});
  // The optional class names file is only read when it is a regular file.
  make_fifo(dir / "cifar2/batches.meta.txt");
  write_bytes(dir / "cifar2/test_batch.bin", std::string(3073, '\1'));
  EXPECT_EQ(load_cifar(dir / "cifar2", "test", DatasetKind::kCifar10)->class_names()[0],
            "airplane");
}

// What a file of `bytes` declares; fails the test when the header is not recognised.
ImageHeader header_of(const std::string& bytes) {
  const auto h =
      read_image_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test");
  if (!h) {
    ADD_FAILURE() << "format not recognised";
    return {"none", 0, 0};
  }
  return *h;
}

std::string be16(uint32_t v) { return {static_cast<char>(v >> 8), static_cast<char>(v)}; }
std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}
std::string le16(uint32_t v) { return {static_cast<char>(v), static_cast<char>(v >> 8)}; }
std::string le32(uint32_t v) { return le16(v) + le16(v >> 16); }

TEST(DataUnit, ImageHeadersOfHandMadeFiles) {
  // Formats no encoder of this build writes (exact sizes, tolerance 0).
  const auto expect_size = [](const std::string& bytes, const char* format, uint64_t w,
                              uint64_t h) {
    const ImageHeader got = header_of(bytes);
    EXPECT_STREQ(got.format, format);
    EXPECT_EQ(got.width, w) << format;
    EXPECT_EQ(got.height, h) << format;
  };
  expect_size(std::string("GIF89a") + le16(640) + le16(480) + std::string(8, '\0'), "GIF", 640,
              480);
  // J2K: SOC, SIZ (length, capabilities, Xsiz, Ysiz, XOsiz, YOsiz).
  const std::string siz = std::string("\xFF\x4F\xFF\x51\x00\x29\x00\x00", 8) + be32(700) +
                          be32(500) + be32(100) + be32(20) + std::string(24, '\0');
  expect_size(siz, "JPEG 2000", 600, 480);
  // JP2: signature box, ftyp box, then the codestream box.
  const std::string jp2 = std::string("\0\0\0\x0CjP  \r\n\x87\n", 12) + be32(20) + "ftypjp2 " +
                          std::string(8, '\0') + be32(8 + static_cast<uint32_t>(siz.size())) +
                          "jp2c" + siz;
  expect_size(jp2, "JPEG 2000", 600, 480);
  // BigTIFF: header, then an IFD of 2 entries (ImageWidth LONG8, ImageLength SHORT).
  std::string big = std::string("II+\0", 4) + le16(8) + le16(0) + le32(16) + le32(0);
  big += le32(2) + le32(0);
  big += le16(256) + le16(16) + le32(1) + le32(0) + le32(70000) + le32(0);
  big += le16(257) + le16(3) + le32(1) + le32(0) + le16(90) + std::string(6, '\0');
  expect_size(big, "TIFF", 70000, 90);
  // WebP VP8X canvas: 24-bit width - 1 and height - 1.
  expect_size(std::string("RIFF") + le32(30) + "WEBPVP8X" + le32(10) + std::string(4, '\0') +
                  std::string("\x3F\x42\x0F\x3F\x42\x0F", 6),
              "WebP", 1000000, 1000000);
  // BMP: top-down (negative height), and the OS/2 core header with 16-bit sizes.
  expect_size(std::string("BM") + std::string(12, '\0') + le32(40) + le32(300) +
                  le32(static_cast<uint32_t>(-200)) + std::string(28, '\0'),
              "BMP", 300, 200);
  expect_size(std::string("BM") + std::string(12, '\0') + le32(12) + le16(30) + le16(20) +
                  std::string(4, '\0'),
              "BMP", 30, 20);
  // PNM with comments, Radiance with its resolution the other way round.
  expect_size("P6\n# made by hand\n 640 # width\n480\n255\n", "PNM", 640, 480);
  expect_size("#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n+X 12 -Y 34\n", "Radiance HDR", 12, 34);

  // Known signatures with a broken header are refused naming the file; unknown ones are left to the
  // decoders.
  const auto refused = [](const std::string& bytes, const std::string& why) {
    expect_error(
        [&] {
          read_image_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.img");
        },
        {"x.img: ", why});
  };
  refused(std::string("\x89PNG\r\n\x1A\n\0\0\0\x0DIHDR", 16), "PNG header is cut short");
  refused(std::string("\xFF\xD8\xFF\xDA\x00\x02", 6), "JPEG header has no frame (SOF) marker");
  refused(std::string("MM\0*", 4) + be32(8) + std::string(2, '\0'),
          "TIFF header has no image width or length");
  refused("P7\nDEPTH 3\nENDHDR\n", "PAM header has no WIDTH or HEIGHT");
  const std::string text = "hello, not an image";
  EXPECT_FALSE(read_image_header(reinterpret_cast<const uint8_t*>(text.data()), text.size(), "t")
                   .has_value());
}

// Sets the process's image pixel limit for one test, then restores PIL's.
class PixelLimit {
 public:
  explicit PixelLimit(int64_t pixels) { set_max_image_pixels(pixels); }
  ~PixelLimit() { set_max_image_pixels(kDefaultMaxImagePixels); }
};

TEST(DataUnit, PixelLimitChecksTheDeclaredSize) {
  EXPECT_EQ(max_image_pixels(), kDefaultMaxImagePixels);
  EXPECT_EQ(kDefaultMaxImagePixels, 2 * 89478485);  // PIL: 2 * Image.MAX_IMAGE_PIXELS
  // PIL refuses above the limit, not at it.
  check_image_pixels("a.png", {"PNG", 178956970, 1});
  check_image_pixels("a.png", {"PNG", 13377, 13377});  // 178944129 pixels
  expect_error(
      [] {
        check_image_pixels("a.png", {"PNG", 13378, 13377});
      },
      {"a.png: PNG image of 13378x13377 pixels (178957506), more than the limit of 178956970",
       "--max-pixels"});
  expect_error(
      [] {
        check_image_pixels("a.tif", {"TIFF", uint64_t{1} << 63, 4});
      },
      {"a.tif", "9223372036854775808x4"});
  {
    const PixelLimit none(0);  // no limit
    check_image_pixels("a.tif", {"TIFF", uint64_t{1} << 63, 4});
  }
  {
    const PixelLimit small(100);
    expect_error([] { check_image_pixels("a.png", {"PNG", 11, 10}); }, {"a.png", "limit of 100"});
  }
  EXPECT_THROW(set_max_image_pixels(-1), DataError);
}

// The fuzzers' seeds (tests/fuzz/make_corpus.py) for one target, sorted: the
// valid ones, or with `attacks` the attack_* ones.
std::vector<std::string> fuzz_seeds(const std::string& target, bool attacks) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(fs::path(ALEXNET_CORPUS_DIR) / target)) {
    const std::string name = e.path().filename().string();
    if ((name.rfind("attack_", 0) == 0) == attacks) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST(DataUnit, FuzzSeedsReadOrAreRefused) {
  // IDX: the valid seeds (plain, gzip, two gzip members) read; each attack (a gzip
  // bomb in miniature, truncated, excess data, overflowing sizes, a wrong magic
  // number) is refused naming the file.
  const auto idx_valid = fuzz_seeds("idx", false), idx_attacks = fuzz_seeds("idx", true);
  ASSERT_GE(idx_valid.size(), 9u) << "seed corpus missing under " << ALEXNET_CORPUS_DIR;
  ASSERT_GE(idx_attacks.size(), 10u);
  for (const auto& f : idx_valid) EXPECT_NO_THROW(read_idx(f)) << f;
  EXPECT_EQ(read_idx(std::string(ALEXNET_CORPUS_DIR) + "/idx/images_two_members.gz").sizes,
            (std::vector<int64_t>{3, 4, 4}));
  for (const auto& f : idx_attacks) expect_error([&] { read_idx(f); }, {f + ": "});

  // CIFAR: two records of each kind read; a label out of range and a partial record are refused.
  const std::string cifar = std::string(ALEXNET_CORPUS_DIR) + "/cifar/";
  EXPECT_EQ(read_cifar_batch(cifar + "cifar10_batch.bin", kCifar10Format).size(), 2u * 3073);
  EXPECT_EQ(read_cifar_batch(cifar + "cifar100_batch.bin", kCifar100Format).size(), 2u * 3074);
  const auto cifar_attacks = fuzz_seeds("cifar", true);
  ASSERT_EQ(cifar_attacks.size(), 2u);
  for (const auto& f : cifar_attacks)
    expect_error([&] { read_cifar_batch(f, kCifar10Format); }, {f + ": "});

  // Image headers: every tiny seed declares its 5x3 pixels; every bomb is refused by the limit.
  const auto images = fuzz_seeds("image_header", false), bombs = fuzz_seeds("image_header", true);
  ASSERT_GE(images.size(), 15u);
  ASSERT_GE(bombs.size(), 8u);
  for (const auto& f : images) {
    const std::string bytes = read_bytes(f);
    const auto header = read_image_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), f);
    ASSERT_TRUE(header.has_value()) << f;
    EXPECT_EQ(header->width, 5u) << f;
    EXPECT_EQ(header->height, 3u) << f;
    check_image_pixels(f, *header);
  }
  for (const auto& f : bombs) {
    const std::string bytes = read_bytes(f);
    const auto header = read_image_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), f);
    ASSERT_TRUE(header.has_value()) << f;
    expect_error([&] { check_image_pixels(f, *header); }, {f + ": ", "more than the limit"});
  }
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

TEST(DataUnit, ImageFolderSpecialFilesAreBadFilesNotHangs) {
  const Watchdog watchdog(60);  // s
  TempDir dir;
  write_bytes(dir / "c/0_good.png", png_bytes(20, 30, 1));
  make_fifo(dir / "c/1_fifo.jpg");
  make_socket(dir / "c/2_socket.png");
  ImageFolder folder(dir.str());
  ASSERT_EQ(folder.size(), 3);
  expect_error([&] { folder.load(1); }, {dir / "c/1_fifo.jpg", "not a regular file (a FIFO)"});
  expect_error([&] { folder.load(2); }, {dir / "c/2_socket.png", "not a regular file (a socket)"});
  expect_error([&] { decode_image_file("/dev/zero"); }, {"/dev/zero", "a character device"});
  for (int64_t workers : {0, 2}) {
    Loader loader(std::make_shared<ImageFolder>(dir.str()),
                  Pipeline(default_transform_options(DatasetKind::kImageFolder, false)),
                  LoaderOptions().batch_size(3).shuffle(false).workers(workers).skip_bad(true));
    const auto batches = all_batches(loader, 0);
    ASSERT_EQ(batches.size(), 1u) << workers;
    EXPECT_EQ(batches[0].images.size(0), 1);
    EXPECT_EQ(loader.skipped(), 2);
  }
}

// `bytes` with `value` written `offset` bytes after the first `marker`.
std::string overwrite_after(std::string bytes, const std::string& marker, size_t offset,
                            const std::string& value) {
  const size_t at = bytes.find(marker);
  EXPECT_NE(at, std::string::npos) << "no marker";
  return at == std::string::npos ? bytes : bytes.replace(at + offset, value.size(), value);
}

TEST(DataUnit, PixelBombsAreRefusedFromTheHeader) {
  TempDir dir;
  // An 8x8 JPEG whose SOF0 says 65000x65000 (the 632-byte file: 12.7 GB decoded).
  // SOF0: marker, length, precision, height, width.
  const std::string jpeg = overwrite_after(jpeg_bytes(8, 8), "\xFF\xC0", 5, be16(65000) + be16(65000));
  write_bytes(dir / "bomb.jpg", jpeg);
  // A PNG whose IHDR says 100000x100000 (its CRC no longer matches: refused before libpng looks).
  write_bytes(dir / "bomb.png",
              overwrite_after(png_bytes(8, 8, 1), "IHDR", 4, be32(100000) + be32(100000)));
  const int64_t before = peak_rss_mib();
  expect_error([&] { decode_image_file(dir / "bomb.jpg"); },
               {dir / "bomb.jpg", "JPEG image of 65000x65000 pixels", "--max-pixels"});
  expect_error([&] { decode_image_file(dir / "bomb.png"); },
               {dir / "bomb.png", "PNG image of 100000x100000 pixels", "--max-pixels"});
  EXPECT_LT(peak_rss_mib() - before, 16);  // MiB; nothing was decoded
  // An image folder refuses it the same way.
  write_bytes(dir / "root/c/bomb.jpg", jpeg);
  expect_error([&] { ImageFolder(dir / "root").load(0); },
               {dir / "root/c/bomb.jpg", "65000x65000"});
}

TEST(DataUnit, ImageHeadersOfEncodedFilesAndTheLimit) {
  // Every format OpenCV encodes here, 20 wide and 30 high: the header gives
  // exactly that (tolerance 0), and the limit refuses it one pixel below.
  const cv::Mat rgb(30, 20, CV_8UC3, cv::Scalar(10, 200, 30));
  const cv::Mat gray(30, 20, CV_8UC1, cv::Scalar(90));
  cv::Mat real;
  rgb.convertTo(real, CV_32FC3, 1.0 / 255);
  struct Case {
    const char* ext;
    const char* format;
    const cv::Mat& image;
    std::vector<int> params;
  };
  const std::vector<Case> cases = {
      {".jpg", "JPEG", rgb, {}},
      {".png", "PNG", rgb, {}},
      {".bmp", "BMP", rgb, {}},
      {".tiff", "TIFF", rgb, {}},
      {".webp", "WebP", rgb, {}},
      {".webp", "WebP", rgb, {cv::IMWRITE_WEBP_QUALITY, 101}},  // lossless
      {".ppm", "PNM", rgb, {}},
      {".pgm", "PNM", gray, {}},
      {".pbm", "PNM", gray, {}},
      {".pam", "PAM", rgb, {}},
      {".pfm", "PFM", real, {}},
      {".hdr", "Radiance HDR", real, {}},
      {".ras", "Sun raster", rgb, {}},
      {".exr", "OpenEXR", real, {}}};
  for (const auto& c : cases) {
    std::vector<uchar> buf;
    bool encoded = false;
    try {
      encoded = cv::imencode(c.ext, c.image, buf, c.params);
    } catch (const cv::Exception&) {
    }
    if (!encoded) {
      // Builds differ (OpenEXR especially); the hand-made headers above cover the parser.
      std::printf("note: this OpenCV does not encode %s; its header is not checked here\n", c.ext);
      continue;
    }
    SCOPED_TRACE(std::string(c.ext) + (c.params.empty() ? "" : " lossless"));
    const auto header = read_image_header(buf.data(), buf.size(), "x");
    ASSERT_TRUE(header.has_value());
    EXPECT_STREQ(header->format, c.format);
    EXPECT_EQ(header->width, 20u);
    EXPECT_EQ(header->height, 30u);
    if (std::string(c.ext) == ".exr")
      continue;  // decoding it needs OPENCV_IO_ENABLE_OPENEXR in some builds
    {
      const PixelLimit limit(599);
      expect_error([&] { decode_image_bytes(buf.data(), buf.size(), "x"); },
                   {"x: ", "20x30 pixels (600)"});
    }
    const PixelLimit limit(600);
    EXPECT_EQ(decode_image_bytes(buf.data(), buf.size(), "x").sizes(),
              torch::IntArrayRef({30, 20, 3}));
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
