#include "app/runtime/signals.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

namespace alexnet::runtime {

namespace {

std::atomic<int> g_last{0};
std::atomic<bool> g_second_is_fatal{false};
int g_pipe[2] = {-1, -1};  // made once, kept for the process's life

extern "C" void alexnet_runtime_on_signal(int sig) {
  const int saved = errno;
  g_last.store(sig);
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_pipe[1], &byte, 1);
  if (g_second_is_fatal.load()) std::signal(sig, SIG_DFL);
  errno = saved;
}

}  // namespace

SignalCatcher::SignalCatcher(std::initializer_list<int> signals, bool second_is_fatal) : signals_(signals) {
  if (g_pipe[0] < 0) {
    TORCH_CHECK(::pipe2(g_pipe, O_CLOEXEC | O_NONBLOCK) == 0, "signals: pipe: ", std::strerror(errno));
  }
  for (unsigned char byte; ::read(g_pipe[0], &byte, 1) == 1;) {  // nothing left from an earlier catcher
  }
  g_last.store(0);
  g_second_is_fatal.store(second_is_fatal);
  struct sigaction action {};
  action.sa_handler = alexnet_runtime_on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  old_.resize(signals_.size() * sizeof(struct sigaction));
  for (size_t i = 0; i < signals_.size(); ++i)
    ::sigaction(signals_[i], &action, reinterpret_cast<struct sigaction*>(old_.data()) + i);
}

SignalCatcher::~SignalCatcher() {
  for (size_t i = 0; i < signals_.size(); ++i)
    ::sigaction(signals_[i], reinterpret_cast<const struct sigaction*>(old_.data()) + i, nullptr);
}

int SignalCatcher::last() const { return g_last.load(); }

int SignalCatcher::wait(int timeout_ms) const {
  pollfd p{g_pipe[0], POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return 0;
  unsigned char byte = 0;
  return ::read(g_pipe[0], &byte, 1) == 1 ? byte : 0;
}

void ignore_sigpipe() { std::signal(SIGPIPE, SIG_IGN); }

}  // namespace alexnet::runtime
