#include "model/hub_hash.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <stdexcept>

namespace alexnet {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) throw std::runtime_error("SHA-256: OpenSSL failed");
}

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::update(const void* data, size_t size) {
  if (EVP_DigestUpdate(ctx_, data, size) != 1) throw std::runtime_error("SHA-256: OpenSSL failed");
}

std::string Sha256::hex_digest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(ctx_, digest, &size) != 1) throw std::runtime_error("SHA-256: OpenSSL failed");
  static const char kDigits[] = "0123456789abcdef";
  std::string hex(2 * size, '0');
  for (unsigned int i = 0; i < size; ++i) {
    hex[2 * i] = kDigits[digest[i] >> 4];
    hex[2 * i + 1] = kDigits[digest[i] & 15];
  }
  return hex;
}

namespace {


bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

std::string sha256_hex_bytes(const void* data, size_t size) {
  Sha256 sha;
  sha.update(data, size);
  return sha.hex_digest();
}

std::string sha256_hex_bytes(const void* data, size_t size,
                             const std::function<void(const void*, size_t)>& after_piece) {
  constexpr size_t kPiece = size_t{4} << 20;
  Sha256 sha;
  const auto* bytes = static_cast<const uint8_t*>(data);
  for (size_t done = 0; done < size; done += kPiece) {
    const size_t n = std::min(kPiece, size - done);
    sha.update(bytes + done, n);
    after_piece(bytes + done, n);
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

void check_hub_hash(const std::string& path, const std::string& digest) {
  const std::optional<std::string> prefix = hub_hash_prefix(path);
  if (!prefix) return;
  if (digest.compare(0, prefix->size(), *prefix) == 0) return;
  throw std::runtime_error(path + ": its name says its SHA-256 starts with " + *prefix +
                           " (torch.hub's NAME-HASH.pth convention) but it starts with " +
                           digest.substr(0, prefix->size()) +
                           ": the file is damaged or not the one its name says; download it "
                           "again, or rename it to skip this check");
}

}  // namespace alexnet
