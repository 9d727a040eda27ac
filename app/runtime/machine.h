// The machine a command runs on: the build's own description, CPU features,
// the device, LibTorch's threads, and the BLAS and allocator settings that
// training and batch inference need on it.
#pragma once

#include <torch/torch.h>

#include <set>
#include <string>

namespace alexnet::runtime {

/// One line naming this build: the project's version, the LibTorch it was built with (its
/// version, CUDA and cuDNN when it has them, its oneDNN and BLAS) and whether the oneDNN
/// inference plan (--onednn-plan) is in. `alexnet --version` prints it; every computing
/// command logs it first.
std::string build_info();

/// CUDA compute capability (major * 10 + minor) of a device, or 0 when unknown.
int cuda_compute_capability(const torch::Device& device);

/// Resolves a device name (cpu, cuda, cuda:N, auto). CUDA asked for but absent is an
/// error naming --device.
torch::Device resolve_device(const std::string& spec);

/// Number of CPUs this process may run on (its affinity mask), at least 1.
int available_cpus();

/// Sets LibTorch's threads (0 = all available CPUs) and returns the number set.
/// The first call logs build_info(), cpu_summary() and what this build lacks; it also calls select_blas_kernels().
int configure_threads(int requested);

/// resolve_device + configure_threads, logged as "device ... threads ...".
torch::Device setup_device(const std::string& device_spec, int threads);

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

}  // namespace alexnet::runtime
