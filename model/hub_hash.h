// torch.hub's check of a downloaded checkpoint against the hash prefix in its
// name: torchvision's alexnet-owt-7be5be79.pth is a file whose SHA-256 starts
// with 7be5be79. The digest is OpenSSL's (EVP), which uses the CPU's SHA
// extensions where it has them.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>

// OpenSSL's types, kept out of this header.
struct evp_md_ctx_st;

namespace alexnet {

/// A SHA-256 fed in pieces: update() as often as needed, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  /// 64 lowercase hex digits.
  std::string hex_digest();

 private:
  evp_md_ctx_st* ctx_;
};

/// The SHA-256 of `size` bytes at `data`, as 64 lowercase hex digits.
std::string sha256_hex_bytes(const void* data, size_t size);
/// The same, fed in pieces of 4 MiB, calling after_piece(piece, bytes) after each (to give
/// the pages of a mapped file back as they are hashed).
std::string sha256_hex_bytes(const void* data, size_t size,
                             const std::function<void(const void*, size_t)>& after_piece);

/// The hash prefix the file name (its basename) carries, or nullopt. The name
/// must end in "-HEX.EXT": HEX is 8 to 64 lowercase hex digits with at least one
/// letter, EXT is pth, pt or bin, and nothing else follows. Stricter than
/// torch.hub's regex -([a-f0-9]*)\. on purpose: "run-20241130.pth" carries a
/// date, not a hash, and "model_3.pth" carries nothing.
std::optional<std::string> hub_hash_prefix(const std::string& path);

/// When hub_hash_prefix(path) gives a prefix, throws std::runtime_error naming
/// the path, the prefix its name promises and the one `digest` (the file's
/// SHA-256, hex, computed by the caller from the bytes it loads) has, when they
/// differ. Does nothing otherwise.
void check_hub_hash(const std::string& path, const std::string& digest);

}  // namespace alexnet
