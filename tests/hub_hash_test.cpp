// SHA-256 and torch.hub's hash-in-the-name check (model/hub_hash.h) without
// Python: FIPS 180-4's examples, every length 0..200 through both entry points,
// the name rule, and a file named with the right and a wrong prefix. Every
// comparison is exact. HubHashReference.PrintsDigests serves
// tests/hub_hash_reference_test.py, which checks the digests with hashlib.
#include "model/hub_hash.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace alexnet {
namespace {

namespace fs = std::filesystem;

// A fresh folder under ::testing::TempDir(), removed with its files at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "hub_hash_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + " failed");
    path_ = tmpl;
  }
  ~TempDir() { fs::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_whole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Deterministic bytes without a short period: the high byte of a 32-bit LCG.
std::string pseudo_random_bytes(size_t size, uint32_t seed) {
  std::string bytes(size, '\0');
  for (char& c : bytes) {
    seed = seed * 1664525u + 1013904223u;
    c = static_cast<char>(seed >> 24);
  }
  return bytes;
}

std::string sha256_of(const std::string& bytes) { return sha256_hex_bytes(bytes.data(), bytes.size()); }

// The message of the std::runtime_error `f` throws; "" when it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Sha256, FipsExamples) {
  // FIPS 180-4's examples (NIST's SHA256.pdf and SHA256_LongMessage), and the 896-bit
  // message of FIPS 180-2 appendix C.
  EXPECT_EQ(sha256_of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_of("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                      "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_of(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundaries) {
  // n 'a's around the lengths where the padding needs a second block (56) or the
  // message fills blocks exactly (64, 128); digests from Python's hashlib.
  const std::vector<std::pair<size_t, std::string>> cases = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
      {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
  };
  for (const auto& [n, digest] : cases) EXPECT_EQ(sha256_of(std::string(n, 'a')), digest) << n << " bytes";
}

TEST(Sha256, BytesAndFilesAgreeAtEveryLengthTo200) {
  TempDir dir;
  const std::string bytes = pseudo_random_bytes(201, 7);
  std::vector<std::string> seen;
  for (size_t n = 0; n <= 200; ++n) {
    const std::string path = dir / ("len" + std::to_string(n) + ".bin");
    write_file(path, bytes.substr(0, n));
    const std::string digest = sha256_hex_bytes(bytes.data(), n);
    EXPECT_EQ(sha256_hex(path), digest) << n << " bytes";
    ASSERT_EQ(digest.size(), 64u);
    EXPECT_EQ(digest.find_first_not_of("0123456789abcdef"), std::string::npos) << digest;
    seen.push_back(digest);
  }
  // Different prefixes of one stream must not collide (a length ignored by the padding would).
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end());
}

TEST(Sha256, FileOverSeveralReadChunks) {
  // 3 MiB + 5 bytes: three full 1 MiB reads and a short one.
  TempDir dir;
  const std::string bytes = pseudo_random_bytes((size_t{3} << 20) + 5, 11);
  const std::string path = dir / "big.bin";
  write_file(path, bytes);
  EXPECT_EQ(sha256_hex(path), sha256_of(bytes));
  // Unaligned starts give the same digest as aligned ones.
  const std::string tail = bytes.substr(1);
  EXPECT_EQ(sha256_hex_bytes(bytes.data() + 1, bytes.size() - 1), sha256_of(tail));
}

TEST(Sha256, UnreadablePathsAreNamed) {
  TempDir dir;
  const std::string missing = dir / "missing.pth";
  const std::string error = error_of([&] { sha256_hex(missing); });
  EXPECT_EQ(error.rfind(missing + ": cannot read", 0), 0u) << error;
  const std::string folder = dir / "sub-7be5be79.pth";
  fs::create_directory(folder);
  EXPECT_EQ(error_of([&] { sha256_hex(folder); }), folder + ": cannot read: not a regular file");
  // A FIFO without a writer is refused at once instead of blocking the read.
  const std::string fifo = dir / "fifo-7be5be79.pth";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << fifo;
  EXPECT_EQ(error_of([&] { check_hub_hash(fifo); }), fifo + ": cannot read: not a regular file");
}

TEST(HubHashPrefix, NamesThatCarryAHash) {
  EXPECT_EQ(hub_hash_prefix("alexnet-owt-7be5be79.pth"), "7be5be79");  // torchvision's
  EXPECT_EQ(hub_hash_prefix("x-7be5be79.pth"), "7be5be79");
  EXPECT_EQ(hub_hash_prefix("/root/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth"), "7be5be79");
  EXPECT_EQ(hub_hash_prefix("relative/dir/resnet18-f37072fd.pt"), "f37072fd");
  EXPECT_EQ(hub_hash_prefix("model-0123456789abcdef.bin"), "0123456789abcdef");
  EXPECT_EQ(hub_hash_prefix("run-2024113a.pth"), "2024113a");  // one letter is enough
  EXPECT_EQ(hub_hash_prefix("-7be5be79.pth"), "7be5be79");      // torch.hub accepts an empty NAME too
  EXPECT_EQ(hub_hash_prefix("my-dir_1/a.b-c-abcdef12.pth"), "abcdef12");  // the last '-' counts
  EXPECT_EQ(hub_hash_prefix("dir-11111111/x-deadbeef.pth"), "deadbeef");  // only the basename counts
  const std::string full(64, 'e');
  EXPECT_EQ(hub_hash_prefix("m-" + full + ".pth"), full);
}

TEST(HubHashPrefix, NamesThatDoNot) {
  const std::vector<std::string> names = {
      "run-20241130.pth",                    // digits only: a date or a counter
      "ckpt-12345678901234.pt",              // the same, longer
      "model_3.pth",                         // no '-'
      "x_7be5be79.pth",                      // '_' is not the separator
      "7be5be79.pth",                        // no NAME-
      "a-7BE5BE79.pth",                      // upper case
      "a-7be5BE79.pth",
      "a-7be5be7.pth",                       // 7 digits
      "a-" + std::string(65, 'e') + ".pth",  // 65 digits
      "a-7be5be79g.pth",                     // not hex
      "a-7be5-be79.pth",                     // the last '-' leaves 4 digits
      "a-7be5be79.tar",                      // other extensions
      "a-7be5be79.safetensors",
      "a-7be5be79.PTH",
      "a-7be5be79.pth.tar",                  // one extension only
      "a-7be5be79.tar.pth",
      "a-7be5be79.",
      "a-7be5be79",
      "a-7be5be79.pth/",                     // no basename
      "dir-7be5be79.pth/model.pth",          // the hash is in a folder's name
      "",
  };
  for (const std::string& name : names) {
    EXPECT_FALSE(hub_hash_prefix(name).has_value()) << name << " gave " << hub_hash_prefix(name).value_or("");
  }
}

TEST(CheckHubHash, RightPrefixPassesWrongOneIsRefused) {
  TempDir dir;
  // Content whose digest starts with a letter among its first 8 digits, so that an
  // 8-digit prefix of it is a hash name and not a date.
  std::string bytes, digest;
  for (uint32_t seed = 1;; ++seed) {
    bytes = pseudo_random_bytes(5000, seed);
    digest = sha256_of(bytes);
    if (digest.substr(0, 8).find_first_of("abcdef") != std::string::npos) break;
  }
  for (const size_t digits : {8, 12, 64}) {
    const std::string path = dir / ("alexnet-owt-" + digest.substr(0, digits) + ".pth");
    write_file(path, bytes);
    EXPECT_NO_THROW(check_hub_hash(path)) << path;
  }

  const std::string wrong = digest.compare(0, 8, "abcdef01") == 0 ? "fedcba98" : "abcdef01";
  const std::string path = dir / ("alexnet-owt-" + wrong + ".pth");
  write_file(path, bytes);
  const std::string error = error_of([&] { check_hub_hash(path); });
  EXPECT_EQ(error.rfind(path + ": ", 0), 0u) << error;
  EXPECT_TRUE(contains(error, "its SHA-256 starts with " + wrong + " ")) << error;
  EXPECT_TRUE(contains(error, "but it starts with " + digest.substr(0, 8) + ":")) << error;
  EXPECT_TRUE(contains(error, "download it again")) << error;

  // One changed byte and the right name no longer fits.
  const std::string damaged = dir / ("damaged-" + digest.substr(0, 8) + ".pth");
  std::string flipped = bytes;
  flipped[2500] ^= 1;
  write_file(damaged, flipped);
  EXPECT_TRUE(contains(error_of([&] { check_hub_hash(damaged); }), "damaged")) << damaged;
}

TEST(CheckHubHash, NamesWithoutAHashAreNotRead) {
  TempDir dir;
  // Missing files: only the name is looked at, so nothing is opened.
  EXPECT_NO_THROW(check_hub_hash(dir / "model_3.pth"));
  EXPECT_NO_THROW(check_hub_hash(dir / "run-20241130.pth"));
  const std::string missing = dir / "x-7be5be79.pth";
  const std::string error = error_of([&] { check_hub_hash(missing); });
  EXPECT_EQ(error.rfind(missing + ": cannot read", 0), 0u) << error;
}

// For tests/hub_hash_reference_test.py: prints "sha256 <hex> <path>" for each file in
// HUB_HASH_FILES (paths separated by ':'), read by sha256_hex; the in-memory digest
// of the same bytes must be equal (exact).
TEST(HubHashReference, PrintsDigests) {
  const char* files = std::getenv("HUB_HASH_FILES");
  if (files == nullptr) {
    GTEST_SKIP() << "HUB_HASH_FILES is unset: tests/hub_hash_reference_test.py sets it to the files to hash";
  }
  std::stringstream list(files);
  for (std::string path; std::getline(list, path, ':');) {
    if (path.empty()) continue;
    const std::string digest = sha256_hex(path);
    EXPECT_EQ(sha256_of(read_whole(path)), digest) << path;
    std::cout << "sha256 " << digest << " " << path << "\n";
  }
  std::cout << std::flush;
}

}  // namespace
}  // namespace alexnet
