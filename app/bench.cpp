// alexnet bench: throughput of the model alone, end to end on a dataset, data
// loading, or a matrix product (engine/benchmark.h measures; this prints).
#include "app/cli.h"
#include "app/commands.h"
#include "app/engine/benchmark.h"
#include "app/engine/calibrate.h"
#include "app/engine/layer_profile.h"
#include "app/runtime/json.h"
#include "app/runtime/machine.h"
#include "data/dataset.h"

#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace alexnet::app {

namespace {

using engine::BenchOptions;
using engine::BenchSetup;
using engine::Measurement;
using runtime::JsonObject;

enum class Mode { kInfer, kTrain, kData, kMatmul };

void print_json(const BenchSetup& info, const Measurement& m, double med, double rate,
                double ms_per_batch, double gflops) {
  JsonObject out;
  out.str("mode", m.what).str("device", info.device.str()).integer("threads", info.threads)
      .str("precision", runtime::precision_name(info.cfg.precision)).boolean("channels_last", info.cfg.channels_last)
      .str("compute", info.cfg.describe()).str("blas", runtime::select_blas_kernels())
      .integer("batch_size", info.batch_size).integer("image_size", info.image_size)
      .integer("num_classes", info.num_classes).integer("runs", static_cast<int64_t>(m.seconds.size()))
      .integer("images_per_run", m.per_batch ? info.batch_size : m.images);
  if (info.data.empty()) out.null("data"); else out.str("data", info.data);
  out.integer("workers", info.workers).number("median_s", med, "%.6g")
      .number("min_s", *std::min_element(m.seconds.begin(), m.seconds.end()), "%.6g")
      .number("img_per_s", rate, "%.6g").number("ms_per_batch", ms_per_batch, "%.6g")
      .number("gflop_per_image", m.what == "matmul" ? 0.0 : m.flop_per_item / 1e9, "%.6g")
      .number("gflops", gflops, "%.6g").number("peak_rss_mb", engine::peak_rss_mib(), "%.1f");
  if (m.top1 >= 0) out.number("top1", m.top1, "%.6g");
  if (m.what == "train") out.number("loss", m.loss);
  const double cuda = engine::cuda_used_mib(info.device);
  if (cuda >= 0) out.number("cuda_used_mb", cuda, "%.1f"); else out.null("cuda_used_mb");
  std::printf("%s\n", out.dump().c_str());
}

void report(const BenchOptions& o, const BenchSetup& info, const Measurement& m, bool json) {
  const double med = engine::median(m.seconds);
  double rate = 0, ms_per_batch = 0;
  if (m.per_batch) {
    rate = info.batch_size / med;
    ms_per_batch = 1000 * med;
  } else if (m.images > 0) {
    rate = m.images / med;
    ms_per_batch = 1000 * med * info.batch_size / m.images;
  }
  const double gflops = m.what == "matmul" ? m.flop_per_item / med / 1e9 : rate * m.flop_per_item / 1e9;
  if (json) return print_json(info, m, med, rate, ms_per_batch, gflops);
  const double rss = engine::peak_rss_mib(), cuda = engine::cuda_used_mib(info.device);
  if (m.what == "matmul") {
    std::printf("matmul %lldx%lld %s: median %.3f ms, %.1f GFLOP/s, peak RSS %.0f MiB\n",
                static_cast<long long>(o.matrix_size), static_cast<long long>(o.matrix_size),
                runtime::precision_name(info.cfg.precision), 1000 * med, gflops, rss);
    return;
  }
  std::printf("%s: median %.1f img/s, %.2f ms/batch of %lld, %.1f GFLOP/s (%.3f GFLOP/image), "
              "peak RSS %.0f MiB",
              m.what.c_str(), rate, ms_per_batch, static_cast<long long>(info.batch_size), gflops,
              m.flop_per_item / 1e9, rss);
  if (m.what == "train") std::printf(", last loss %.4f", m.loss);
  if (cuda >= 0) std::printf(", GPU memory in use %.0f MiB", cuda);
  std::printf("\n");
}

int report_data(const BenchOptions& o, const std::vector<double>& rates, bool json) {
  if (json) {
    std::printf("%s\n", JsonObject().str("mode", "data").str("data", o.data)
                            .str("transform", o.train_transform ? "train" : "eval").integer("workers", o.workers)
                            .integer("batch_size", o.batch_size).integer("runs", o.repeat)
                            .number("img_per_s", engine::median(rates), "%.6g")
                            .number("peak_rss_mb", engine::peak_rss_mib(), "%.1f").dump().c_str());
  } else {
    std::printf("median %.1f img/s (%s, %lld workers, %lld runs)\n", engine::median(rates),
                o.train_transform ? "train" : "eval", static_cast<long long>(o.workers),
                static_cast<long long>(o.repeat));
  }
  return 0;
}

cxxopts::Options bench_options(const BenchOptions& o) {
  cxxopts::Options options("alexnet bench",
                           "Measure throughput: the model alone (infer, train), end to end on a "
                           "dataset (infer, train with --data), data loading, or a matrix product. "
                           "--mode train takes the step alexnet train takes, with its recipe flags.");
  const auto d = [](int64_t v) { return std::to_string(v); };
  options.add_options()
      ("mode", "infer, train, data (decode + transform + batching) or matmul "
               "(default: data with --data, else infer)", cxxopts::value<std::string>())
      ("data", std::string("Dataset (infer/train: end to end): ") + data::kDataSpecHelp,
       cxxopts::value<std::string>())
      ("split", "Dataset split: train, val or test", cxxopts::value<std::string>()->default_value(o.split))
      ("transform", "Mode data: train (random augmentation) or eval",
       cxxopts::value<std::string>()->default_value("train"))
      ("workers", "Loader threads (0 = in the consumer's thread)", cxxopts::value<int64_t>()->default_value(d(o.workers)))
      ("batch-size", "Images per batch", cxxopts::value<int64_t>()->default_value(d(o.batch_size)))
      ("limit", "Use the first N images only (0 = all)", cxxopts::value<int64_t>()->default_value(d(o.limit)))
      ("repeat", "Passes over the data (data, end to end); the median is reported",
       cxxopts::value<int64_t>()->default_value(d(o.repeat)))
      ("image-size", "Model input side (0 = 224, or the dataset's size with --data)",
       cxxopts::value<int64_t>()->default_value(d(o.image_size)))
      ("num-classes", "Classes of the model (model only; --data uses the dataset's)",
       cxxopts::value<int64_t>()->default_value(d(o.num_classes)))
      ("warmup", "Untimed iterations first (model only, matmul)", cxxopts::value<int64_t>()->default_value(d(o.warmup)))
      ("iters", "Timed iterations (model only, matmul); the median is reported",
       cxxopts::value<int64_t>()->default_value(d(o.iters)))
      ("matrix-size", "Mode matmul: N of the N x N product", cxxopts::value<int64_t>()->default_value(d(o.matrix_size)))
      ("weights", "Weights to load (default: random, seed 0); with --data, the dataset's classes",
       cxxopts::value<std::string>())
      ("predictions", "End-to-end infer: write each image's predicted class, one per line",
       cxxopts::value<std::string>())
      ("logits", "Model-only infer: write the last batch's logits (float32, row-major, raw)",
       cxxopts::value<std::string>())
      ("layers", "Model-only infer/train: time every layer on its own and print a table (time, GFLOP/s or "
                 "GB/s, share of the machine's peak)")
      ("json", "Print the result as one JSON object");
  add_recipe_options(options, "main");
  add_compute_options(options, {runtime::Precision::kAuto, runtime::ChannelsLast::kAuto, runtime::PlanChoice::kAuto},
                      /*with_plan=*/true);
  add_int8_options(options);
  add_max_pixels_option(options);
  add_common_options(options);
  return options;
}

Mode parse_bench_flags(const cxxopts::ParseResult& r, const cxxopts::Options& options, BenchOptions& o) {
  const auto usage = [&](const std::string& message) { throw UsageError(message, options.help()); };
  if (r.count("data")) o.data = r["data"].as<std::string>();
  const std::string mode = r.count("mode") ? r["mode"].as<std::string>() : o.data.empty() ? "infer" : "data";
  const std::pair<const char*, Mode> modes[] = {
      {"infer", Mode::kInfer}, {"train", Mode::kTrain}, {"data", Mode::kData}, {"matmul", Mode::kMatmul}};
  const auto found = std::find_if(std::begin(modes), std::end(modes), [&](const auto& e) { return mode == e.first; });
  if (found == std::end(modes)) usage("--mode " + mode + ": expected infer, train, data or matmul");
  const Mode m = found->second;
  o.split = r["split"].as<std::string>();
  const std::string transform = r["transform"].as<std::string>();
  if (transform != "train" && transform != "eval") usage("--transform " + transform + ": expected train or eval");
  o.train_transform = transform == "train";
  o.workers = r["workers"].as<int64_t>();
  o.batch_size = positive_flag(r, "batch-size", options);
  o.repeat = positive_flag(r, "repeat", options);
  o.iters = positive_flag(r, "iters", options);
  o.matrix_size = positive_flag(r, "matrix-size", options);
  o.num_classes = positive_flag(r, "num-classes", options);
  o.limit = r["limit"].as<int64_t>();
  o.warmup = r["warmup"].as<int64_t>();
  o.image_size = r["image-size"].as<int64_t>();
  o.recipe = recipe_flags(r, options, engine::Recipe::named(recipe_name_flag(r, options)));
  if (r.count("weights")) o.weights = r["weights"].as<std::string>();
  if (r.count("predictions")) o.predictions = r["predictions"].as<std::string>();
  if (!o.predictions.empty() && (m != Mode::kInfer || o.data.empty()))
    usage("--predictions needs --mode infer with --data");
  if (r.count("logits")) o.logits = r["logits"].as<std::string>();
  if (!o.logits.empty() && (m != Mode::kInfer || !o.data.empty())) usage("--logits needs --mode infer without --data");
  if (m == Mode::kData && o.data.empty()) usage("--mode data needs --data");
  if (o.workers < 0) usage("--workers must be 0 or positive");
  if (o.limit < 0) usage("--limit must be 0 or positive");
  if (o.warmup < 0) usage("--warmup must be 0 or positive");
  if (o.image_size != 0 && o.image_size < kMinInputSize)
    usage("--image-size must be at least " + std::to_string(kMinInputSize) + " (or 0)");
  return m;
}

}  // namespace

int run_bench(int argc, const char* const* argv) {
  BenchOptions o;
  cxxopts::Options options = bench_options(o);
  const auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s", options.help().c_str());
    return 0;
  }
  const Mode mode = parse_bench_flags(result, options, o);
  const runtime::ComputeRequest request = compute_flags(result, options);
  set_max_pixels(result, options);
  const bool json = result.count("json") > 0;
  if (mode == Mode::kData) {
    runtime::configure_threads(result["threads"].as<int>());
    return report_data(o, engine::bench_data(o), json);
  }
  BenchSetup info;
  info.device = setup_runtime(result);
  if (o.batch_size > 1) runtime::reuse_freed_memory();  // as train and eval do; batch 1 measures predict's memory
  info.threads = torch::get_num_threads();
  info.batch_size = o.batch_size;
  info.image_size = o.image_size > 0 ? o.image_size : 224;
  info.num_classes = o.num_classes;
  info.data = o.data;
  info.workers = o.data.empty() ? 0 : o.workers;
  const bool train = mode == Mode::kTrain;
  if (mode == Mode::kMatmul) {
    runtime::ComputeRequest plain = request;  // a matrix product has no layout and no plan
    plain.channels_last = runtime::ChannelsLast::kOff;
    plain.plan = runtime::PlanChoice::kOff;
    info.cfg = runtime::resolve_compute(plain, info.device, runtime::Workload::kInference);
    info.batch_size = info.image_size = info.num_classes = 0;
    report(o, info, engine::bench_matmul(o, info), json);
    return 0;
  }
  info.cfg = runtime::resolve_compute(request, info.device,
                                      train ? runtime::Workload::kTraining : runtime::Workload::kInference);
  o.before_inference = [&](AlexNet& model, runtime::ComputeConfig& cfg, const torch::Tensor& input,
                           const data::TransformOptions* transform) {
    // Without weights or scales, int8 calibrates on what it will run: the random batch
    // (model only) or the data's own images (end to end).
    const auto fallback = [&]() {
      if (transform) {
        engine::CalibrationOptions c;
        c.data = o.data;
        c.images = result["calibrate-images"].as<int64_t>();
        c.transform = *transform;
        return engine::calibrate_int8(model, c, runtime::int8_activation_max());
      }
      Int8Calibrator calibrator(model);
      calibrator.observe(input);
      Int8Scales s = calibrator.finish(runtime::int8_activation_max());
      s.data = "the benchmark's own random batch";
      spdlog::info("int8: scales calibrated on {} ({} images)", s.data, s.images);
      return s;
    };
    // The engine loads the weights; their digest is taken here, from a mapping of its own.
    const std::string sha256 =
        o.weights.empty() || (cfg.precision != runtime::Precision::kInt8 && !cfg.precision_auto)
            ? ""
            : WeightsFile(o.weights).sha256();
    setup_int8(result, options, cfg, model, o.weights, sha256,
               transform ? *transform : data::TransformOptions().image_size(info.image_size),
               o.weights.empty() ? std::function<Int8Scales()>(fallback) : nullptr);
  };
  spdlog::info("bench {}{}: {}", train ? "train" : "infer", o.data.empty() ? "" : " end to end", info.cfg.describe());
  if (result.count("layers")) {
    if (!o.data.empty()) throw UsageError("--layers times the model alone: drop --data", options.help());
    const auto profile = engine::profile_layers(o, info, train);
    std::printf("%s", engine::layer_table(profile, train, info.batch_size).c_str());
    return 0;
  }
  const Measurement m = o.data.empty() ? engine::bench_model(o, info, train) : engine::bench_end_to_end(o, info, train);
  report(o, info, m, json);
  return 0;
}

}  // namespace alexnet::app
