#include "app/cli.h"

#include <spdlog/spdlog.h>

#include <sched.h>
#include <cstdio>
#include <sstream>

namespace alexnet::app {

cxxopts::ParseResult parse_or_usage(cxxopts::Options& options, int argc, const char* const* argv,
                                    bool allow_positional) {
  cxxopts::ParseResult result;
  try {
    result = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::incorrect_argument_type& e) {
    // cxxopts names the value, not the flag: find the flag that preceded it.
    std::string message = e.what();
    for (int i = 1; i + 1 < argc; ++i) {
      const std::string value = argv[i + 1];
      if (argv[i][0] == '-' && !value.empty() && message.find(value) != std::string::npos) {
        message = std::string(argv[i]) + ": " + message;
        break;
      }
    }
    throw UsageError(message, options.help());
  } catch (const cxxopts::exceptions::exception& e) {
    throw UsageError(e.what(), options.help());
  }
  if (!allow_positional && !result.unmatched().empty()) {
    throw UsageError("unexpected argument '" + result.unmatched().front() + "'", options.help());
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

int configure_threads(int requested) {
  TORCH_CHECK(requested >= 0, "--threads must be 0 (all CPUs) or positive, got ", requested);
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
