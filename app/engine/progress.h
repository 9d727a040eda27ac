// What long work shows while it runs (progress lines with rate and ETA) and
// what it leaves behind (metrics.jsonl).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

namespace alexnet::engine {

/// Periodic progress: "what step i/n: ... img/s ETA".
class Progress {
 public:
  Progress(std::string what, int64_t total_steps);
  /// Records `images` more processed; returns images/s since the start.
  double advance(int64_t images);
  double rate() const;
  std::string eta() const;
  int64_t step() const { return step_; }

 private:
  std::string what_;
  int64_t total_;
  int64_t step_ = 0;
  int64_t images_ = 0;
  std::chrono::steady_clock::time_point start_;
};

/// Formats seconds as 1h02m03s / 4m05s / 6s.
std::string format_duration(double seconds);

/// Appends JSON lines to a file (metrics.jsonl), flushing each.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path, bool append);
  void write(const std::string& json_object);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::shared_ptr<std::FILE> holder_;
};

}  // namespace alexnet::engine
