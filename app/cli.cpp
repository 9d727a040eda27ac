#include "app/cli.h"
#include "app/precision.h"
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

namespace alexnet::app {

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

}  // namespace

std::string build_info() {
  std::string s = std::string("alexnet ") + ALEXNET_VERSION + ": LibTorch " + TORCH_VERSION;
  const std::string cuda = cuda_version(), cudnn = cudnn_version(), dnnl = onednn_version();
  s += cuda.empty() ? " (CPU only" : " (CUDA " + cuda + (cudnn.empty() ? "" : ", cuDNN " + cudnn);
  if (!dnnl.empty()) s += ", oneDNN " + dnnl;
  s += at::hasMKL() ? ", MKL" : dlsym(RTLD_DEFAULT, "openblas_get_corename") ? ", OpenBLAS" : "";
  s += OneDnnFeatures::compiled() ? "); --onednn-plan available" : "); --onednn-plan not built";
  return s;
}

cxxopts::ParseResult parse_or_usage(cxxopts::Options& options, int argc, const char* const* argv,
                                    bool allow_positional) {
  cxxopts::ParseResult result;
  try {
    result = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    // cxxopts names the value, not the flag: find the flag that carried it,
    // as "--flag value" or "--flag=value".
    std::string message = e.what();
    auto quoted = [&message](const std::string& value) {
      return !value.empty() && (message.find("\u2018" + value + "\u2019") != std::string::npos ||
                                message.find("'" + value + "'") != std::string::npos);
    };
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg.size() < 2 || arg[0] != '-') continue;
      const auto eq = arg.find('=');
      if (eq != std::string::npos && quoted(arg.substr(eq + 1))) {
        message = arg.substr(0, eq) + ": " + message;
        break;
      }
      if (eq == std::string::npos && i + 1 < argc && quoted(argv[i + 1])) {
        message = arg + ": " + message;
        break;
      }
    }
    throw UsageError(message, options.help());
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what(), options.help());
  }
  if (!allow_positional && !result.unmatched().empty()) {
    const std::string& extra = result.unmatched().front();
    std::string message = "unexpected argument '" + extra + "'";
    // A flag with an optional value takes it only after '='.
    for (int i = 2; i < argc; ++i) {
      const std::string previous = argv[i - 1];
      if (argv[i] == extra && previous == "--channels-last") {
        message += " (if it is the value of " + previous + ", write " + previous + "=" + extra + ")";
        break;
      }
    }
    throw UsageError(message, options.help());
  }
  return result;
}

void add_common_options(cxxopts::Options& options) {
  options.add_options("common")
      ("device", "cpu, cuda, cuda:N, or auto (CUDA when available)",
       cxxopts::value<std::string>()->default_value("auto"))
      ("threads", "CPU threads for LibTorch (0 = all CPUs available to the process)",
       cxxopts::value<int>()->default_value("0"))
      ("h,help", "Print this help");
}

bool wants_help(const cxxopts::ParseResult& result) { return result.count("help") > 0; }

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

namespace {

// OpenBLAS's most capable x86-64 kernels this CPU can run, by instruction set.
const char* best_openblas_coretype(const std::set<std::string>& f) {
  const auto has = [&](const char* name) { return f.count(name) > 0; };
  const bool avx512 = has("avx512f") && has("avx512bw") && has("avx512vl") && has("avx512dq");
  if (avx512 && has("avx512_bf16")) return "CooperLake";
  if (avx512) return "SkylakeX";
  if (has("avx2") && has("fma")) return "Haswell";
  return nullptr;
}

}  // namespace

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
    const char* better = best_openblas_coretype(cpu_flags());
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
    // What differs by LibTorch flavour, said once (README: "Two LibTorch flavours").
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

torch::Device setup_runtime(const cxxopts::ParseResult& result) {
  const torch::Device device = resolve_device(result["device"].as<std::string>());
  const int threads = configure_threads(result["threads"].as<int>());
  spdlog::info("device {} threads {}", device.str(), threads);
  return device;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string required_flag(const cxxopts::ParseResult& result, const std::string& name,
                          const cxxopts::Options& options) {
  if (!result.count(name)) throw UsageError("missing --" + name, options.help());
  return result[name].as<std::string>();
}

int64_t positive_flag(const cxxopts::ParseResult& result, const std::string& name,
                      const cxxopts::Options& options) {
  const int64_t v = result[name].as<int64_t>();
  if (v <= 0) throw UsageError("--" + name + " must be positive, got " + std::to_string(v), options.help());
  return v;
}

}  // namespace alexnet::app
