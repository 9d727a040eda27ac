// The text users see of an exception: its message without LibTorch's C++ backtrace.
#pragma once

#include <exception>
#include <string>

namespace alexnet::runtime {

/// `what` cut before "\nException raised from" (where c10::Error's backtrace starts,
/// also when one error's text was wrapped into another's), trailing blanks removed.
std::string strip_backtrace(std::string what);

/// The message of `e`: a c10::Error's what_without_backtrace(), else what(), then
/// strip_backtrace().
std::string error_message(const std::exception& e);

}  // namespace alexnet::runtime
