// What differs in LibTorch's C++ API between the versions this project builds against
// (Debian's 1.13 and PyPI's 2.x; see docs/building.md, "Two LibTorch flavours"), in one place.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <variant>

namespace alexnet::compat {

// Module options hold their alternatives (padding, padding mode) in c10::variant in
// LibTorch 1.x and in std::variant from 2.0. (Not __has_include(<c10/util/variant.h>):
// with Debian's libtorch-dev installed, /usr/include has that header whatever LibTorch
// is being built against.)
#if TORCH_VERSION_MAJOR >= 2
using std::get;
using std::holds_alternative;
#else
using c10::get;
using c10::holds_alternative;
#endif

// Autocast's state per device (CPU or CUDA): LibTorch 2.4 replaced the per-device functions
// (is_cpu_enabled, set_autocast_gpu_dtype, ...) with ones taking a device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
inline bool autocast_enabled(bool cuda) {
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
}
inline at::ScalarType autocast_dtype(bool cuda) {
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
}
inline void set_autocast(bool cuda, bool enabled, at::ScalarType dtype) {
  at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, enabled);
  at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, dtype);
}
#else
inline bool autocast_enabled(bool cuda) {
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
inline at::ScalarType autocast_dtype(bool cuda) {
  return cuda ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
inline void set_autocast(bool cuda, bool enabled, at::ScalarType dtype) {
  if (cuda) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
}
#endif

}  // namespace alexnet::compat
