#include "app/serve/server.h"

#include "app/runtime/json.h"
#include "app/runtime/machine.h"
#include "data/decode.h"
#include "data/image.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace alexnet::serve {

namespace {

using Clock = std::chrono::steady_clock;
using runtime::JsonObject;

constexpr const char* kPredictPath = "/predictions/alexnet";
// Management requests answered at once: reloads asked for together wait together, and share
// one load (Service::reload), only while each holds a thread.
constexpr int kManagementThreads = 32;

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

bool iequals_prefix(const std::string& s, const char* prefix) {
  size_t i = 0;
  for (; prefix[i]; ++i)
    if (i >= s.size() || std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  return true;
}

/// Whether `given` is `secret`, in a time that does not depend on where they differ.
bool same_secret(const std::string& given, const std::string& secret) {
  unsigned diff = given.size() != secret.size();
  const size_t n = std::max(given.size(), secret.size());
  for (size_t i = 0; i < n; ++i)
    diff |= static_cast<unsigned char>(i < given.size() ? given[i] : 0) ^
            static_cast<unsigned char>(i < secret.size() ? secret[i] : 0);
  return diff == 0;
}

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
  served->sha256 = classifier->sha256;  // load_classifier(..., with_sha256 = true) hashed the bytes it loaded
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
    const auto listen = [&](const std::string& host, int port, RequestHandler& handler, int threads, const char* flag) {
      try {
        return connections_.listen(host, port, handler, threads);
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string("serve: ") + e.what() + "; " + flag + " chooses another, 0 any free one");
      }
    };
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
    spdlog::info("serve: listening on http://{}:{} (/ping answers 503 until the model is ready)", options_.host, port);
    if (management_port >= 0) {
      spdlog::info("serve: management on http://{}:{} (POST /reload; GET /models, /ping, /metrics){}",
                   options_.management_host, management_port,
                   options_.token.empty() ? "" : "; requests carry the bearer token (--token-file)");
      if (options_.token.empty() && !is_loopback(options_.management_host))
        spdlog::warn("serve: the management port listens on {} without --token-file: whoever reaches it can reload "
                     "the model", options_.management_host);
    }

    int status = 0;
    try {
      const auto started = Clock::now();
      set_served(make_served(load_(), options_.batching));
      const ConnectionOptions& c = options_.connections;
      spdlog::info("serve: ready in {:.1f} s: POST http://{}:{}{} (max batch {}, max delay {} ms, {} request threads, "
                   "{} decoders; at most {} connections, {} per client address; headers within {} s); SIGTERM drains, "
                   "SIGHUP reloads",
                   std::chrono::duration<double>(Clock::now() - started).count(), options_.host, port, kPredictPath,
                   options_.batching.max_batch, options_.batching.max_delay.count() / 1000.0, options_.request_threads,
                   options_.decode_threads, c.max_connections, c.max_per_client, c.header_timeout_s);
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

 private:
  enum State { kLoading, kReady, kDraining };

  static bool is_loopback(const std::string& host) {
    return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
  }

  void drain(std::future<void>& stopped) {
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

  std::shared_ptr<const Served> served() {
    std::lock_guard<std::mutex> lock(served_mutex_);
    return served_;
  }
  void set_served(std::shared_ptr<const Served> s) {
    std::lock_guard<std::mutex> lock(served_mutex_);
    served_ = std::move(s);
  }

  /// Loads the weights again; on any error the model serving now goes on serving. Returns the
  /// error ("" on success). One reload runs at a time. A request made while one runs waits for
  /// the next, which starts when that one ends (so it reads the file as it is after the
  /// request), and every request made meanwhile shares that next one: a burst costs two loads.
  std::string reload(const std::string& why) {
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

  std::string load_again(const std::string& why) {
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
    const int64_t max_body = options_.connections.max_body_bytes;
    for (RequestHandler* h : {&inference_, &management_}) {
      h->set_payload_max_length(static_cast<size_t>(max_body));
      // Only what the Keep-Alive field of an answer says: the connection layer keeps the time.
      h->set_keep_alive_timeout(options_.connections.keep_alive_s);
      h->set_keep_alive_max_count(static_cast<size_t>(options_.connections.max_requests_per_connection));
    }

    // With a content reader: the parts of a multipart form come in the order sent (req.files
    // would sort them by field name).
    inference_.Post(kPredictPath, [this](const httplib::Request& req, httplib::Response& res,
                                    const httplib::ContentReader& read) {
      // cpp-httplib checks --max-body-mb against Content-Length only: a chunked or compressed
      // body is counted here, as it arrives decoded, and so are the parts of a form.
      std::vector<Image> images;
      size_t received = 0;
      std::string refused;
      const auto take = [&](const char* data, size_t size) {
        if (images.empty()) return false;  // form data before any part's header
        received += size;
        if (received > static_cast<size_t>(options_.connections.max_body_bytes)) {
          refused = "the body is larger than the limit of " + std::to_string(options_.connections.max_body_bytes) +
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
    for (RequestHandler* h : {&inference_, &management_}) {
      h->Get("/ping", [this](const httplib::Request&, httplib::Response& res) {
        const State s = state_;
        res.status = s == kReady ? 200 : 503;
        res.set_content(
            JsonObject().str("status", s == kReady ? "Healthy" : s == kLoading ? "Loading" : "Draining").dump() + "\n",
            "application/json");
      });
      h->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
        res.set_content(metrics_.render(), "text/plain; version=0.0.4; charset=utf-8");
      });
      h->Get("/models", [this](const httplib::Request&, httplib::Response& res) {
        const auto s = served();
        if (!s) return json_error(res, 503, "the model is loading");
        res.set_content(describe(*s) + "\n", "application/json");
      });
    }
    // With a content reader: a bodiless POST (no Content-Length) is not refused as malformed.
    management_.Post("/reload", [this](const httplib::Request&, httplib::Response& res, const httplib::ContentReader& read) {
      read([](const char*, size_t) { return true; });  // a body, if any, is read and ignored
      if (state_ != kReady) return json_error(res, 503, state_ == kLoading ? "the model is loading" : "the server is draining");
      const std::string error = reload("POST /reload");
      if (!error.empty()) return json_error(res, 500, error);
      res.set_content(describe(*served()) + "\n", "application/json");
    });

    for (RequestHandler* h : {&inference_, &management_}) {
      const bool management = h == &management_;
      // Bodies for the errors cpp-httplib answers itself (404, 413, 400, ...).
      h->set_error_handler([this, management](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return;
        std::string message = "HTTP " + std::to_string(res.status);
        if (res.status == 404) {
          message = "no such endpoint: " + req.method + " " + req.path;
          if (!management && req.path == "/reload")
            message += options_.management_port < 0 ? " (this server has no management port: SIGHUP reloads)"
                                                     : " (it is on the management port: --management-port)";
        }
        if (res.status == 413)
          message = "the body is larger than the limit of " + std::to_string(options_.connections.max_body_bytes) +
                    " bytes (--max-body-mb)";
        if (res.status == 400) message = "a malformed HTTP request";
        json_error(res, res.status, message);
      });
      h->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          message = message_of(e);
        } catch (...) {
        }
        json_error(res, 500, message);
      });
      // The token: every management request, and with --token-inference every inference one
      // but /ping (a health check carries no secret).
      const bool guarded = !options_.token.empty() && (management || options_.token_inference);
      h->set_pre_routing_handler([this, guarded](const httplib::Request& req, httplib::Response& res) {
        request_started() = Clock::now();
        if (guarded && req.path != "/ping") {
          const std::string given = req.get_header_value("Authorization");
          const bool bearer = iequals_prefix(given, "bearer ");
          if (!same_secret(bearer ? given.substr(7) : std::string(), options_.token)) {
            json_error(res, 401, given.empty() ? "this endpoint needs Authorization: Bearer TOKEN (--token-file)"
                                               : "a wrong bearer token");
            res.set_header("WWW-Authenticate", "Bearer realm=\"alexnet\"");
            return httplib::Server::HandlerResponse::Handled;
          }
        }
        return httplib::Server::HandlerResponse::Unhandled;
      });
      h->set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
        if (state_ == kDraining) res.set_header("Connection", "close");  // the client reconnects elsewhere
      });
      h->set_logger([this](const httplib::Request& req, const httplib::Response& res) {
        metrics_.request(req.path, res.status, std::chrono::duration<double>(Clock::now() - request_started()).count());
      });
    }
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
  RequestHandler inference_, management_;
  Connections connections_{options_.connections, metrics_};
  std::atomic<State> state_{kLoading};
  std::mutex served_mutex_;
  std::shared_ptr<const Served> served_;
  std::mutex reload_mutex_;                   // guards the two below
  std::shared_future<std::string> next_reload_;  // a reload asked for and not started yet
  int next_reload_joined_ = 0;
  std::mutex reload_running_;
};

}  // namespace

std::string read_token_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot read the token file (" + std::strerror(errno) + ")");
  struct stat st {};
  std::string token;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= 4096) {
    token.resize(static_cast<size_t>(st.st_size));
    const ssize_t n = ::read(fd, token.data(), token.size());
    token.resize(n > 0 ? static_cast<size_t>(n) : 0);
  }
  ::close(fd);
  if (!S_ISREG(st.st_mode) || st.st_size > 4096)
    throw std::runtime_error(path + ": the token file must be a regular file of at most 4096 bytes");
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw std::runtime_error(path + ": the token file is open to group or others (mode " + mode + "): chmod 600 " + path);
  }
  const size_t begin = token.find_first_not_of(" \t\r\n");
  token = begin == std::string::npos ? "" : token.substr(begin, token.find_last_not_of(" \t\r\n") - begin + 1);
  if (token.empty()) throw std::runtime_error(path + ": the token file is empty");
  for (unsigned char c : token)
    if (c <= 32 || c >= 127)
      throw std::runtime_error(path + ": the token must be one word of printable ASCII (as an HTTP header carries it)");
  return token;
}

int run_server(const ServeOptions& options, const LoadClassifier& load) {
#if defined(__GLIBC__)
  // glibc gives each thread that meets contention an arena of its own, up to 8 per CPU. Images
  // are decoded on the connection threads and freed on the model thread, so every arena keeps
  // pieces of freed batches: a 10-minute soak at 64 clients grew 11% over its first minute.
  // Two arenas (before any thread starts) keep that memory in common.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr && std::getenv("GLIBC_TUNABLES") == nullptr)
    mallopt(M_ARENA_MAX, 2);
#endif
  // Every connection is a descriptor: the soft limit (often 1024) is raised to the hard one, and
  // --max-connections is held below what that allows.
  ServeOptions o = options;
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0) {
    if (files.rlim_cur < files.rlim_max) {
      files.rlim_cur = files.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &files);
      ::getrlimit(RLIMIT_NOFILE, &files);
    }
    const rlim_t room = files.rlim_cur > 64 ? files.rlim_cur - 64 : 1;  // the model, logs, listeners
    if (files.rlim_cur != RLIM_INFINITY && static_cast<rlim_t>(o.connections.max_connections) > room) {
      spdlog::warn("serve: --max-connections {} lowered to {}: this process may open {} files (ulimit -n)",
                   o.connections.max_connections, room, files.rlim_cur);
      o.connections.max_connections = static_cast<int>(room);
    }
  }
  Service service(o, load);
  return service.run();
}

}  // namespace alexnet::serve
