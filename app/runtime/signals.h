// Stop and reload signals turned into something a thread can wait on. A handler may
// only do async-signal-safe things, so it records the signal and writes its number
// to a pipe; the program acts on it outside the handler.
#pragma once

#include <initializer_list>
#include <vector>

namespace alexnet::runtime {

/// While alive, the given signals are caught; on destruction the previous handlers
/// come back. One instance at a time per process.
class SignalCatcher {
 public:
  /// With `second_is_fatal`, a caught signal restores its default action, so a
  /// second one (Ctrl-C twice) ends the process at once.
  SignalCatcher(std::initializer_list<int> signals, bool second_is_fatal);
  ~SignalCatcher();
  SignalCatcher(const SignalCatcher&) = delete;
  SignalCatcher& operator=(const SignalCatcher&) = delete;

  /// The last signal caught; 0 when none.
  int last() const;
  /// Waits up to `timeout_ms` (-1: no limit) for a signal; returns it, or 0 when
  /// none came. Each signal is returned once.
  int wait(int timeout_ms) const;

 private:
  std::vector<int> signals_;
  std::vector<char> old_;  // the previous struct sigaction of each signal, bytewise
};

/// Writes to a closed socket or pipe fail with EPIPE instead of killing the process.
void ignore_sigpipe();

}  // namespace alexnet::runtime
