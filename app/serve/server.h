// `alexnet serve`: an HTTP inference service. Endpoints as TorchServe names them:
//   POST /predictions/alexnet  a raw image body, or multipart/form-data with one
//                              or more images; predict --json's fields; ?topk=K
//   GET  /ping                 200 when serving, 503 while loading or draining
//   GET  /metrics              Prometheus text (serve/metrics.h)
//   GET  /models               the model, its weights file and SHA-256, ...
// and on the management listener (127.0.0.1 by default), with the bearer token if set:
//   POST /reload               reload the weights (as SIGHUP does); GET /models, /ping, /metrics
// Connections are read by one event loop (serve/connections.h) with deadlines and limits; a
// request read in full is parsed and routed by cpp-httplib (Debian's libcpp-httplib-dev) on
// a pool of threads, its images decoded there (at most decode_threads at a time) and batched
// for the model (serve/batcher.h). SIGTERM or SIGINT drains: no new connections, every
// request already received is answered, exit 0.
#pragma once

#include "app/classifier.h"
#include "app/serve/batcher.h"
#include "app/serve/connections.h"

#include <functional>
#include <memory>
#include <string>

namespace alexnet::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (logged)
  // The management API (POST /reload, GET /models, /ping, /metrics) listens apart; -1: none.
  std::string management_host = "127.0.0.1";
  int management_port = 8081;
  // A bearer token that every management request must carry (and, with token_inference, every
  // inference request but GET /ping); empty: none.
  std::string token;
  bool token_inference = false;
  Batcher::Options batching;
  ConnectionOptions connections;
  int request_threads = 64;    // complete requests answered at once; more wait, already read
  int decode_threads = 2;      // images decoded at the same time
  int drain_timeout_s = 30;    // after SIGTERM, requests still being received this long are dropped
};

/// The token in `path` (surrounding white space dropped). Throws, naming the file, when it cannot
/// be read, is empty, or when group or others may read or write it (a secret's file is 0600).
std::string read_token_file(const std::string& path);

/// Loads the weights (again, on reload): throws on any error.
using LoadClassifier = std::function<std::shared_ptr<const app::Classifier>()>;

/// Binds, loads, warms up, serves until SIGTERM/SIGINT, drains; returns the exit
/// status (0 after a drain). Throws when the address cannot be bound or the first
/// load fails.
int run_server(const ServeOptions& options, const LoadClassifier& load);

}  // namespace alexnet::serve
