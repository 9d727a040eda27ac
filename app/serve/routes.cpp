// serve's routes: what each request gets. The endpoints of both listeners, the predict handler
// (topk, decoding, batching), /models' description, the JSON bodies of errors, the bearer token
// and the metrics of every answer.
#include "app/serve/service.h"

#include "app/runtime/errors.h"
#include "app/runtime/json.h"
#include "data/decode.h"
#include "data/image.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

namespace alexnet::serve {

namespace {

using runtime::JsonObject;

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

void json_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(JsonObject().str("error", message).dump() + "\n", "application/json");
  if (status == 503) res.set_header("Retry-After", "1");
}

// When the request began: the pre-routing hook sets it, the logger reads it, on the same thread.
std::chrono::steady_clock::time_point& request_started() {
  thread_local std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  return started;
}

}  // namespace

void Service::configure() {
  const int64_t max_body = options_.connections.max_body_bytes;
  for (RequestHandler* h : {&inference_, &management_}) {
    h->set_payload_max_length(static_cast<size_t>(max_body));
    // Only what the Keep-Alive field of an answer says: the connection layer keeps the time.
    h->set_keep_alive_timeout(options_.connections.keep_alive_s);
    h->set_keep_alive_max_count(static_cast<size_t>(options_.connections.max_requests_per_connection));
  }
  add_predict_route();
  for (RequestHandler* h : {&inference_, &management_}) add_status_routes(*h);
  add_reload_route();
  for (RequestHandler* h : {&inference_, &management_}) {
    add_error_bodies(*h, h == &management_);
    add_request_hooks(*h, h == &management_);
  }
}

void Service::add_predict_route() {
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
}

void Service::add_status_routes(RequestHandler& h) {
  h.Get("/ping", [this](const httplib::Request&, httplib::Response& res) {
    const State s = state_;
    res.status = s == kReady ? 200 : 503;
    res.set_content(
        JsonObject().str("status", s == kReady ? "Healthy" : s == kLoading ? "Loading" : "Draining").dump() + "\n",
        "application/json");
  });
  h.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_.render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  h.Get("/models", [this](const httplib::Request&, httplib::Response& res) {
    const auto s = models_.current();
    if (!s) return json_error(res, 503, "the model is loading");
    res.set_content(describe(*s) + "\n", "application/json");
  });
}

void Service::add_reload_route() {
  // With a content reader: a bodiless POST (no Content-Length) is not refused as malformed.
  management_.Post("/reload", [this](const httplib::Request&, httplib::Response& res,
                                     const httplib::ContentReader& read) {
    read([](const char*, size_t) { return true; });  // a body, if any, is read and ignored
    if (state_ != kReady) return json_error(res, 503, state_ == kLoading ? "the model is loading" : "the server is draining");
    const std::string error = models_.reload("POST /reload");
    if (!error.empty()) return json_error(res, 500, error);
    res.set_content(describe(*models_.current()) + "\n", "application/json");
  });
}

void Service::add_error_bodies(RequestHandler& h, bool management) {
  // Bodies for the errors cpp-httplib answers itself (404, 413, 400, ...).
  h.set_error_handler([this, management](const httplib::Request& req, httplib::Response& res) {
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
  h.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string message = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      message = runtime::error_message(e);
    } catch (...) {
    }
    json_error(res, 500, message);
  });
}

void Service::add_request_hooks(RequestHandler& h, bool management) {
  // The token: every management request, and with --token-inference every inference one
  // but /ping (a health check carries no secret).
  const bool guarded = !options_.token.empty() && (management || options_.token_inference);
  h.set_pre_routing_handler([this, guarded](const httplib::Request& req, httplib::Response& res) {
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
  h.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
    if (state_ == kDraining) res.set_header("Connection", "close");  // the client reconnects elsewhere
  });
  h.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics_.request(req.path, res.status, std::chrono::duration<double>(Clock::now() - request_started()).count());
  });
}

std::string Service::describe(const Served& s) const {
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

void Service::predict(const httplib::Request& req, httplib::Response& res, const std::vector<Image>& images) {
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

  const std::shared_ptr<const Served> model = models_.current();
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
    return json_error(res, 400, runtime::error_message(e));
  }
  std::string body = multipart ? "[" : "";
  for (size_t i = 0; i < results.size(); ++i) {
    const torch::Tensor logits = results[i].get();  // rethrows a failed forward pass: 500
    body += (i ? ", " : "") + app::top_k_json(images[i].name, classifier.labels, logits, topk);
  }
  res.set_content(body + (multipart ? "]\n" : "\n"), "application/json");
}

}  // namespace alexnet::serve
