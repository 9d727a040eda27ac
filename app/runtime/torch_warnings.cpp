// LibTorch's warnings through spdlog (app/runtime/torch_warnings.h). c10's handler interface
// changed in 2.0: process(SourceLocation, msg, verbatim) became process(const Warning&).
#include "app/runtime/torch_warnings.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>

#include <mutex>
#include <set>
#include <string>

namespace alexnet::runtime {

namespace {

class LogHandler final : public c10::WarningHandler {
 public:
#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& warning) override { log(warning.msg()); }
#else
  void process(const c10::SourceLocation&, const std::string& msg, const bool) override { log(msg); }
#endif

 private:
  void log(const std::string& msg) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (seen_.insert(msg).second) spdlog::warn("libtorch: {}", msg);
  }
  std::mutex mutex_;
  std::set<std::string> seen_;
};

}  // namespace

void route_libtorch_warnings() {
  static LogHandler handler;  // lives as long as the threads that may call it
#if TORCH_VERSION_MAJOR >= 2
  c10::WarningUtils::set_warning_handler(&handler);
#else
  c10::Warning::set_warning_handler(&handler);
#endif
}

}  // namespace alexnet::runtime
