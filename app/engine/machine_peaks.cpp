// Measures what this CPU does at most (app/engine/machine_peaks.h): each rate the
// fastest of several runs after warm-ups, since a shared machine only slows a run down.
#include "app/engine/machine_peaks.h"

#include "model/int8.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>

namespace alexnet::engine {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The fastest of `runs` calls after `warmups` untimed ones, in seconds.
double fastest(int warmups, int runs, const std::function<void()>& run) {
  double best = 1e30;
  for (int i = 0; i < warmups + runs; ++i) {
    const auto start = Clock::now();
    run();
    if (i >= warmups) best = std::min(best, since(start));
  }
  return best;
}

// The best of 10 n x n products after 2 warm-ups: a peak, so the fastest run (a shared machine
// only ever slows a run down). bf16 runs on AMX where the CPU has it, and needs the larger
// product to approach its peak (2048: about half of 4096's rate on the AMX machine).
double product_gflops(torch::ScalarType dtype, int64_t n) {
  const auto a = torch::randn({n, n}).to(dtype), b = torch::randn({n, n}).to(dtype);
  return 2.0 * n * n * n / fastest(2, 10, [&] { torch::mm(a, b); }) / 1e9;
}

// The best of 10 3x3 convolutions, 256 -> 256 channels on a channels-last 32x256x28x28 input
// (conv5's kind of layer, at a size that keeps the kernel busy), after 2 warm-ups. oneDNN's
// AMX bf16 convolutions run up to twice the rate of its bf16 matrix product here (they exceeded
// a matmul-only peak by up to 2.5x), so bf16's peak is the better of the two.
double conv_peak_gflops(torch::ScalarType dtype) {
  const auto format = torch::MemoryFormat::ChannelsLast;
  const auto x = torch::randn({32, 256, 28, 28}).to(dtype).contiguous(format);
  const auto w = torch::randn({256, 256, 3, 3}).to(dtype).contiguous(format);
  return 2.0 * 32 * 256 * 28 * 28 * 256 * 9 / fastest(2, 10, [&] { torch::conv2d(x, w, {}, 1, 1); }) / 1e9;
}

}  // namespace

Peak measure_peak(runtime::Precision precision, bool train) {
  if (precision == runtime::Precision::kInt8) {
    // A convolution's int8 kernel and a product's can differ (AMX, VNNI): the better of the two.
    Peak peak{int8_matmul_gops(2048, 10), "int8 2048x2048 matrix product"};
    const double conv = int8_conv_gops(10);
    if (conv > peak.gflops) peak = {conv, "int8 3x3 convolution 256->256 at 28x28"};
    return peak;
  }
  if (train || precision != runtime::Precision::kBf16)
    return {product_gflops(torch::kFloat, 2048), "fp32 2048x2048 torch::mm"};
  Peak peak{product_gflops(torch::kBFloat16, 4096), "bf16 4096x4096 torch::mm"};
  const double conv = conv_peak_gflops(torch::kBFloat16);
  if (conv > peak.gflops) peak = {conv, "bf16 3x3 convolution 256->256 at 28x28"};
  return peak;
}

// Read bandwidth over a buffer of `bytes`, in GB/s: the fastest of several parallel sums
// after one that brings it into the cache (or as far as it fits).
double read_gbps(int64_t bytes) {
  const auto buffer = torch::ones({bytes / 4}, torch::kFloat);
  return static_cast<double>(bytes) / fastest(1, 7, [&] { (void)buffer.sum(); }) / 1e9;
}

}  // namespace alexnet::engine
