// Shared by the subcommands: usage errors, device and thread set-up, output helpers.
#pragma once

#include <cxxopts.hpp>
#include <torch/torch.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace alexnet::app {

/// A mistake in how the program was called: main prints the usage and exits 2.
class UsageError : public std::runtime_error {
 public:
  UsageError(const std::string& message, std::string usage)
      : std::runtime_error(message), usage_(std::move(usage)) {}
  const std::string& usage() const { return usage_; }

 private:
  std::string usage_;
};

/// One line naming this build: the project's version, the LibTorch it was built with (its
/// version, CUDA and cuDNN when it has them, its oneDNN and BLAS) and whether the oneDNN
/// inference plan (--onednn-plan) is in. `alexnet --version` prints it; every computing command logs it first.
std::string build_info();

/// Parses argv with cxxopts; turns its exceptions and leftover arguments into UsageError.
cxxopts::ParseResult parse_or_usage(cxxopts::Options& options, int argc, const char* const* argv,
                                    bool allow_positional = false);

/// Adds --device, --threads and --help, the flags every command shares.
void add_common_options(cxxopts::Options& options);

/// True when the user asked for --help (the command then prints options.help() and returns 0).
bool wants_help(const cxxopts::ParseResult& result);

/// Resolves --device (cpu, cuda, cuda:N, auto). CUDA asked for but absent is an error.
torch::Device resolve_device(const std::string& spec);

/// Number of CPUs this process may run on (its affinity mask), at least 1.
int available_cpus();

/// Applies --threads (0 = all available CPUs) to LibTorch and logs it with the device.
/// The first call logs build_info() and what this build lacks; it also calls select_blas_kernels().
int configure_threads(int requested);

/// OpenBLAS (Debian's LibTorch does its Linear layers with it) picks its kernels by
/// CPU model, and a release older than the CPU falls back to its SSE-only
/// "Prescott" kernels: 5x slower matrix products here. When that happened and
/// the CPU has AVX2 or AVX-512, switches to the matching kernels (logged once).
/// OPENBLAS_CORETYPE in the environment takes precedence. Returns the kernels in
/// use ("Cooperlake"), or "" without OpenBLAS.
std::string select_blas_kernels();

/// Training and batch inference free and re-allocate the same large buffers
/// (gradients, activations: up to 151 MB each) every step. glibc returns blocks
/// over its mmap threshold to the kernel at once, so each step pays for fresh
/// zeroed pages again (a fifth of a 64 px training step here). This makes glibc
/// keep freed memory in the heap for reuse instead (peak memory grows ~20%).
/// Does nothing with another C library, or when MALLOC_ or GLIBC_TUNABLES
/// settings are in the environment. Call before the first large allocation.
void reuse_freed_memory();

/// Parses --device/--threads of a result, configures them and logs "device ... threads ...".
torch::Device setup_runtime(const cxxopts::ParseResult& result);

/// JSON string literal (quotes included) for s.
std::string json_string(const std::string& s);

/// The value of a string flag the command cannot do without, else UsageError "missing --NAME".
std::string required_flag(const cxxopts::ParseResult& result, const std::string& name,
                          const cxxopts::Options& options);

/// Requires a positive integer flag, else UsageError naming it.
int64_t positive_flag(const cxxopts::ParseResult& result, const std::string& name,
                      const cxxopts::Options& options);

}  // namespace alexnet::app
