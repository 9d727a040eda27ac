// What this CPU does at most, measured in the run that compares layers with it
// (bench --layers): the peak rate of a precision's best kernel, and the read
// bandwidth from cache and from DRAM.
#pragma once

#include "app/runtime/precision.h"

#include <cstdint>
#include <string>

namespace alexnet::engine {

struct Peak {
  double gflops = 0;  // GFLOP/s (int8: GOP/s)
  std::string what;   // the kernel that gave it: "bf16 4096x4096 torch::mm", ...
};

/// The peak of `precision`'s kernels (training: fp32's): fp32, an FMA matrix product;
/// bf16, the better of a matrix product and a 3x3 convolution (AMX where the CPU has
/// it); int8, the better of LibTorch's quantized linear and 3x3 convolution (VNNI,
/// or AMX where LibTorch's oneDNN runs the convolution with it). ONEDNN_MAX_CPU_ISA
/// at AVX512_CORE_VNNI gives a VNNI peak on an AMX machine.
Peak measure_peak(runtime::Precision precision, bool train);

/// Read bandwidth over a buffer of `bytes`, in GB/s.
double read_gbps(int64_t bytes);

}  // namespace alexnet::engine
