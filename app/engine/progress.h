// What long work shows while it runs (progress lines with rate and ETA) and
// what it leaves behind (metrics.jsonl).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include <spdlog/sinks/sink.h>

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

/// How long work shows progress on stderr: periodic log lines (pipes, files,
/// CI) or one live bar redrawn in place (a terminal). Process-wide; main sets it
/// from --progress before any work starts.
enum class ProgressStyle { kLines, kBar };
void set_progress_style(ProgressStyle style);
ProgressStyle progress_style();
/// kBar when stderr is a terminal that can redraw a line (TERM set, not "dumb").
ProgressStyle detect_progress_style();

/// "[########............]": done/total in `width` cells.
std::string progress_bar(int64_t done, int64_t total, int width = 20);
/// Bar style: redraws the live line as `text`, cut to the terminal's width;
/// at most ten times a second unless `force`. A no-op in line style.
void show_live(const std::string& text, bool force = false);
/// Removes the live line; the next log line takes its place.
void clear_live();
/// A stderr sink for spdlog that writes each log line above the live line, so
/// that the bar stays at the bottom and no line is drawn over.
std::shared_ptr<spdlog::sinks::sink> stderr_sink_below_live_line();

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
