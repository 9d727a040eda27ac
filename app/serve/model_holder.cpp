// serve's model holder: loading, warming up and swapping the model serving (serve/model_holder.h).
#include "app/serve/model_holder.h"

#include "app/runtime/errors.h"

#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>
#include <thread>

namespace alexnet::serve {

namespace {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

ModelHolder::ModelHolder(LoadClassifier load, int64_t warm_batch, Metrics& metrics)
    : load_(std::move(load)), warm_batch_(warm_batch), metrics_(metrics) {}

std::shared_ptr<const Served> ModelHolder::current() const {
  std::lock_guard<std::mutex> lock(current_mutex_);
  return current_;
}

void ModelHolder::set_current(std::shared_ptr<const Served> s) {
  std::lock_guard<std::mutex> lock(current_mutex_);
  current_ = std::move(s);
}

void ModelHolder::load() { set_current(load_and_warm_up()); }

std::shared_ptr<const Served> ModelHolder::load_and_warm_up() const {
  const std::shared_ptr<const app::Classifier> classifier = load_();
  auto served = std::make_shared<Served>();
  served->classifier = classifier;
  served->forward = std::make_shared<const Forward>(
      [classifier](const torch::Tensor& images) { return classifier->logits(images); });
  served->sha256 = classifier->sha256;  // load_classifier(..., with_sha256 = true) hashed the bytes it loaded
  served->loaded_at = utc_now();
  // Warm-up: the first pass at a batch size sets up its kernels and memory.
  c10::InferenceMode inference;
  const int64_t crop = classifier->transform.crop_size();
  for (int64_t b : {int64_t{1}, warm_batch_})
    classifier->logits(torch::zeros({b, 3, crop, crop}));
  return served;
}

std::string ModelHolder::reload(const std::string& why) {
  std::promise<std::string> mine;
  std::shared_future<std::string> result;
  bool leader = false;
  {
    std::lock_guard<std::mutex> lock(reload_mutex_);
    if (next_reload_.valid()) {
      ++next_reload_joined_;
      result = next_reload_;  // not started yet: join it
    } else {
      result = mine.get_future().share();
      next_reload_ = result;
      next_reload_joined_ = 0;
      leader = true;
    }
  }
  if (!leader) return result.get();
  std::lock_guard<std::mutex> running(reload_running_);
  int joined = 0;
  {
    std::lock_guard<std::mutex> lock(reload_mutex_);
    next_reload_ = {};  // started: requests from now on form the next one
    joined = next_reload_joined_;
  }
  // On a thread of its own at a lower priority (nice 10), as are the threads its computations
  // start: the load and its warm-up yield the cores to the model thread serving requests.
  const std::string reason = joined ? why + ", and " + std::to_string(joined) + " more requests joined it" : why;
  std::string error;
  std::thread loader([&] {
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
    error = load_again(reason);
  });
  loader.join();
  mine.set_value(error);
  return result.get();
}

std::string ModelHolder::load_again(const std::string& why) {
  spdlog::info("serve: reloading the weights ({})", why);
  try {
    auto fresh = load_and_warm_up();
    set_current(fresh);
    metrics_.reload(true);
    spdlog::info("serve: reloaded {} (SHA-256 {})", fresh->classifier->weights, fresh->sha256.substr(0, 16));
    return "";
  } catch (const std::exception& e) {
    metrics_.reload(false);
    const std::string error = runtime::error_message(e) + "; the previous weights go on serving";
    spdlog::error("serve: reload failed: {}", error);
    return error;
  }
}

}  // namespace alexnet::serve
