#include "app/runtime/errors.h"

#include <c10/util/Exception.h>

namespace alexnet::runtime {

std::string strip_backtrace(std::string what) {
  const auto cut = what.find("\nException raised from");
  if (cut != std::string::npos) what.resize(cut);
  while (!what.empty() && (what.back() == '\n' || what.back() == ' ')) what.pop_back();
  return what;
}

std::string error_message(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  return strip_backtrace(c10_error ? c10_error->what_without_backtrace() : e.what());
}

}  // namespace alexnet::runtime
