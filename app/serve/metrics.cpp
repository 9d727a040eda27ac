#include "app/serve/metrics.h"

#include <spdlog/fmt/fmt.h>

#include <algorithm>
#include <cmath>

namespace alexnet::serve {

namespace {

// A sample value as Prometheus's text format reads it: the shortest decimal that reads back
// as the same double (fmt's {}), and the format's own NaN, +Inf and -Inf (fmt writes nan, inf).
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

const char* const kPaths[] = {"/predictions/alexnet", "/ping", "/metrics", "/models", "/reload"};

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();  // le: value <= bound
  ++counts_[i];
  sum_ += value;
  ++count_;
}

std::string Histogram::render(const std::string& name) const {
  std::string out;
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
  return out;
}

Metrics::Metrics()
    : latency_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256}) {}

void Metrics::request(const std::string& path, int status, double seconds) {
  const bool known = std::find(std::begin(kPaths), std::end(kPaths), path) != std::end(kPaths);
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{known ? path : "other", status}];
  if (path == kPaths[0]) latency_.observe(seconds);
}

void Metrics::batch(int64_t images) {
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  ++forward_passes_;
  images_ += static_cast<uint64_t>(images);
  batch_size_.observe(static_cast<double>(images));
  recent_.emplace_back(now, images);
  while (!recent_.empty() && now - recent_.front().first > kWindow) recent_.pop_front();
}

void Metrics::set_queue_depth(int64_t depth) {
  std::lock_guard<std::mutex> lock(mutex_);
  queue_depth_ = depth;
}

void Metrics::reload(bool ok) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++(ok ? reloads_ok_ : reloads_failed_);
}

void Metrics::set_connections_open(int64_t open) {
  std::lock_guard<std::mutex> lock(mutex_);
  connections_open_ = open;
}

void Metrics::connection_closed(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++connections_closed_[reason];
}

uint64_t Metrics::forward_passes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return forward_passes_;
}

uint64_t Metrics::images() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return images_;
}

double Metrics::images_per_second() const {
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t n = 0;
  for (const auto& [when, images] : recent_)
    if (now - when <= kWindow) n += images;
  // Over the window, or over the time since start while that is shorter.
  const double seconds = std::min(std::chrono::duration<double>(kWindow).count(),
                                  std::chrono::duration<double>(now - started_).count());
  return seconds > 0 ? static_cast<double>(n) / seconds : 0.0;
}

std::string Metrics::render() const {
  const double rate = images_per_second();
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  // A family's # HELP and # TYPE lines, then its samples.
  const auto family = [&out](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  const auto sample = [&out](const std::string& name, const std::string& value) { out += name + " " + value + "\n"; };
  family("alexnet_requests_total", "counter", "HTTP responses, by path and status code.");
  for (const auto& [key, n] : requests_)
    sample("alexnet_requests_total{path=\"" + key.first + "\",code=\"" + std::to_string(key.second) + "\"}",
           std::to_string(n));
  family("alexnet_request_duration_seconds", "histogram", "Time from a prediction request's arrival to its answer.");
  out += latency_.render("alexnet_request_duration_seconds");
  family("alexnet_batch_size", "histogram", "Images per forward pass.");
  out += batch_size_.render("alexnet_batch_size");
  family("alexnet_forward_passes_total", "counter", "Forward passes of the model.");
  sample("alexnet_forward_passes_total", std::to_string(forward_passes_));
  family("alexnet_images_total", "counter", "Images classified.");
  sample("alexnet_images_total", std::to_string(images_));
  family("alexnet_images_per_second", "gauge", "Images classified per second over the last 10 s.");
  sample("alexnet_images_per_second", number(rate));
  family("alexnet_queue_depth", "gauge", "Decoded images waiting for a forward pass.");
  sample("alexnet_queue_depth", std::to_string(queue_depth_));
  family("alexnet_reloads_total", "counter", "Weight reloads (SIGHUP, POST /reload), by result.");
  sample("alexnet_reloads_total{result=\"ok\"}", std::to_string(reloads_ok_));
  sample("alexnet_reloads_total{result=\"failed\"}", std::to_string(reloads_failed_));
  family("alexnet_connections_open", "gauge", "Open client connections, idle and slow ones included.");
  sample("alexnet_connections_open", std::to_string(connections_open_));
  family("alexnet_connections_closed_total", "counter",
         "Connections closed (or refused at accept), by why: answered, idle, client, client_mid_request, refused "
         "(answered 4xx before a handler), drain, connection_limit, per_client_limit.");
  for (const auto& [reason, n] : connections_closed_)
    sample("alexnet_connections_closed_total{reason=\"" + reason + "\"}", std::to_string(n));
  return out;
}

}  // namespace alexnet::serve
