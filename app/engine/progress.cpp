#include "app/engine/progress.h"

#include <c10/util/Exception.h>
#include <spdlog/sinks/base_sink.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

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

namespace {

// The live line and the log lines share stderr: one lock orders them.
std::mutex g_live_mutex;
ProgressStyle g_style = ProgressStyle::kLines;
std::string g_live;  // the text on screen now; empty = none
std::chrono::steady_clock::time_point g_last_draw;

constexpr const char* kEraseLine = "\r\033[K";  // to column 0, clear to the end of the line

int terminal_columns() {
  winsize w{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 0) return w.ws_col;
  return 80;
}

// Called with g_live_mutex held.
void draw_locked() {
  std::fputs(kEraseLine, stderr);
  // One column short of the width: a line that fills it would wrap, and \r would redraw
  // only its last row.
  const size_t width = static_cast<size_t>(std::max(10, terminal_columns() - 1));
  std::fwrite(g_live.data(), 1, std::min(g_live.size(), width), stderr);
  std::fflush(stderr);
}

class BelowLiveLineSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    std::lock_guard<std::mutex> lock(g_live_mutex);
    if (!g_live.empty()) std::fputs(kEraseLine, stderr);
    std::fwrite(formatted.data(), 1, formatted.size(), stderr);
    if (!g_live.empty()) draw_locked();
    std::fflush(stderr);
  }
  void flush_() override { std::fflush(stderr); }
};

}  // namespace

void set_progress_style(ProgressStyle style) { g_style = style; }
ProgressStyle progress_style() { return g_style; }

ProgressStyle detect_progress_style() {
  const char* term = std::getenv("TERM");
  const bool redraws = term != nullptr && *term != '\0' && std::strcmp(term, "dumb") != 0;
  return ::isatty(STDERR_FILENO) && redraws ? ProgressStyle::kBar : ProgressStyle::kLines;
}

std::string progress_bar(int64_t done, int64_t total, int width) {
  const int64_t filled = total > 0 ? std::clamp<int64_t>(done * width / total, 0, width) : 0;
  return "[" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(width - filled), '.') +
         "]";
}

void show_live(const std::string& text, bool force) {
  if (g_style != ProgressStyle::kBar) return;
  std::lock_guard<std::mutex> lock(g_live_mutex);
  const auto now = std::chrono::steady_clock::now();
  if (!force && !g_live.empty() && now - g_last_draw < std::chrono::milliseconds(100)) return;
  g_last_draw = now;
  g_live = text;
  draw_locked();
}

void clear_live() {
  std::lock_guard<std::mutex> lock(g_live_mutex);
  if (g_live.empty()) return;
  g_live.clear();
  std::fputs(kEraseLine, stderr);
  std::fflush(stderr);
}

std::shared_ptr<spdlog::sinks::sink> stderr_sink_below_live_line() {
  return std::make_shared<BelowLiveLineSink>();
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
