#include "app/serve/server.h"

#include "app/runtime/json.h"
#include "app/runtime/machine.h"
#include "data/decode.h"
#include "data/image.h"
#include "model/hub_hash.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace alexnet::serve {

namespace {

using Clock = std::chrono::steady_clock;
using runtime::JsonObject;

constexpr const char* kPredictPath = "/predictions/alexnet";

// A signal handler may only do async-signal-safe things: it writes the signal's
// number to a pipe, and the main thread acts on it.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_signal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = ::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

void install_signal_handlers() {
  TORCH_CHECK(::pipe2(g_signal_pipe, O_CLOEXEC) == 0, "serve: pipe: ", std::strerror(errno));
  ::fcntl(g_signal_pipe[1], F_SETFL, O_NONBLOCK);
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client gone mid-answer is an error on its socket, not the end of us
}

/// The next signal, or 0 after `timeout_ms` (-1: wait for one).
int next_signal(int timeout_ms) {
  pollfd p{g_signal_pipe[0], POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return 0;
  unsigned char byte = 0;
  return ::read(g_signal_pipe[0], &byte, 1) == 1 ? byte : 0;
}

// The listening socket is cpp-httplib's (protected): a drain shuts it down so
// that no connection is accepted, while the accepted ones are still served.
class HttpServer : public httplib::Server {
 public:
  void stop_accepting() {
    const socket_t s = svr_sock_.load();
    if (s != INVALID_SOCKET) ::shutdown(s, SHUT_RDWR);
  }
  /// cpp-httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into Debian's
  /// library): more clients connecting at once would see their connections dropped. Listening
  /// again on the bound socket sets the backlog.
  void raise_backlog(int backlog) {
    const socket_t s = svr_sock_.load();
    if (s != INVALID_SOCKET) ::listen(s, backlog);
  }
  /// The drain's deadline: connections end after the request they are on.
  void end_connections() { svr_sock_.store(INVALID_SOCKET); }
};

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

/// One loaded model as the server runs it; a reload makes a new one.
struct Served {
  std::shared_ptr<const app::Classifier> classifier;
  std::shared_ptr<const Forward> forward;
  std::string sha256;
  std::string loaded_at;  // UTC, ISO 8601
};

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// c10::Error's what() ends in a C++ backtrace; clients get the message.
std::string message_of(const std::exception& e) {
  std::string s = e.what();
  s = s.substr(0, s.find("\nException raised from"));
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

void json_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(JsonObject().str("error", message).dump() + "\n", "application/json");
  if (status == 503) res.set_header("Retry-After", "1");
}

std::shared_ptr<const Served> make_served(std::shared_ptr<const app::Classifier> classifier, const Batcher::Options& batching) {
  auto served = std::make_shared<Served>();
  served->classifier = classifier;
  served->forward = std::make_shared<const Forward>(
      [classifier](const torch::Tensor& images) { return classifier->logits(images); });
  served->sha256 = sha256_hex(classifier->weights);
  served->loaded_at = utc_now();
  // Warm-up: the first pass at a batch size sets up its kernels and memory.
  c10::InferenceMode inference;
  const int64_t crop = classifier->transform.crop_size();
  for (int64_t b : {int64_t{1}, batching.max_batch})
    classifier->logits(torch::zeros({b, 3, crop, crop}));
  return served;
}

class Service {
 public:
  Service(const ServeOptions& options, LoadClassifier load)
      : options_(options), load_(std::move(load)), batcher_(options.batching, metrics_),
        decoders_(options.decode_threads) {}

  int run() {
    install_signal_handlers();
    configure();
    int port = options_.port;
    if (port == 0) {
      port = http_.bind_to_any_port(options_.host);
      TORCH_CHECK(port > 0, "serve: cannot listen on ", options_.host, " (any port): ", std::strerror(errno));
    } else {
      TORCH_CHECK(http_.bind_to_port(options_.host, port), "serve: cannot listen on ", options_.host, ":", port,
                  " (", std::strerror(errno), "); --port chooses another, 0 any free one");
    }
    http_.raise_backlog(SOMAXCONN);
    std::promise<void> listened;
    std::future<void> stopped = listened.get_future();
    std::thread listener([&] {
      try {  // cpp-httplib starts its connection threads here, which can fail
        http_.listen_after_bind();
        listened.set_value();
      } catch (...) {
        listened.set_exception(std::current_exception());
      }
    });
    spdlog::info("serve: listening on http://{}:{} (/ping answers 503 until the model is ready)", options_.host, port);

    int status = 0;
    try {
      const auto started = Clock::now();
      set_served(make_served(load_(), options_.batching));
      spdlog::info("serve: ready in {:.1f} s: POST http://{}:{}{} (max batch {}, max delay {} ms, {} connection threads, "
                   "{} decoders); SIGTERM drains, SIGHUP reloads",
                   std::chrono::duration<double>(Clock::now() - started).count(), options_.host, port, kPredictPath,
                   options_.batching.max_batch, options_.batching.max_delay.count() / 1000.0,
                   options_.max_connections, options_.decode_threads);
      state_ = kReady;
      for (;;) {
        const int sig = next_signal(-1);
        if (sig == SIGHUP) {
          reload("SIGHUP");
        } else if (sig == SIGTERM || sig == SIGINT) {
          spdlog::info("serve: {}: draining (no new connections; answering what was received)",
                       sig == SIGTERM ? "SIGTERM" : "SIGINT");
          break;
        }
      }
    } catch (...) {
      drain(stopped);
      listener.join();
      throw;
    }
    drain(stopped);
    listener.join();
    spdlog::info("serve: drained: {} images in {} forward passes; exit {}", metrics_.images(),
                 metrics_.forward_passes(), status);
    return status;
  }

 private:
  enum State { kLoading, kReady, kDraining };

  void drain(std::future<void>& stopped) {
    state_ = kDraining;
    http_.stop_accepting();
    if (stopped.wait_for(std::chrono::seconds(options_.drain_timeout_s)) != std::future_status::ready) {
      spdlog::warn("serve: connections still busy after {} s (--drain-timeout): ending them after their current request",
                   options_.drain_timeout_s);
      http_.end_connections();
      // A client trickling its body one byte per --read-timeout would hold its thread forever.
      const auto grace = std::chrono::seconds(2 * options_.read_timeout_s + 5);
      if (stopped.wait_for(grace) != std::future_status::ready) {
        spdlog::error("serve: connections still open {} s after that: exiting without them (exit 1)",
                      grace.count());
        std::fflush(nullptr);
        std::_Exit(1);
      }
    }
    batcher_.stop();
  }

  std::shared_ptr<const Served> served() {
    std::lock_guard<std::mutex> lock(served_mutex_);
    return served_;
  }
  void set_served(std::shared_ptr<const Served> s) {
    std::lock_guard<std::mutex> lock(served_mutex_);
    served_ = std::move(s);
  }

  /// Loads the weights again; on any error the model serving now goes on serving.
  /// Returns the error ("" on success).
  std::string reload(const std::string& why) {
    std::lock_guard<std::mutex> lock(reload_mutex_);
    spdlog::info("serve: reloading the weights ({})", why);
    try {
      auto fresh = make_served(load_(), options_.batching);
      set_served(fresh);
      metrics_.reload(true);
      spdlog::info("serve: reloaded {} (SHA-256 {})", fresh->classifier->weights, fresh->sha256.substr(0, 16));
      return "";
    } catch (const std::exception& e) {
      metrics_.reload(false);
      const std::string error = message_of(e) + "; the previous weights go on serving";
      spdlog::error("serve: reload failed: {}", error);
      return error;
    }
  }

  void configure() {
    const int threads = options_.max_connections;
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    http_.set_payload_max_length(static_cast<size_t>(options_.max_body_bytes));
    http_.set_read_timeout(options_.read_timeout_s, 0);
    http_.set_write_timeout(options_.read_timeout_s, 0);
    http_.set_keep_alive_timeout(options_.keep_alive_s);
    // Connections close after this many requests, so that more clients than connection threads
    // take turns instead of waiting for a keep-alive client to leave.
    http_.set_keep_alive_max_count(100);
    http_.set_tcp_nodelay(true);
    // cpp-httplib's default also sets SO_REUSEPORT, which lets a second server bind the same
    // port and take half its connections; only SO_REUSEADDR (a restart rebinds at once).
    http_.set_socket_options([](socket_t sock) {
      const int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });

    // With a content reader: the parts of a multipart form come in the order sent (req.files
    // would sort them by field name).
    http_.Post(kPredictPath, [this](const httplib::Request& req, httplib::Response& res,
                                    const httplib::ContentReader& read) {
      // cpp-httplib checks --max-body-mb against Content-Length only: a chunked or compressed
      // body is counted here, as it arrives decoded, and so are the parts of a form.
      std::vector<Image> images;
      size_t received = 0;
      std::string refused;
      const auto take = [&](const char* data, size_t size) {
        if (images.empty()) return false;  // form data before any part's header
        received += size;
        if (received > static_cast<size_t>(options_.max_body_bytes)) {
          refused = "the body is larger than the limit of " + std::to_string(options_.max_body_bytes) +
                    " bytes (--max-body-mb)";
          return false;
        }
        images.back().bytes.append(data, size);
        return true;
      };
      bool complete = false;
      if (req.is_multipart_form_data()) {
        complete = read(
            [&](const httplib::MultipartFormData& part) {
              if (static_cast<int64_t>(images.size()) >= options_.batching.max_queue) {
                refused = "more than " + std::to_string(options_.batching.max_queue) +
                          " images in one request (--max-queue)";
                return false;
              }
              images.push_back({part.filename.empty() ? part.name : part.filename, {}});
              return true;
            },
            take);
      } else {
        images.push_back({"body", {}});
        complete = read(take);
      }
      if (!refused.empty()) {  // the rest of the body is unread: this connection cannot go on
        json_error(res, 413, refused);
        res.set_header("Connection", "close");
        return;
      }
      if (!complete) return;  // cpp-httplib has set the status (413, 400); the error handler says why
      predict(req, res, images);
    });
    http_.Get("/ping", [this](const httplib::Request&, httplib::Response& res) {
      const State s = state_;
      res.status = s == kReady ? 200 : 503;
      res.set_content(JsonObject().str("status", s == kReady ? "Healthy" : s == kLoading ? "Loading" : "Draining").dump() + "\n",
                      "application/json");
    });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http_.Get("/models", [this](const httplib::Request&, httplib::Response& res) {
      const auto s = served();
      if (!s) return json_error(res, 503, "the model is loading");
      res.set_content(describe(*s) + "\n", "application/json");
    });
    // With a content reader: a bodiless POST (no Content-Length) is not refused as malformed.
    http_.Post("/reload", [this](const httplib::Request&, httplib::Response& res, const httplib::ContentReader& read) {
      read([](const char*, size_t) { return true; });  // a body, if any, is read and ignored
      if (state_ != kReady) return json_error(res, 503, state_ == kLoading ? "the model is loading" : "the server is draining");
      const std::string error = reload("POST /reload");
      if (!error.empty()) return json_error(res, 500, error);
      res.set_content(describe(*served()) + "\n", "application/json");
    });

    // Bodies for the errors cpp-httplib answers itself (404, 413, 400, ...).
    http_.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string message = "HTTP " + std::to_string(res.status);
      if (res.status == 404) message = "no such endpoint: " + req.method + " " + req.path;
      if (res.status == 413)
        message = "the body is larger than the limit of " + std::to_string(options_.max_body_bytes) + " bytes (--max-body-mb)";
      if (res.status == 400)
        message = "malformed or incomplete HTTP request (a client silent for " + std::to_string(options_.read_timeout_s) +
                  " s mid-request is dropped: --read-timeout)";
      json_error(res, res.status, message);
    });
    http_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string message = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        message = message_of(e);
      } catch (...) {
      }
      json_error(res, 500, message);
    });
    http_.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      request_started() = Clock::now();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http_.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
      if (state_ == kDraining) res.set_header("Connection", "close");  // the client reconnects elsewhere
    });
    http_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics_.request(req.path, res.status, std::chrono::duration<double>(Clock::now() - request_started()).count());
    });
  }

  static Clock::time_point& request_started() {
    thread_local Clock::time_point started = Clock::now();
    return started;
  }

  std::string describe(const Served& s) const {
    const app::Classifier& c = *s.classifier;
    const auto& t = c.transform;
    auto rgb = [](const data::Rgb& v) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "[%.6g, %.6g, %.6g]", v[0], v[1], v[2]);
      return std::string(buf);
    };
    return JsonObject()
        .str("model", "alexnet")
        .str("arch", arch_name(c.model->options().arch()))
        .integer("num_classes", c.num_classes)
        .str("class_names", c.names_from)
        .str("weights", c.weights)
        .str("sha256", s.sha256)
        .str("loaded_at", s.loaded_at)
        .str("compute", c.compute.describe())
        .str("libtorch", TORCH_VERSION)
        .raw("transform", JsonObject()
                              .integer("resize_size", t.resize_size())
                              .integer("crop_size", t.crop_size())
                              .raw("mean", rgb(t.mean()))
                              .raw("std", rgb(t.std()))
                              .str("from", c.transform_from)
                              .dump())
        .integer("max_batch", options_.batching.max_batch)
        .number("max_delay_ms", options_.batching.max_delay.count() / 1000.0)
        .dump();
  }

  struct Image {
    std::string name;
    std::string bytes;
  };

  void predict(const httplib::Request& req, httplib::Response& res, const std::vector<Image>& images) {
    if (state_ == kLoading) return json_error(res, 503, "the model is loading");
    int64_t topk = 5;
    if (req.has_param("topk")) {
      const std::string v = req.get_param_value("topk");
      char* end = nullptr;
      errno = 0;
      const long long k = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || errno != 0 || k < 0)
        return json_error(res, 400, "topk=" + v + ": expected 0 (all classes) or a positive integer");
      topk = k;
    }
    const bool multipart = req.is_multipart_form_data();
    if (images.empty()) return json_error(res, 400, "a multipart form with no parts: send one image per part");
    for (const Image& image : images)
      if (image.bytes.empty()) return json_error(res, 400, image.name + ": empty; send the image's bytes");

    const std::shared_ptr<const Served> model = served();
    if (!model) return json_error(res, 503, "no model is loaded");  // the first load failed: exiting
    const app::Classifier& classifier = *model->classifier;
    std::vector<std::future<torch::Tensor>> results;
    int pending = static_cast<int>(images.size());
    batcher_.arriving(pending);
    try {
      for (const Image& image : images) {
        torch::Tensor input;
        decoders_.acquire();
        try {
          input = data::eval_transform(
              data::decode_image_bytes(reinterpret_cast<const uint8_t*>(image.bytes.data()), image.bytes.size(), image.name),
              classifier.transform);
        } catch (...) {
          decoders_.release();
          throw;
        }
        decoders_.release();
        results.push_back(batcher_.submit(std::move(input), model->forward));
        batcher_.arriving(-1);
        --pending;
      }
    } catch (const QueueFull& e) {
      batcher_.arriving(-pending);
      return json_error(res, 503, std::string(e.what()) + "; retry later");
    } catch (const std::exception& e) {
      batcher_.arriving(-pending);
      return json_error(res, 400, message_of(e));
    }
    std::string body = multipart ? "[" : "";
    for (size_t i = 0; i < results.size(); ++i) {
      const torch::Tensor logits = results[i].get();  // rethrows a failed forward pass: 500
      body += (i ? ", " : "") + app::top_k_json(images[i].name, classifier.labels, logits, topk);
    }
    res.set_content(body + (multipart ? "]\n" : "\n"), "application/json");
  }

  const ServeOptions options_;
  const LoadClassifier load_;
  Metrics metrics_;
  Batcher batcher_;
  Slots decoders_;
  HttpServer http_;
  std::atomic<State> state_{kLoading};
  std::mutex served_mutex_;
  std::shared_ptr<const Served> served_;
  std::mutex reload_mutex_;
};

}  // namespace

int run_server(const ServeOptions& options, const LoadClassifier& load) {
#if defined(__GLIBC__)
  // glibc gives each thread that meets contention an arena of its own, up to 8 per CPU. Images
  // are decoded on the connection threads and freed on the model thread, so every arena keeps
  // pieces of freed batches: a 10-minute soak at 64 clients grew 11% over its first minute.
  // Two arenas (before any thread starts) keep that memory in common.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr && std::getenv("GLIBC_TUNABLES") == nullptr)
    mallopt(M_ARENA_MAX, 2);
#endif
  Service service(options, load);
  return service.run();
}

}  // namespace alexnet::serve
