// torch.hub's check of a downloaded checkpoint against the hash prefix in its
// name: torchvision's alexnet-owt-7be5be79.pth is a file whose SHA-256 starts
// with 7be5be79. SHA-256 is written here from FIPS 180-4 (a tight scalar loop,
// no SHA extensions) so that model/ keeps depending on LibTorch only.
//
// Cost: one read of the file. Hashing a 233 MB file (AlexNet's checkpoint
// size) from the page cache takes about 1 s: 230 MB/s median, 253 MB/s best of
// 10, with -O2 on the 2-core AMD EPYC development machine (coreutils sha256sum:
// 180 MB/s; Python's hashlib, OpenSSL with the CPU's SHA extensions: 1.2 GB/s).
// A cold cache adds the disk's read time.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace alexnet {

/// The SHA-256 of a regular file, as 64 lowercase hex digits, read in 1 MiB
/// chunks. Throws std::runtime_error "<path>: cannot read: <why>" when the file
/// is missing, not a regular file (a FIFO would block) or a read fails.
std::string sha256_hex(const std::string& path);

/// The SHA-256 of `size` bytes at `data`, as 64 lowercase hex digits.
std::string sha256_hex_bytes(const void* data, size_t size);

/// The hash prefix the file name (its basename) carries, or nullopt. The name
/// must end in "-HEX.EXT": HEX is 8 to 64 lowercase hex digits with at least one
/// letter, EXT is pth, pt or bin, and nothing else follows. Stricter than
/// torch.hub's regex -([a-f0-9]*)\. on purpose: "run-20241130.pth" carries a
/// date, not a hash, and "model_3.pth" carries nothing.
std::optional<std::string> hub_hash_prefix(const std::string& path);

/// When hub_hash_prefix(path) gives a prefix, hashes the file and throws
/// std::runtime_error naming the path, the prefix its name promises and the one
/// its SHA-256 has, when they differ. Does nothing (reads nothing) otherwise.
void check_hub_hash(const std::string& path);

}  // namespace alexnet
