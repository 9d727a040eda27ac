// alexnet serve: the model as an HTTP service (app/serve/server.h).
#include "app/classifier.h"
#include "app/cli.h"
#include "app/commands.h"

#ifdef ALEXNET_HAVE_HTTPLIB
#include "app/serve/server.h"
#endif

#include <cstdio>
#include <memory>
#include <string>
#include <thread>

namespace alexnet::app {

namespace {

cxxopts::Options serve_options() {
  cxxopts::Options options("alexnet serve",
                           "Serve a weights file over HTTP: POST an image to /predictions/alexnet (raw body, or "
                           "multipart/form-data with one image per part; ?topk=K), and get predict --json's answer. "
                           "GET /ping, /metrics (Prometheus), /models; POST /reload or SIGHUP reloads the weights; "
                           "SIGTERM drains and exits 0.");
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  options.add_options()
      ("w,weights", "Weights: .pth, TorchScript .pt or .safetensors", cxxopts::value<std::string>())
      ("host", "Address to listen on (0.0.0.0: every interface, as in a container)",
       cxxopts::value<std::string>()->default_value("127.0.0.1"))
      ("port", "TCP port (0: any free one, logged)", cxxopts::value<int>()->default_value("8080"))
      ("max-batch", "Most images per forward pass", cxxopts::value<int64_t>()->default_value("32"))
      ("max-delay-ms", "Longest a queued image waits for others still being decoded to join its batch",
       cxxopts::value<double>()->default_value("5"))
      ("max-queue", "Most decoded images waiting for the model; more get 503 with Retry-After",
       cxxopts::value<int64_t>()->default_value("256"))
      ("max-body-mb", "Largest request body, MiB (larger: 413)", cxxopts::value<double>()->default_value("20"))
      ("max-connections", "Connections served at once (one thread each); more wait in a queue for a "
       "thread (a connection closes after 100 requests, so that waiting ones get their turn)",
       cxxopts::value<int>()->default_value("128"))
      ("decode-threads", "Images decoded at the same time (default: the CPUs)",
       cxxopts::value<int>()->default_value(std::to_string(cores)))
      ("read-timeout", "Seconds a client may stall mid-request before it is dropped",
       cxxopts::value<int>()->default_value("10"))
      ("drain-timeout", "Seconds a drain waits for busy connections before ending them",
       cxxopts::value<int>()->default_value("30"));
  add_classifier_options(options);
  add_compute_options(options, runtime::ComputeRequest(), /*with_plan=*/true);
  add_nonfinite_option(options);
  add_max_pixels_option(options);
  add_common_options(options);
  return options;
}

}  // namespace

int run_serve(int argc, const char* const* argv) {
  cxxopts::Options options = serve_options();
  const auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  const std::string weights = required_flag(result, "weights", options);
  check_classifier_flags(result, options);
  const runtime::ComputeRequest request = compute_flags(result, options);
  set_max_pixels(result, options);
#if !defined(ALEXNET_HAVE_HTTPLIB) || !defined(ALEXNET_HAVE_OPENCV)
  TORCH_CHECK(false, "serve: this build has no HTTP server or no image decoding (built without cpp-httplib or OpenCV)");
#else
  serve::ServeOptions o;
  o.host = result["host"].as<std::string>();
  o.port = result["port"].as<int>();
  if (o.port < 0 || o.port > 65535) throw UsageError("--port must be 0 to 65535", options.help());
  o.batching.max_batch = positive_flag(result, "max-batch", options);
  o.batching.max_queue = positive_flag(result, "max-queue", options);
  const double delay_ms = result["max-delay-ms"].as<double>();
  if (!(delay_ms >= 0 && delay_ms <= 60000)) throw UsageError("--max-delay-ms must be 0 to 60000", options.help());
  o.batching.max_delay = std::chrono::microseconds(static_cast<int64_t>(delay_ms * 1000));
  const double body_mb = result["max-body-mb"].as<double>();
  if (!(body_mb > 0 && body_mb <= 4096)) throw UsageError("--max-body-mb must be above 0 and at most 4096", options.help());
  o.max_body_bytes = static_cast<int64_t>(body_mb * (1 << 20));
  for (const char* name : {"max-connections", "decode-threads", "read-timeout", "drain-timeout"})
    if (result[name].as<int>() < 1) throw UsageError(std::string("--") + name + " must be positive", options.help());
  o.max_connections = result["max-connections"].as<int>();
  o.decode_threads = result["decode-threads"].as<int>();
  o.read_timeout_s = result["read-timeout"].as<int>();
  o.drain_timeout_s = result["drain-timeout"].as<int>();

  const torch::Device device = setup_runtime(result);
  return serve::run_server(o, [&] {
    return std::make_shared<const Classifier>(load_classifier(result, options, weights, request, device));
  });
#endif
}

}  // namespace alexnet::app
