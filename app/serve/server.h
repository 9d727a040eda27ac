// `alexnet serve`: an HTTP inference service on cpp-httplib (Debian's
// libcpp-httplib-dev). Endpoints as TorchServe names them:
//   POST /predictions/alexnet  a raw image body, or multipart/form-data with one
//                              or more images; predict --json's fields; ?topk=K
//   GET  /ping                 200 when serving, 503 while loading or draining
//   GET  /metrics              Prometheus text (serve/metrics.h)
//   GET  /models               the model, its weights file and SHA-256, ...
//   POST /reload               reload the weights (as SIGHUP does)
// Requests are decoded on the connection threads (at most decode_threads at a
// time) and batched for the model (serve/batcher.h). SIGTERM or SIGINT drains:
// no new connections, every request already received is answered, exit 0.
#pragma once

#include "app/classifier.h"
#include "app/serve/batcher.h"

#include <functional>
#include <memory>
#include <string>

namespace alexnet::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (logged)
  Batcher::Options batching;
  int64_t max_body_bytes = 20 << 20;
  int max_connections = 128;   // connection threads; more connections queue for one
  int decode_threads = 2;      // images decoded at the same time
  int read_timeout_s = 10;     // a client silent this long mid-request is dropped
  int keep_alive_s = 5;        // an idle connection is closed after this long
  int drain_timeout_s = 30;    // after SIGTERM, connections still busy this long end after their
                               // request; still open 2 x read_timeout_s + 5 s later, exit 1
};

/// Loads the weights (again, on reload): throws on any error.
using LoadClassifier = std::function<std::shared_ptr<const app::Classifier>()>;

/// Binds, loads, warms up, serves until SIGTERM/SIGINT, drains; returns the exit
/// status (0 after a drain). Throws when the address cannot be bound or the first
/// load fails.
int run_server(const ServeOptions& options, const LoadClassifier& load);

}  // namespace alexnet::serve
