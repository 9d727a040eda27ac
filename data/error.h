// What data/'s file readers throw. They include no LibTorch (file.h,
// idx_file.h, cifar_file.h, image_header.h), so that the fuzzer (tests/fuzz)
// builds them alone with clang and sanitizers; app/main.cpp prints a DataError
// as it prints any exception: "error: <message>", exit status 1.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace alexnet::data {

class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Throws DataError with the parts streamed one after another, as TORCH_CHECK
/// joins its message: fail(path, ": ", n, " bytes").
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw DataError(message.str());
}

/// fail(parts...) unless `ok`. The parts are evaluated either way: keep them cheap.
template <typename... Parts>
void check(bool ok, const Parts&... parts) {
  if (!ok) fail(parts...);
}

}  // namespace alexnet::data
