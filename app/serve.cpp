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
                           "GET /ping, /metrics (Prometheus), /models. The management port (127.0.0.1 by default) "
                           "takes POST /reload, as SIGHUP does. SIGTERM drains and exits 0.");
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  options.add_options()
      ("w,weights", "Weights: .pth, TorchScript .pt, .safetensors or torch.export .pt2", cxxopts::value<std::string>())
      ("host", "Address to listen on (0.0.0.0: every interface, as in a container)",
       cxxopts::value<std::string>()->default_value("127.0.0.1"))
      ("port", "TCP port (0: any free one, logged)", cxxopts::value<int>()->default_value("8080"))
      ("max-batch", "Most images per forward pass", cxxopts::value<int64_t>()->default_value("32"))
      ("max-delay-ms", "Longest a queued image waits for others still being decoded to join its batch",
       cxxopts::value<double>()->default_value("5"))
      ("max-queue", "Most decoded images waiting for the model; more get 503 with Retry-After",
       cxxopts::value<int64_t>()->default_value("256"))
      ("max-body-mb", "Largest request body, MiB (larger: 413)", cxxopts::value<double>()->default_value("20"))
      ("management-host", "Address of the management API (POST /reload, GET /models, /ping, /metrics)",
       cxxopts::value<std::string>()->default_value("127.0.0.1"))
      ("management-port", "Its TCP port (default: --port + 1, or any free one when --port is 0; -1: none, "
       "SIGHUP still reloads)", cxxopts::value<int>())
      ("token-file", "A file (mode 0600) holding a token that every management request must carry as "
       "'Authorization: Bearer TOKEN' (else 401)", cxxopts::value<std::string>())
      ("token-inference", "Inference requests too must carry the token (GET /ping excepted)")
      ("max-connections", "Open connections at once, idle and slow ones included; a new one past it gets 503",
       cxxopts::value<int>()->default_value("4096"))
      ("max-connections-per-client", "Open connections from one client address; a new one past it gets 503",
       cxxopts::value<int>()->default_value("64"))
      ("request-threads", "Requests answered at once (each read in full first; more wait their turn)",
       cxxopts::value<int>()->default_value("64"))
      ("decode-threads", "Images decoded at the same time (default: the CPUs)",
       cxxopts::value<int>()->default_value(std::to_string(cores)))
      ("header-timeout", "Seconds from a request's first byte to the end of its headers (else 408)",
       cxxopts::value<int>()->default_value("10"))
      ("read-timeout", "Seconds a request's body may take, plus 1 s per --min-body-rate KiB it declares (else 408)",
       cxxopts::value<int>()->default_value("10"))
      ("min-body-rate", "KiB/s a large body must keep up (see --read-timeout)",
       cxxopts::value<int>()->default_value("64"))
      ("keep-alive-timeout", "Seconds an idle connection stays open", cxxopts::value<int>()->default_value("5"))
      ("max-header-line", "Longest request line or header line, bytes (else 414 or 431)",
       cxxopts::value<int>()->default_value("8192"))
      ("max-header-fields", "Most header fields in a request (else 431)", cxxopts::value<int>()->default_value("100"))
      ("max-header-bytes", "Largest header section, bytes (else 431)", cxxopts::value<int>()->default_value("65536"))
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
  for (const char* name : {"max-connections", "max-connections-per-client", "request-threads", "decode-threads",
                           "header-timeout", "read-timeout", "min-body-rate", "keep-alive-timeout", "max-header-line",
                           "max-header-fields", "max-header-bytes", "drain-timeout"})
    if (result[name].as<int>() < 1) throw UsageError(std::string("--") + name + " must be positive", options.help());
  serve::ConnectionOptions& c = o.connections;
  c.max_body_bytes = static_cast<int64_t>(body_mb * (1 << 20));
  c.max_connections = result["max-connections"].as<int>();
  c.max_per_client = result["max-connections-per-client"].as<int>();
  c.header_timeout_s = result["header-timeout"].as<int>();
  c.body_timeout_s = result["read-timeout"].as<int>();
  c.write_timeout_s = c.body_timeout_s;
  c.body_min_rate = int64_t{result["min-body-rate"].as<int>()} << 10;
  c.keep_alive_s = result["keep-alive-timeout"].as<int>();
  c.head.max_line = static_cast<size_t>(result["max-header-line"].as<int>());
  c.head.max_fields = static_cast<size_t>(result["max-header-fields"].as<int>());
  c.head.max_bytes = static_cast<size_t>(result["max-header-bytes"].as<int>());
  if (c.head.max_bytes < c.head.max_line)
    throw UsageError("--max-header-bytes must be at least --max-header-line", options.help());
  o.request_threads = result["request-threads"].as<int>();
  o.decode_threads = result["decode-threads"].as<int>();
  o.drain_timeout_s = result["drain-timeout"].as<int>();
  o.management_host = result["management-host"].as<std::string>();
  o.management_port = result.count("management-port") ? result["management-port"].as<int>()
                      : o.port == 0                   ? 0
                                                      : o.port + 1;
  if (o.management_port < -1 || o.management_port > 65535)
    throw UsageError("--management-port must be -1 (none) or 0 to 65535", options.help());
  if (o.management_port > 0 && o.management_port == o.port && o.management_host == o.host)
    throw UsageError("--management-port must differ from --port", options.help());
  if (result.count("token-file")) o.token = serve::read_token_file(result["token-file"].as<std::string>());
  o.token_inference = result["token-inference"].as<bool>();
  if (o.token_inference && o.token.empty())
    throw UsageError("--token-inference needs --token-file", options.help());

  const torch::Device device = setup_runtime(result);
  return serve::run_server(o, [&] {
    return std::make_shared<const Classifier>(
        load_classifier(result, options, weights, request, device, /*with_sha256=*/true));
  });
#endif
}

}  // namespace alexnet::app
