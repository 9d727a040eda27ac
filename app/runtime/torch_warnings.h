// LibTorch's warnings (TORCH_WARN) through the project's log, as "[10:01:03] libtorch: ...",
// each distinct message once, instead of c10's own "[W1207 09:59:48.75 Quantizer.cpp:111]
// Warning: ..." lines on stderr, which break a live progress line and repeat per call.
#pragma once

namespace alexnet::runtime {

/// Routes the calling thread's LibTorch warnings to spdlog (c10 keeps one handler per
/// thread: main() calls it for the main thread, where models are built and run).
void route_libtorch_warnings();

}  // namespace alexnet::runtime
