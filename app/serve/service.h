// serve's service: what a running server holds (the two listeners' handlers, the connection
// layer, the batcher, the model) and the order of its life: bind, load, serve until a signal,
// drain. Its run() is in serve/service.cpp, its routes and handlers in serve/routes.cpp.
#pragma once

#include "app/serve/model_holder.h"
#include "app/serve/server.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <vector>

namespace alexnet::runtime {
class SignalCatcher;
}

namespace alexnet::serve {

inline constexpr const char* kPredictPath = "/predictions/alexnet";

/// At most N holders at a time (the decoders).
class Slots {
 public:
  explicit Slots(int n) : free_(n) {}
  void acquire() {
    std::unique_lock<std::mutex> lock(mutex_);
    freed_.wait(lock, [&] { return free_ > 0; });
    --free_;
  }
  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++free_;
    }
    freed_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable freed_;
  int free_;
};

class Service {
 public:
  Service(const ServeOptions& options, LoadClassifier load);

  /// Binds, loads, serves until SIGTERM/SIGINT, drains; returns the exit status (service.cpp).
  int run();

 private:
  using Clock = std::chrono::steady_clock;
  enum State { kLoading, kReady, kDraining };
  struct Image {
    std::string name;
    std::string bytes;
  };

  // service.cpp: the life of the server.
  int listen(const std::string& host, int port, RequestHandler& handler, int threads, const char* flag);
  void log_listening(int port, int management_port) const;
  void load_and_serve(const runtime::SignalCatcher& signals, int port);
  void drain(std::future<void>& stopped);

  // routes.cpp: what each request gets.
  void configure();
  void add_predict_route();
  void add_status_routes(RequestHandler& h);
  void add_reload_route();
  void add_error_bodies(RequestHandler& h, bool management);
  void add_request_hooks(RequestHandler& h, bool management);
  void predict(const httplib::Request& req, httplib::Response& res, const std::vector<Image>& images);
  std::string describe(const Served& s) const;

  const ServeOptions options_;
  Metrics metrics_;
  Batcher batcher_;
  Slots decoders_;
  RequestHandler inference_, management_;
  Connections connections_{options_.connections, metrics_};
  std::atomic<State> state_{kLoading};
  ModelHolder models_;
};

}  // namespace alexnet::serve
