// serve's model: the one serving now, warmed up before it serves, and the reloads that replace
// it. A reload swaps the model only once the new one has loaded and warmed up; on any error the
// model serving goes on serving. Requests running on the old model finish on it (they hold it).
#pragma once

#include "app/serve/metrics.h"
#include "app/serve/server.h"

#include <future>
#include <memory>
#include <mutex>
#include <string>

namespace alexnet::serve {

/// One loaded model as the server runs it; a reload makes a new one.
struct Served {
  std::shared_ptr<const app::Classifier> classifier;
  std::shared_ptr<const Forward> forward;
  std::string sha256;
  std::string loaded_at;  // UTC, ISO 8601
};

class ModelHolder {
 public:
  /// `warm_batch`: the largest batch the model will see (its kernels and memory are set up at
  /// 1 and at this size before it serves). `metrics` counts the reloads.
  ModelHolder(LoadClassifier load, int64_t warm_batch, Metrics& metrics);

  /// The model serving now; null until load() has succeeded.
  std::shared_ptr<const Served> current() const;

  /// The first load: throws on any error.
  void load();

  /// Loads the weights again; on any error the model serving now goes on serving. Returns the
  /// error ("" on success). One reload runs at a time. A request made while one runs waits for
  /// the next, which starts when that one ends (so it reads the file as it is after the
  /// request), and every request made meanwhile shares that next one: a burst costs two loads.
  std::string reload(const std::string& why);

 private:
  std::shared_ptr<const Served> load_and_warm_up() const;
  std::string load_again(const std::string& why);
  void set_current(std::shared_ptr<const Served> s);

  const LoadClassifier load_;
  const int64_t warm_batch_;
  Metrics& metrics_;
  mutable std::mutex current_mutex_;
  std::shared_ptr<const Served> current_;
  std::mutex reload_mutex_;                      // guards the two below
  std::shared_future<std::string> next_reload_;  // a reload asked for and not started yet
  int next_reload_joined_ = 0;
  std::mutex reload_running_;
};

}  // namespace alexnet::serve
