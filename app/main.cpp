// alexnet: the command-line entry point. Only this file decides exit statuses:
// 0 success, 1 error (message "error: ..."), 2 usage error (usage printed).
#include "app/cli.h"
#include "app/commands.h"
#include "app/engine/progress.h"
#include "app/runtime/cpu.h"
#include "app/runtime/errors.h"
#include "app/runtime/machine.h"
#include "app/runtime/precision.h"
#include "app/runtime/torch_warnings.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

namespace {

constexpr const char* kUsage =
    "usage: alexnet <command> [options]\n"
    "\n"
    "commands:\n"
    "  train     train AlexNet (default: Fashion-MNIST from Debian's package)\n"
    "  eval      loss, top-1/top-5, per-class accuracy, confusion matrix\n"
    "  predict   classify images (top-k classes with probabilities)\n"
    "  info      describe a weights file (format, classes, parameters)\n"
    "  export    write weights as .pth (torch.load), .pt (torch.jit.load) or .safetensors\n"
    "  bench     measure throughput: model (infer/train), data loading, end to end\n"
    "  serve     an HTTP inference service with dynamic batching\n"
    "\n"
    "Run 'alexnet <command> --help' for the options of a command.\n";

using Command = int (*)(int, const char* const*);

struct Entry {
  const char* name;
  Command run;
};

constexpr Entry kCommands[] = {
    {"train", alexnet::app::run_train},
    {"eval", alexnet::app::run_eval},
    {"predict", alexnet::app::run_predict},
    {"info", alexnet::app::run_info},
    {"export", alexnet::app::run_export},
    {"bench", alexnet::app::run_bench},
    {"serve", alexnet::app::run_serve},
};

}  // namespace

int main(int argc, char** argv) {
  // Log lines go above a live progress bar when there is one (engine/progress.h).
  auto logger = std::make_shared<spdlog::logger>("alexnet", alexnet::engine::stderr_sink_below_live_line());
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S] %v");
  alexnet::runtime::route_libtorch_warnings();
  // Before any ATen operation: ATen reads its CPU capability once.
  const std::string cap_warning = alexnet::runtime::apply_cpu_isa_cap();
  if (!cap_warning.empty()) spdlog::warn("{}", cap_warning);

  if (argc < 2) {
    std::fprintf(stderr, "%s\nerror: no command given\n", kUsage);
    return 2;
  }
  const std::string command = argv[1];
  if (command == "-h" || command == "--help" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (command == "--version") {
    std::printf("%s\n%s; %s\n", alexnet::runtime::build_info().c_str(), alexnet::runtime::cpu_summary().c_str(),
                alexnet::runtime::auto_precision_summary().c_str());
    return 0;
  }
  for (const auto& entry : kCommands) {
    if (command != entry.name) continue;
    try {
      const int status = entry.run(argc - 1, argv + 1);
      alexnet::engine::clear_live();
      return status;
    } catch (const alexnet::app::UsageError& e) {
      alexnet::engine::clear_live();
      if (!e.usage().empty()) std::fprintf(stderr, "%s\n", e.usage().c_str());
      std::fprintf(stderr, "error: %s\n", e.what());
      return 2;
    } catch (const std::exception& e) {  // c10::Error too: users get its message, not its C++ backtrace
      alexnet::engine::clear_live();
      std::fprintf(stderr, "error: %s\n", alexnet::runtime::error_message(e).c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "%s\nerror: unknown command '%s'\n", kUsage, command.c_str());
  return 2;
}
