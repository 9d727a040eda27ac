#include "app/runtime/machine.h"

#include "app/runtime/cpu.h"

#include "model/onednn_plan.h"

#include <ATen/Context.h>
#include <ATen/Version.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <spdlog/spdlog.h>

#include <dlfcn.h>
#include <malloc.h>
#include <sched.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>
#include <sstream>
#include <string>

namespace alexnet::runtime {

namespace {

// "3.13.3" out of "Intel(R) MKL-DNN v3.13.3 (Git Hash ...)", or "" when LibTorch has no oneDNN.
std::string onednn_version() {
  const std::string text = at::get_mkldnn_version();
  const auto v = text.find(" v");
  if (v == std::string::npos) return "";
  const auto end = text.find(' ', v + 2);
  return text.substr(v + 2, end == std::string::npos ? std::string::npos : end - v - 2);
}

// "13.2" from CUDART_VERSION 13020 as LibTorch's CUDA library was compiled; "" without it.
std::string cuda_version() {
  try {
    const long v = at::detail::getCUDAHooks().versionCUDART();
    return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
  } catch (const c10::Error&) {
    return "";  // LibTorch without its CUDA library
  }
}

std::string cudnn_version() {
  try {
    // cuDNN 9 numbers its versions major * 10000 + minor * 100 (92600: 9.26), cuDNN 8
    // major * 1000 + minor * 100 (8907: 8.9).
    const long v = at::detail::getCUDAHooks().versionCuDNN();
    return v >= 90000 ? std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100)
                      : std::to_string(v / 1000) + "." + std::to_string(v / 100 % 10);
  } catch (const c10::Error&) {
    return "";
  }
}

// OpenBLAS's most capable x86-64 kernels for what this CPU may use (cpu_isa(): under a cap, the
// capped class's kernels).
const char* best_openblas_coretype(const CpuIsa& isa) {
  if (isa.avx512 && isa.avx512_bf16) return "CooperLake";
  if (isa.avx512) return "SkylakeX";
  if (isa.avx2) return "Haswell";
  return nullptr;
}

}  // namespace

std::string build_info() {
  std::string s = std::string("alexnet ") + ALEXNET_VERSION + ": LibTorch " + TORCH_VERSION;
  const std::string cuda = cuda_version(), cudnn = cudnn_version(), dnnl = onednn_version();
  s += cuda.empty() ? " (CPU only" : " (CUDA " + cuda + (cudnn.empty() ? "" : ", cuDNN " + cudnn);
  if (!dnnl.empty()) s += ", oneDNN " + dnnl;
  s += at::hasMKL() ? ", MKL" : dlsym(RTLD_DEFAULT, "openblas_get_corename") ? ", OpenBLAS" : "";
  if (!OneDnnFeatures::compiled()) return s + "); --onednn-plan not built";
  // A LibTorch with its oneDNN inside (PyPI's) runs the plan on a second one, the system's.
  const std::string plan = OneDnnFeatures::library_version();
  return s + "); --onednn-plan available" + (plan == dnnl ? "" : " (on oneDNN " + plan + ")");
}

int cuda_compute_capability(const torch::Device& device) {
  if (!device.is_cuda()) return 0;
  // The CUDA runtime is loaded with a CUDA LibTorch; looked up at run time so
  // that a CPU-only build needs no CUDA headers.
  using GetAttribute = int (*)(int*, int, int);
  const auto get = reinterpret_cast<GetAttribute>(dlsym(RTLD_DEFAULT, "cudaDeviceGetAttribute"));
  if (get == nullptr) return 0;
  constexpr int kMajor = 75, kMinor = 76;  // cudaDevAttrComputeCapabilityMajor / Minor
  const int index = device.has_index() ? device.index() : 0;
  int major = 0, minor = 0;
  if (get(&major, kMajor, index) != 0 || get(&minor, kMinor, index) != 0) return 0;
  return major * 10 + minor;
}

torch::Device resolve_device(const std::string& spec) {
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::kCPU;
  if (spec == "cpu") return torch::kCPU;
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    TORCH_CHECK(torch::cuda::is_available(), "--device ", spec,
                ": CUDA is not available (no GPU visible, or LibTorch built without CUDA)");
    int index = 0;
    if (spec.size() > 5) {
      try {
        size_t used = 0;
        index = std::stoi(spec.substr(5), &used);
        TORCH_CHECK(used == spec.size() - 5, "");
      } catch (const std::exception&) {
        TORCH_CHECK(false, "--device ", spec, ": bad GPU index");
      }
    }
    const int count = static_cast<int>(torch::cuda::device_count());
    TORCH_CHECK(index >= 0 && index < count, "--device ", spec, ": only ", count,
                " CUDA device(s) visible");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  TORCH_CHECK(false, "--device ", spec, ": expected cpu, cuda, cuda:N or auto");
}

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

std::string select_blas_kernels() {
  static std::once_flag once;
  static std::string core;
  std::call_once(once, [] {
    // Looked up at run time: LibTorch may use another BLAS (MKL in pip wheels).
    using CoreName = char* (*)();
    using Hook = void (*)();
    const auto corename = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
    const auto quit = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
    const auto init = reinterpret_cast<Hook>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
    if (corename == nullptr) return;
    core = corename();
    // Only a fallback to a pre-AVX core is corrected; a user's choice stands.
    static const std::set<std::string> kGeneric = {"Prescott", "Core2", "Penryn", "Dunnington",
                                                   "Nehalem", "Atom", "Katmai", "Coppermine",
                                                   "Northwood", "Banias"};
    if (std::getenv("OPENBLAS_CORETYPE") != nullptr || !kGeneric.count(core) || !quit || !init)
      return;
    const char* better = best_openblas_coretype(cpu_isa());
    if (better == nullptr) return;
    // Re-runs OpenBLAS's start-up selection, which reads OPENBLAS_CORETYPE; no BLAS
    // call has run yet, and its buffers do not depend on the kernels.
    setenv("OPENBLAS_CORETYPE", better, 0);
    quit();
    init();
    const std::string was = core;
    core = corename();
    spdlog::info("blas: OpenBLAS took this CPU for {}; using its {} kernels (set OPENBLAS_CORETYPE "
                 "to choose)", was, core);
  });
  return core;
}

void reuse_freed_memory() {
#if defined(__GLIBC__)
  for (const char* name : {"GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_",
                           "MALLOC_MMAP_THRESHOLD_"})
    if (std::getenv(name) != nullptr) return;  // the user's allocator settings stand
  // Large blocks from the heap, not mmap (threads' arenas fall back to the main
  // heap for them), and no trimming of its top back to the kernel.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#endif
}

int configure_threads(int requested) {
  TORCH_CHECK(requested >= 0, "--threads must be 0 (all CPUs) or positive, got ", requested);
  static std::once_flag once;
  std::call_once(once, [] {
    spdlog::info("{}", build_info());
    spdlog::info("{}", cpu_summary());
    // What differs by LibTorch flavour, said once (docs/building.md: "Two LibTorch flavours").
    if (!OneDnnFeatures::compiled())
      spdlog::info("fallback: no oneDNN inference plan in this build (its LibTorch keeps its oneDNN "
                   "private, or libdnnl-dev was missing): inference runs LibTorch's own kernels");
  });
  select_blas_kernels();
  // LibTorch's own default can be 1 on small machines; always set it explicitly.
  const int threads = requested > 0 ? requested : available_cpus();
  torch::set_num_threads(threads);
  return threads;
}

torch::Device setup_device(const std::string& device_spec, int threads_requested) {
  const torch::Device device = resolve_device(device_spec);
  const int threads = configure_threads(threads_requested);
  spdlog::info("device {} threads {}", device.str(), threads);
  return device;
}

}  // namespace alexnet::runtime
