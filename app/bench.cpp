// alexnet bench: throughput measurements. Mode "data": decode + transform +
// batching through the Loader, in images per second (scripts/bench_data.py
// runs torchvision's ImageFolder + DataLoader beside it).
#include "app/cli.h"
#include "app/commands.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace alexnet::app {

namespace {

struct BenchParams {
  std::string mode = "data";
  std::string data;
  std::string split = "train";
  std::string transform = "train";
  int64_t workers = 2;
  int64_t batch_size = 64;
  int64_t limit = 0;
  int64_t repeat = 3;
};

// The first `limit` samples of a dataset, so a benchmark can use part of a large one.
class FirstSamples : public data::Dataset {
 public:
  FirstSamples(std::shared_ptr<const data::Dataset> inner, int64_t limit)
      : inner_(std::move(inner)), size_(std::min(limit, inner_->size())) {}
  data::DatasetKind kind() const override { return inner_->kind(); }
  int64_t size() const override { return size_; }
  const std::vector<std::string>& class_names() const override { return inner_->class_names(); }
  int64_t label(int64_t i) const override { return inner_->label(i); }
  int64_t channels() const override { return inner_->channels(); }
  torch::Tensor load(int64_t i) const override { return inner_->load(i); }
  std::string name(int64_t i) const override { return inner_->name(i); }
  std::string description() const override { return inner_->description(); }

 private:
  std::shared_ptr<const data::Dataset> inner_;
  int64_t size_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Mode "data": each repetition is one epoch from a fresh Loader (thread start-up included).
int bench_data(const BenchParams& p) {
  std::shared_ptr<const data::Dataset> dataset = data::open_dataset(p.data, p.split);
  if (p.limit > 0) dataset = std::make_shared<FirstSamples>(dataset, p.limit);
  const data::Pipeline pipeline(
      data::default_transform_options(dataset->kind(), /*train=*/p.transform == "train"));
  const auto options = data::LoaderOptions()
                           .batch_size(p.batch_size)
                           .workers(p.workers)
                           .shuffle(p.transform == "train")
                           .seed(0);
  spdlog::info("bench data: {} ({} images), transform {}, {} workers, batch {}",
               dataset->description(), dataset->size(), p.transform, p.workers, p.batch_size);
  std::vector<double> rates;
  for (int64_t r = 0; r < p.repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    data::Loader loader(dataset, pipeline, options);
    loader.start_epoch(r);
    int64_t images = 0;
    while (auto batch = loader.next()) images += batch->images.size(0);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rates.push_back(images / seconds);
    std::printf("run %lld: %lld images in %.3f s, %.1f img/s\n", static_cast<long long>(r + 1),
                static_cast<long long>(images), seconds, rates.back());
  }
  std::printf("median %.1f img/s (%s, %lld workers, %lld runs)\n", median(rates),
              p.transform.c_str(), static_cast<long long>(p.workers),
              static_cast<long long>(p.repeat));
  return 0;
}

}  // namespace

int run_bench(int argc, const char* const* argv) {
  BenchParams p;
  cxxopts::Options options("alexnet bench", "Measure throughput.");
  options.add_options()
      ("mode", "What to measure: data (decode + transform + batching)",
       cxxopts::value<std::string>()->default_value(p.mode))
      ("data", std::string("Dataset: ") + data::kDataSpecHelp, cxxopts::value<std::string>())
      ("split", "Dataset split: train, val or test", cxxopts::value<std::string>()->default_value(p.split))
      ("transform", "train (random augmentation) or eval", cxxopts::value<std::string>()->default_value(p.transform))
      ("workers", "Loader threads (0 = in the consumer's thread)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.workers)))
      ("batch-size", "Images per batch", cxxopts::value<int64_t>()->default_value(std::to_string(p.batch_size)))
      ("limit", "Use the first N images only (0 = all)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.limit)))
      ("repeat", "Timed runs; the median is reported",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.repeat)));
  add_common_options(options);
  const auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s", options.help().c_str());
    return 0;
  }
  p.mode = result["mode"].as<std::string>();
  p.split = result["split"].as<std::string>();
  p.transform = result["transform"].as<std::string>();
  p.workers = result["workers"].as<int64_t>();
  p.batch_size = positive_flag(result, "batch-size", options);
  p.repeat = positive_flag(result, "repeat", options);
  p.limit = result["limit"].as<int64_t>();
  if (p.mode != "data") throw UsageError("--mode " + p.mode + ": expected data", options.help());
  if (!result.count("data")) throw UsageError("--data is required", options.help());
  p.data = result["data"].as<std::string>();
  if (p.transform != "train" && p.transform != "eval")
    throw UsageError("--transform " + p.transform + ": expected train or eval", options.help());
  if (p.workers < 0) throw UsageError("--workers must be 0 or positive", options.help());
  if (p.limit < 0) throw UsageError("--limit must be 0 or positive", options.help());
  configure_threads(result["threads"].as<int>());
  return bench_data(p);
}

}  // namespace alexnet::app
