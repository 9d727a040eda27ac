#include "model/hub_hash.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace alexnet {
namespace {

// FIPS 180-4 4.2.2: the first 32 bits of the fractional parts of the cube roots
// of the first 64 primes.
constexpr uint32_t kRoundConstants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

// FIPS 180-4 5.3.3: the first 32 bits of the fractional parts of the square
// roots of the first 8 primes.
constexpr std::array<uint32_t, 8> kInitialHash = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

constexpr size_t kBlockBytes = 64;
constexpr size_t kReadChunk = size_t{1} << 20;  // 1 MiB

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

inline uint32_t load_be32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

// FIPS 180-4 4.1.2, with Ch and Maj in their two-operation forms.
inline uint32_t big_sigma0(uint32_t x) { return rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22); }
inline uint32_t big_sigma1(uint32_t x) { return rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25); }
inline uint32_t small_sigma0(uint32_t x) { return rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3); }
inline uint32_t small_sigma1(uint32_t x) { return rotr(x, 17) ^ rotr(x, 19) ^ (x >> 10); }
inline uint32_t choose(uint32_t e, uint32_t f, uint32_t g) { return g ^ (e & (f ^ g)); }
inline uint32_t majority(uint32_t a, uint32_t b, uint32_t c) { return (a & b) | (c & (a | b)); }

// One round of FIPS 180-4 6.2.2 step 3 without its eight moves: the caller
// rotates the roles instead, so the new `a` is written into `h` and the new `e`
// into `d`. `kw` is K[t] + W[t].
inline void sha_round(uint32_t a, uint32_t b, uint32_t c, uint32_t& d, uint32_t e, uint32_t f,
                  uint32_t g, uint32_t& h, uint32_t kw) {
  const uint32_t t1 = h + big_sigma1(e) + choose(e, f, g) + kw;
  const uint32_t t2 = big_sigma0(a) + majority(a, b, c);
  d += t1;
  h = t1 + t2;
}

// Hashes `count` 64-byte blocks into `state`.
void compress(std::array<uint32_t, 8>& state, const uint8_t* blocks, size_t count) {
  for (; count > 0; --count, blocks += kBlockBytes) {
    uint32_t w[64];  // the message schedule
    for (int t = 0; t < 16; ++t) w[t] = load_be32(blocks + 4 * t);
    for (int t = 16; t < 64; ++t) {
      w[t] = small_sigma1(w[t - 2]) + w[t - 7] + small_sigma0(w[t - 15]) + w[t - 16];
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int t = 0; t < 64; t += 8) {
      sha_round(a, b, c, d, e, f, g, h, kRoundConstants[t] + w[t]);
      sha_round(h, a, b, c, d, e, f, g, kRoundConstants[t + 1] + w[t + 1]);
      sha_round(g, h, a, b, c, d, e, f, kRoundConstants[t + 2] + w[t + 2]);
      sha_round(f, g, h, a, b, c, d, e, kRoundConstants[t + 3] + w[t + 3]);
      sha_round(e, f, g, h, a, b, c, d, kRoundConstants[t + 4] + w[t + 4]);
      sha_round(d, e, f, g, h, a, b, c, kRoundConstants[t + 5] + w[t + 5]);
      sha_round(c, d, e, f, g, h, a, b, kRoundConstants[t + 6] + w[t + 6]);
      sha_round(b, c, d, e, f, g, h, a, kRoundConstants[t + 7] + w[t + 7]);
    }
    state[0] += a, state[1] += b, state[2] += c, state[3] += d;
    state[4] += e, state[5] += f, state[6] += g, state[7] += h;
  }
}

// A message fed in pieces of any size.
class Sha256 {
 public:
  void update(const uint8_t* data, size_t size) {
    length_ += size;
    if (buffered_ > 0) {
      const size_t take = std::min(size, kBlockBytes - buffered_);
      std::memcpy(buffer_ + buffered_, data, take);
      buffered_ += take, data += take, size -= take;
      if (buffered_ < kBlockBytes) return;
      compress(state_, buffer_, 1);
      buffered_ = 0;
    }
    compress(state_, data, size / kBlockBytes);
    buffered_ = size % kBlockBytes;
    std::memcpy(buffer_, data + size - buffered_, buffered_);
  }

  // FIPS 180-4 5.1.1: a 1 bit, zeros to 56 bytes mod 64, the length in bits
  // as a 64-bit big-endian number.
  std::string hex_digest() {
    const uint64_t bits = length_ * 8;
    uint8_t tail[2 * kBlockBytes] = {};
    std::memcpy(tail, buffer_, buffered_);
    tail[buffered_] = 0x80;
    const size_t tail_size = buffered_ < 56 ? kBlockBytes : 2 * kBlockBytes;
    for (int i = 0; i < 8; ++i) tail[tail_size - 1 - i] = static_cast<uint8_t>(bits >> (8 * i));
    compress(state_, tail, tail_size / kBlockBytes);

    static constexpr char kDigits[] = "0123456789abcdef";
    std::string hex(64, '0');
    for (size_t i = 0; i < 32; ++i) {
      const uint8_t byte = static_cast<uint8_t>(state_[i / 4] >> (24 - 8 * (i % 4)));
      hex[2 * i] = kDigits[byte >> 4];
      hex[2 * i + 1] = kDigits[byte & 15];
    }
    return hex;
  }

 private:
  std::array<uint32_t, 8> state_ = kInitialHash;
  uint8_t buffer_[kBlockBytes] = {};
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes
};

[[noreturn]] void cannot_read(const std::string& path, const std::string& why) {
  throw std::runtime_error(path + ": cannot read: " + why);
}

// Closes the descriptor on every way out of sha256_hex.
struct FileDescriptor {
  int fd;
  ~FileDescriptor() { ::close(fd); }
};

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

std::string sha256_hex_bytes(const void* data, size_t size) {
  Sha256 sha;
  sha.update(static_cast<const uint8_t*>(data), size);
  return sha.hex_digest();
}

std::string sha256_hex(const std::string& path) {
  // O_NONBLOCK keeps open(2) of a FIFO from waiting for a writer; the kind is
  // then checked on the descriptor itself.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) cannot_read(path, std::strerror(errno));
  const FileDescriptor closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) cannot_read(path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) cannot_read(path, "not a regular file");

  const std::unique_ptr<uint8_t[]> chunk(new uint8_t[kReadChunk]);
  Sha256 sha;
  for (;;) {
    const ssize_t n = ::read(fd, chunk.get(), kReadChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) cannot_read(path, std::strerror(errno));
    if (n == 0) break;
    sha.update(chunk.get(), static_cast<size_t>(n));
  }
  return sha.hex_digest();
}

std::optional<std::string> hub_hash_prefix(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string ext = name.substr(dot + 1);
  if (ext != "pth" && ext != "pt" && ext != "bin") return std::nullopt;
  const size_t dash = name.rfind('-', dot);
  if (dash == std::string::npos) return std::nullopt;
  std::string hex = name.substr(dash + 1, dot - dash - 1);
  if (hex.size() < 8 || hex.size() > 64) return std::nullopt;
  bool has_letter = false;
  for (const char c : hex) {
    if (!is_lower_hex(c)) return std::nullopt;
    has_letter |= c >= 'a';
  }
  // Digits alone are a date or a counter (run-20241130.pth), not a hash.
  if (!has_letter) return std::nullopt;
  return hex;
}

void check_hub_hash(const std::string& path) {
  const std::optional<std::string> prefix = hub_hash_prefix(path);
  if (!prefix) return;
  const std::string digest = sha256_hex(path);
  if (digest.compare(0, prefix->size(), *prefix) == 0) return;
  throw std::runtime_error(path + ": its name says its SHA-256 starts with " + *prefix +
                           " (torch.hub's NAME-HASH.pth convention) but it starts with " +
                           digest.substr(0, prefix->size()) +
                           ": the file is damaged or not the one its name says; download it "
                           "again, or rename it to skip this check");
}

}  // namespace alexnet
