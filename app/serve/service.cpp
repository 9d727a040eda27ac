// serve's life: bind both listeners, load and warm up the model, serve until SIGTERM or SIGINT
// (SIGHUP reloads), then drain: no new connections, every request received answered.
#include "app/serve/service.h"

#include "app/runtime/signals.h"

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>

namespace alexnet::serve {

namespace {

// Management requests answered at once: reloads asked for together wait together, and share
// one load (ModelHolder::reload), only while each holds a thread.
constexpr int kManagementThreads = 32;

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

}  // namespace

Service::Service(const ServeOptions& options, LoadClassifier load)
    : options_(options), batcher_(options.batching, metrics_), decoders_(options.decode_threads),
      models_(std::move(load), options.batching.max_batch, metrics_) {}

int Service::run() {
  // The main thread waits for these below; until then they are only noted.
  const runtime::SignalCatcher signals({SIGTERM, SIGINT, SIGHUP}, /*second_is_fatal=*/false);
  runtime::ignore_sigpipe();  // a client gone mid-answer is an error on its socket, not the end of us
  configure();
  const int port = listen(options_.host, options_.port, inference_, options_.request_threads, "--port");
  const int management_port =
      options_.management_port < 0
          ? -1
          : listen(options_.management_host, options_.management_port, management_, kManagementThreads,
                   "--management-port");
  std::promise<void> loop_ended;
  std::future<void> stopped = loop_ended.get_future();
  std::thread loop([&] {
    try {
      connections_.run();
      loop_ended.set_value();
    } catch (...) {
      loop_ended.set_exception(std::current_exception());
    }
  });
  log_listening(port, management_port);

  const int status = 0;
  try {
    load_and_serve(signals, port);
  } catch (...) {
    drain(stopped);
    loop.join();
    throw;
  }
  drain(stopped);
  loop.join();
  stopped.get();  // rethrows the loop's error
  spdlog::info("serve: drained: {} images in {} forward passes; exit {}", metrics_.images(),
               metrics_.forward_passes(), status);
  return status;
}

int Service::listen(const std::string& host, int port, RequestHandler& handler, int threads, const char* flag) {
  try {
    return connections_.listen(host, port, handler, threads);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("serve: ") + e.what() + "; " + flag + " chooses another, 0 any free one");
  }
}

void Service::log_listening(int port, int management_port) const {
  spdlog::info("serve: listening on http://{}:{} (/ping answers 503 until the model is ready)", options_.host, port);
  if (management_port < 0) return;
  spdlog::info("serve: management on http://{}:{} (POST /reload; GET /models, /ping, /metrics){}",
               options_.management_host, management_port,
               options_.token.empty() ? "" : "; requests carry the bearer token (--token-file)");
  if (options_.token.empty() && !is_loopback(options_.management_host))
    spdlog::warn("serve: the management port listens on {} without --token-file: whoever reaches it can reload "
                 "the model", options_.management_host);
}

/// The first load, then the signals until one says stop. Throws when the first load fails.
void Service::load_and_serve(const runtime::SignalCatcher& signals, int port) {
  const auto started = Clock::now();
  models_.load();
  const ConnectionOptions& c = options_.connections;
  spdlog::info("serve: ready in {:.1f} s: POST http://{}:{}{} (max batch {}, max delay {} ms, {} request threads, "
               "{} decoders; at most {} connections, {} per client address; headers within {} s); SIGTERM drains, "
               "SIGHUP reloads",
               std::chrono::duration<double>(Clock::now() - started).count(), options_.host, port, kPredictPath,
               options_.batching.max_batch, options_.batching.max_delay.count() / 1000.0, options_.request_threads,
               options_.decode_threads, c.max_connections, c.max_per_client, c.header_timeout_s);
  state_ = kReady;
  for (;;) {
    const int sig = signals.wait(-1);
    if (sig == SIGHUP) {
      models_.reload("SIGHUP");
    } else if (sig == SIGTERM || sig == SIGINT) {
      spdlog::info("serve: {}: draining (no new connections; answering what was received)",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
      return;
    }
  }
}

void Service::drain(std::future<void>& stopped) {
  state_ = kDraining;
  connections_.drain();
  if (stopped.wait_for(std::chrono::seconds(options_.drain_timeout_s)) != std::future_status::ready) {
    spdlog::warn("serve: connections still busy after {} s (--drain-timeout): closing those not being answered",
                 options_.drain_timeout_s);
    connections_.cut();
    // What is left is being answered: a forward pass and a write, each bounded.
    const auto grace = std::chrono::seconds(2 * options_.connections.write_timeout_s + 5);
    if (stopped.wait_for(grace) != std::future_status::ready) {
      spdlog::error("serve: connections still open {} s after that: exiting without them (exit 1)",
                    grace.count());
      std::fflush(nullptr);
      std::_Exit(1);
    }
  }
  batcher_.stop();
}

}  // namespace alexnet::serve
