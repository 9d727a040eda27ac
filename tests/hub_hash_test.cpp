// torch.hub's hash-in-the-name rule (model/hub_hash.h): which names promise a
// hash, and a digest with the right and a wrong prefix; the digest itself is
// OpenSSL's, fed in pieces. Every comparison is exact. The whole rule on real
// files, against hashlib, is tests/pth_cli_test.py's hub_hash.
#include "model/hub_hash.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace alexnet {
namespace {

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

TEST(Sha256, PiecesGiveTheOneShotDigest) {
  // 9 MiB + 5 bytes: two full 4 MiB pieces and a short one, each handed to after_piece once.
  const std::string bytes = pseudo_random_bytes((size_t{9} << 20) + 5, 11);
  size_t seen = 0, calls = 0;
  const std::string digest = sha256_hex_bytes(bytes.data(), bytes.size(), [&](const void* p, size_t n) {
    EXPECT_EQ(static_cast<const char*>(p), bytes.data() + seen);
    seen += n;
    ++calls;
  });
  EXPECT_EQ(digest, sha256_of(bytes));
  EXPECT_EQ(seen, bytes.size());
  EXPECT_EQ(calls, 3u);
  EXPECT_EQ(sha256_of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-4
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
  const std::string digest = sha256_of("alexnet");
  const std::string letters = digest.find_first_of("abcdef") < 8 ? digest : std::string(64, 'a');
  for (const size_t digits : {8, 12, 64}) {
    const std::string path = "/x/alexnet-owt-" + letters.substr(0, digits) + ".pth";
    EXPECT_NO_THROW(check_hub_hash(path, letters)) << path;
  }
  const std::string wrong = letters.compare(0, 8, "abcdef01") == 0 ? "fedcba98" : "abcdef01";
  const std::string path = "/x/alexnet-owt-" + wrong + ".pth";
  const std::string error = error_of([&] { check_hub_hash(path, letters); });
  EXPECT_EQ(error.rfind(path + ": ", 0), 0u) << error;
  EXPECT_TRUE(contains(error, "its SHA-256 starts with " + wrong + " ")) << error;
  EXPECT_TRUE(contains(error, "but it starts with " + letters.substr(0, 8) + ":")) << error;
  EXPECT_TRUE(contains(error, "download it again")) << error;
}

TEST(CheckHubHash, NamesWithoutAHashPromiseNothing) {
  EXPECT_NO_THROW(check_hub_hash("model_3.pth", "00"));
  EXPECT_NO_THROW(check_hub_hash("run-20241130.pth", "00"));
}

}  // namespace
}  // namespace alexnet
