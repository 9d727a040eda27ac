#include "app/engine/progress.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace alexnet::engine {

Progress::Progress(std::string what, int64_t total_steps)
    : what_(std::move(what)), total_(total_steps), start_(std::chrono::steady_clock::now()) {}

double Progress::advance(int64_t images) {
  ++step_;
  images_ += images;
  return rate();
}

double Progress::rate() const {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return s > 0 ? images_ / s : 0.0;
}

std::string Progress::eta() const {
  if (step_ == 0 || total_ <= 0) return "?";
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return format_duration(s / step_ * std::max<int64_t>(0, total_ - step_));
}

std::string format_duration(double seconds) {
  const auto total = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  const int64_t h = total / 3600, m = total / 60 % 60, s = total % 60;
  char buf[32];
  if (h > 0)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm%02llds", static_cast<long long>(h),
                  static_cast<long long>(m), static_cast<long long>(s));
  else if (m > 0)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(m), static_cast<long long>(s));
  else
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  return buf;
}

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  TORCH_CHECK(file_ != nullptr, path, ": cannot open for writing");
  holder_.reset(file_, [](std::FILE* f) { std::fclose(f); });
}

void MetricsLog::write(const std::string& json_object) {
  std::fprintf(file_, "%s\n", json_object.c_str());
  std::fflush(file_);
}

}  // namespace alexnet::engine
