// alexnet bench: throughput measurements (scripts/bench_vs_pytorch.py and
// scripts/bench_data.py run the same workloads in PyTorch beside it).
//   infer, train  the model alone on a random batch made once; with --data, end
//                 to end: decode + transform + batching + the model
//   data          decode + transform + batching through the Loader
//   matmul        one square matrix product: the machine's reference FLOP rate
#include "app/cli.h"
#include "app/commands.h"
#include "app/precision.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "model/alexnet.h"
#include "model/sgd.h"
#include "model/torch_compat.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace alexnet::app {

namespace {

namespace nn = torch::nn;
using Clock = std::chrono::steady_clock;

struct BenchParams {
  std::string mode;  // empty: data with --data, else infer
  std::string data;
  std::string split = "train";
  std::string transform = "train";
  int64_t workers = 2;
  int64_t batch_size = 64;
  int64_t limit = 0;
  int64_t repeat = 3;
  int64_t image_size = 0;  // 0: 224, or the dataset's own size with --data
  int64_t num_classes = 1000;
  std::string precision = "auto";
  std::string channels_last = "auto";
  int64_t warmup = 2;
  int64_t iters = 10;
  int64_t matrix_size = 2048;
  std::string weights;      // empty: random initial weights (seed 0)
  std::string predictions;  // end-to-end infer: write each image's predicted class here
  std::string logits;       // model-only infer: write the last batch's logits here
  bool json = false;
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

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Peak resident set of this process so far, in MiB: VmHWM, the high-water mark
// of this program's own memory. (getrusage's ru_maxrss survives exec, so a
// process started from a large one, such as a Python test, would report its
// parent's size.) getrusage where /proc is not mounted.
double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;  // kB
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

// Device memory in use on the current GPU, in MiB (the CUDA context and
// LibTorch's cache, which keeps its peak), or -1 without CUDA. Through the
// runtime's C API so that a CPU-only build needs no CUDA headers.
double cuda_used_mib(const torch::Device& device) {
  if (!device.is_cuda()) return -1;
  using MemGetInfo = int (*)(size_t*, size_t*);
  const auto get = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"));
  size_t free = 0, total = 0;
  if (get == nullptr || get(&free, &total) != 0) return -1;
  return static_cast<double>(total - free) / (1 << 20);
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Multiply-accumulates of one forward pass on an H x W image, from the
// layers' shapes: convolutions and Linear layers (pooling, ReLU and LRN are
// a few percent of a convolution's work and not counted, as usual).
int64_t forward_macs(AlexNet& model, int64_t height, int64_t width) {
  int64_t macs = 0;
  int64_t h = height, w = width;
  for (const auto& child : model->features->children()) {
    if (const auto* conv = child->as<nn::Conv2d>()) {
      const auto& o = conv->options;
      const int64_t k = o.kernel_size()->at(0), s = o.stride()->at(0);
      const int64_t p = compat::get<torch::ExpandingArray<2>>(o.padding())->at(0);
      h = (h + 2 * p - k) / s + 1;
      w = (w + 2 * p - k) / s + 1;
      macs += o.out_channels() * h * w * (o.in_channels() / o.groups()) * k * k;
    } else if (const auto* pool = child->as<nn::MaxPool2d>()) {
      const int64_t k = pool->options.kernel_size()->at(0), s = pool->options.stride()->at(0);
      h = (h - k) / s + 1;
      w = (w - k) / s + 1;
    }
  }
  for (const auto& child : model->classifier->children())
    if (const auto* fc = child->as<nn::Linear>())
      macs += fc->options.in_features() * fc->options.out_features();
  return macs;
}

struct Measurement {
  std::string what;             // "infer", "train", "data", "matmul"
  double top1 = -1;             // end-to-end infer: accuracy against the labels (last run)
  int64_t images = 0;           // per timed run (matmul: 0)
  std::vector<double> seconds;  // each timed batch (model-only) or run (end to end, data)
  double flop_per_item = 0;     // per image, or per product for matmul
  bool per_batch = false;       // seconds are per batch of batch_size images
};

struct RunInfo {
  torch::Device device = torch::kCPU;
  int threads = 1;
  ComputeConfig cfg;
  int64_t batch_size = 0;
  int64_t image_size = 0;
  int64_t num_classes = 0;
  std::string data;  // end to end: the data spec
  int64_t workers = 0;
};

void report(const BenchParams& p, const RunInfo& info, const Measurement& m) {
  const double med = median(m.seconds);
  double rate = 0, ms_per_batch = 0;
  if (m.per_batch) {
    rate = info.batch_size / med;
    ms_per_batch = 1000 * med;
  } else if (m.images > 0) {
    rate = m.images / med;
    ms_per_batch = 1000 * med * info.batch_size / m.images;
  }
  const double gflops = m.what == "matmul" ? m.flop_per_item / med / 1e9 : rate * m.flop_per_item / 1e9;
  const double rss = peak_rss_mib();
  const double cuda = cuda_used_mib(info.device);
  const std::string blas = select_blas_kernels();
  if (p.json) {
    char buf[512];
    std::string out = "{\"mode\": " + json_string(m.what) + ", \"device\": " +
                      json_string(info.device.str()) + ", \"threads\": " + std::to_string(info.threads);
    out += ", \"precision\": " + json_string(precision_name(info.cfg.precision)) +
           ", \"channels_last\": " + (info.cfg.channels_last ? "true" : "false") +
           ", \"compute\": " + json_string(info.cfg.describe()) + ", \"blas\": " + json_string(blas);
    std::snprintf(buf, sizeof(buf),
                  ", \"batch_size\": %lld, \"image_size\": %lld, \"num_classes\": %lld, "
                  "\"runs\": %zu, \"images_per_run\": %lld",
                  static_cast<long long>(info.batch_size), static_cast<long long>(info.image_size),
                  static_cast<long long>(info.num_classes), m.seconds.size(),
                  static_cast<long long>(m.per_batch ? info.batch_size : m.images));
    out += buf;
    out += ", \"data\": " + (info.data.empty() ? std::string("null") : json_string(info.data)) +
           ", \"workers\": " + std::to_string(info.workers);
    std::snprintf(buf, sizeof(buf),
                  ", \"median_s\": %.6g, \"min_s\": %.6g, \"img_per_s\": %.6g, \"ms_per_batch\": %.6g, "
                  "\"gflop_per_image\": %.6g, \"gflops\": %.6g, \"peak_rss_mb\": %.1f",
                  med, *std::min_element(m.seconds.begin(), m.seconds.end()), rate, ms_per_batch,
                  m.what == "matmul" ? 0.0 : m.flop_per_item / 1e9, gflops, rss);
    out += buf;
    if (m.top1 >= 0) {
      std::snprintf(buf, sizeof(buf), ", \"top1\": %.6g", m.top1);
      out += buf;
    }
    if (cuda >= 0) {
      std::snprintf(buf, sizeof(buf), ", \"cuda_used_mb\": %.1f", cuda);
      out += buf;
    } else {
      out += ", \"cuda_used_mb\": null";
    }
    std::printf("%s}\n", out.c_str());
    return;
  }
  if (m.what == "matmul") {
    std::printf("matmul %lldx%lld %s: median %.3f ms, %.1f GFLOP/s, peak RSS %.0f MiB\n",
                static_cast<long long>(p.matrix_size), static_cast<long long>(p.matrix_size),
                precision_name(info.cfg.precision), 1000 * med, gflops, rss);
    return;
  }
  std::printf("%s: median %.1f img/s, %.2f ms/batch of %lld, %.1f GFLOP/s (%.3f GFLOP/image), "
              "peak RSS %.0f MiB",
              m.what.c_str(), rate, ms_per_batch, static_cast<long long>(info.batch_size), gflops,
              m.flop_per_item / 1e9, rss);
  if (cuda >= 0) std::printf(", GPU memory in use %.0f MiB", cuda);
  std::printf("\n");
}

// --- Mode "data": each repetition is one epoch from a fresh Loader (thread start-up included).
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
    const auto start = Clock::now();
    data::Loader loader(dataset, pipeline, options);
    loader.start_epoch(r);
    int64_t images = 0;
    while (auto batch = loader.next()) images += batch->images.size(0);
    const double seconds = seconds_since(start);
    rates.push_back(images / seconds);
    if (!p.json)
      std::printf("run %lld: %lld images in %.3f s, %.1f img/s\n", static_cast<long long>(r + 1),
                  static_cast<long long>(images), seconds, rates.back());
  }
  if (p.json) {
    std::printf("{\"mode\": \"data\", \"data\": %s, \"transform\": %s, \"workers\": %lld, "
                "\"batch_size\": %lld, \"runs\": %lld, \"img_per_s\": %.6g, \"peak_rss_mb\": %.1f}\n",
                json_string(p.data).c_str(), json_string(p.transform).c_str(),
                static_cast<long long>(p.workers), static_cast<long long>(p.batch_size),
                static_cast<long long>(p.repeat), median(rates), peak_rss_mib());
  } else {
    std::printf("median %.1f img/s (%s, %lld workers, %lld runs)\n", median(rates),
                p.transform.c_str(), static_cast<long long>(p.workers),
                static_cast<long long>(p.repeat));
  }
  return 0;
}

// --- Mode "matmul": C = A B with A, B (N, N) random, in the requested precision.
Measurement bench_matmul(const BenchParams& p, const RunInfo& info) {
  c10::InferenceMode inference;
  const auto options = torch::TensorOptions().device(info.device).dtype(precision_dtype(info.cfg.precision));
  const int64_t n = p.matrix_size;
  const auto a = torch::randn({n, n}, options), b = torch::randn({n, n}, options);  // (N, N)
  Measurement m;
  m.what = "matmul";
  m.flop_per_item = 2.0 * n * n * n;
  for (int64_t i = 0; i < p.warmup + p.iters; ++i) {
    const auto start = Clock::now();
    const auto c = torch::mm(a, b);
    synchronize(info.device);
    if (i >= p.warmup) m.seconds.push_back(seconds_since(start));
  }
  return m;
}

// Logits as raw float32, row-major (B, classes), for comparing devices and precisions.
void write_logits(const std::string& path, const torch::Tensor& logits) {
  const auto host = logits.to(torch::kCPU, torch::kFloat32).contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(host.data_ptr<float>()),
            static_cast<std::streamsize>(host.numel() * sizeof(float)));
  TORCH_CHECK(out.good(), path, ": cannot write the logits");
}

// One training step as alexnet train takes it: fp32 master weights, autocast
// for bf16/fp16, loss scaling for fp16, SGD with momentum and weight decay.
// Shared by the model-only and end-to-end training benchmarks.
class TrainStep {
 public:
  TrainStep(AlexNet& model, const RunInfo& info)
      : model_(model),
        info_(info),
        input_cfg_(info.cfg),
        params_(model->parameters()),  // the same tensors after to(): it sets their data
        sgd_(params_, SgdOptions().momentum(0.9).weight_decay(5e-4)),
        scaler_(LossScalerOptions().enabled(info.cfg.precision == Precision::kFp16)) {
    model_->to(info.device);
    if (info.cfg.channels_last) to_channels_last(*model_);
    model_->train();
    input_cfg_.low_precision_weights = false;  // training autocasts; the input stays fp32
  }

  /// A batch (B, 3, S, S) on the device, in the model's layout.
  torch::Tensor input(const torch::Tensor& images, bool non_blocking = false) const {
    return prepare_input(images, input_cfg_, non_blocking);
  }

  /// One step on an input from input() and labels (B,) on the device; the loss.
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& y) {
    sgd_.zero_grad();
    torch::Tensor logits;
    {
      const AutocastGuard autocast(info_.device, info_.cfg.precision);
      logits = model_->forward(x);
    }
    const auto loss = torch::nn::functional::cross_entropy(logits.to(torch::kFloat32), y);
    scaler_.scale(loss).backward();
    scaler_.step(params_, [&] { sgd_.step(0.01); });
    return loss;
  }

 private:
  AlexNet& model_;
  const RunInfo& info_;
  ComputeConfig input_cfg_;
  std::vector<torch::Tensor> params_;
  Sgd sgd_;
  LossScaler scaler_;
};

// --- Model only, on one random batch made before timing. The batch is drawn
// after the model (torch.manual_seed(0); torchvision.models.alexnet(); torch.randn
// draws the same values in Python).
Measurement bench_model(const BenchParams& p, RunInfo& info, bool train) {
  torch::manual_seed(0);
  AlexNet model = p.weights.empty() ? AlexNet(AlexNetOptions().num_classes(info.num_classes))
                                    : load_alexnet(p.weights);
  info.num_classes = model->options().num_classes();
  const auto input = torch::randn({info.batch_size, 3, info.image_size, info.image_size});  // (B, 3, S, S)
  Measurement m;
  m.what = train ? "train" : "infer";
  m.per_batch = true;
  m.flop_per_item = 2.0 * forward_macs(model, info.image_size, info.image_size) * (train ? 3 : 1);
  if (!train) {
    prepare_for_inference(model, info.cfg);
    c10::InferenceMode inference;
    const auto x = prepare_input(input, info.cfg);
    torch::Tensor logits;
    for (int64_t i = 0; i < p.warmup + p.iters; ++i) {
      const auto start = Clock::now();
      logits = model->forward(x);  // (B, classes)
      synchronize(info.device);
      if (i >= p.warmup) m.seconds.push_back(seconds_since(start));
    }
    if (!p.logits.empty()) write_logits(p.logits, logits);
    log_inference_plan(model);
    return m;
  }
  TrainStep step(model, info);
  const auto x = step.input(input);                                                     // (B, 3, S, S)
  const auto y = torch::randint(info.num_classes, {info.batch_size}, torch::kInt64).to(info.device);  // (B,)
  for (int64_t i = 0; i < p.warmup + p.iters; ++i) {
    const auto start = Clock::now();
    step(x, y);
    synchronize(info.device);
    if (i >= p.warmup) m.seconds.push_back(seconds_since(start));
  }
  return m;
}

// --- End to end on a dataset: each repetition is one pass over it from a fresh
// Loader (worker start-up included, as a new epoch), after one untimed warm-up
// batch through the model.
Measurement bench_end_to_end(const BenchParams& p, RunInfo& info, bool train) {
  std::shared_ptr<const data::Dataset> dataset = data::open_dataset(p.data, p.split);
  if (p.limit > 0) dataset = std::make_shared<FirstSamples>(dataset, p.limit);
  auto transform = data::default_transform_options(dataset->kind(), train).in_channels(3);
  if (p.image_size > 0)
    transform.resize_size(transform.resize_size() * p.image_size / transform.image_size())
        .image_size(p.image_size);
  const data::Pipeline pipeline(transform);
  info.image_size = transform.image_size();
  info.num_classes = dataset->num_classes();
  spdlog::info("bench {} end to end: {} ({} images), {} workers", train ? "train" : "infer",
               dataset->description(), dataset->size(), p.workers);

  torch::manual_seed(0);
  AlexNet model = p.weights.empty() ? AlexNet(AlexNetOptions().num_classes(info.num_classes))
                                    : load_alexnet(p.weights, info.num_classes);
  Measurement m;
  m.what = train ? "train" : "infer";
  m.flop_per_item = 2.0 * forward_macs(model, info.image_size, info.image_size) * (train ? 3 : 1);
  const auto options = data::LoaderOptions()
                           .batch_size(p.batch_size)
                           .workers(p.workers)
                           .shuffle(train)
                           .drop_last(train)
                           .seed(0)
                           .channels_last(info.cfg.channels_last)
                           .pin_memory(info.device.is_cuda());
  const auto warm = torch::zeros({p.batch_size, 3, info.image_size, info.image_size});

  if (!train) {
    prepare_for_inference(model, info.cfg);
    c10::InferenceMode inference;
    model->forward(prepare_input(warm, info.cfg));
    for (int64_t r = 0; r < p.repeat; ++r) {
      const auto start = Clock::now();
      data::Loader loader(dataset, pipeline, options);
      loader.start_epoch(r);
      int64_t images = 0, correct = 0;
      std::vector<torch::Tensor> predictions;
      while (auto batch = loader.next()) {
        const auto x = prepare_input(batch->images, info.cfg, /*non_blocking=*/true);  // (B, 3, S, S)
        const auto predicted = model->forward(x).argmax(1).to(torch::kCPU);          // (B,)
        correct += predicted.eq(batch->labels).sum().item<int64_t>();
        images += predicted.size(0);
        if (!p.predictions.empty()) predictions.push_back(predicted);
      }
      m.seconds.push_back(seconds_since(start));
      m.images = images;
      m.top1 = images > 0 ? static_cast<double>(correct) / images : 0.0;
      if (!p.predictions.empty() && r == 0) {
        // One class index per line, in dataset order (the loader does not shuffle here).
        std::ofstream out(p.predictions);
        TORCH_CHECK(out.good(), p.predictions, ": cannot open for writing");
        for (const auto& batch : predictions) {
          const auto* v = batch.data_ptr<int64_t>();
          for (int64_t i = 0; i < batch.size(0); ++i) out << v[i] << '\n';
        }
        TORCH_CHECK(out.good(), p.predictions, ": write failed");
      }
    }
    log_inference_plan(model);
    return m;
  }

  TrainStep train_step(model, info);
  const auto step = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    return train_step(train_step.input(images, /*non_blocking=*/true),
                      labels.to(info.device, /*non_blocking=*/true))
        .item<double>();
  };
  step(warm, torch::zeros({p.batch_size}, torch::kInt64));
  for (int64_t r = 0; r < p.repeat; ++r) {
    const auto start = Clock::now();
    data::Loader loader(dataset, pipeline, options);
    loader.start_epoch(r);
    int64_t images = 0;
    while (auto batch = loader.next()) {
      step(batch->images, batch->labels);
      images += batch->images.size(0);
    }
    m.seconds.push_back(seconds_since(start));
    m.images = images;
  }
  return m;
}

}  // namespace

int run_bench(int argc, const char* const* argv) {
  BenchParams p;
  cxxopts::Options options("alexnet bench",
                           "Measure throughput: the model alone (infer, train), end to end on a "
                           "dataset (infer, train with --data), data loading, or a matrix product.");
  options.add_options()
      ("mode", "infer, train, data (decode + transform + batching) or matmul "
               "(default: data with --data, else infer)",
       cxxopts::value<std::string>())
      ("data", std::string("Dataset (infer/train: end to end): ") + data::kDataSpecHelp,
       cxxopts::value<std::string>())
      ("split", "Dataset split: train, val or test", cxxopts::value<std::string>()->default_value(p.split))
      ("transform", "Mode data: train (random augmentation) or eval",
       cxxopts::value<std::string>()->default_value(p.transform))
      ("workers", "Loader threads (0 = in the consumer's thread)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.workers)))
      ("batch-size", "Images per batch", cxxopts::value<int64_t>()->default_value(std::to_string(p.batch_size)))
      ("limit", "Use the first N images only (0 = all)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.limit)))
      ("repeat", "Passes over the data (data, end to end); the median is reported",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.repeat)))
      ("image-size", "Model input side (0 = 224, or the dataset's size with --data)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.image_size)))
      ("num-classes", "Classes of the model (model only; --data uses the dataset's)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.num_classes)))
      ("precision", "fp32, bf16, fp16 (CUDA) or auto (bf16 on AMX CPUs and Ampere GPUs, fp16 on "
                    "older GPUs, else fp32)",
       cxxopts::value<std::string>()->default_value(p.precision))
      ("channels-last", "Channels-last memory format: auto (CPU, or low precision on CUDA), on, off",
       cxxopts::value<std::string>()->default_value(p.channels_last)->implicit_value("on"))
      ("onednn-plan", std::string(kPlanHelp) + "; inference only",
       cxxopts::value<std::string>()->default_value("auto"))
      ("warmup", "Untimed iterations first (model only, matmul)",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.warmup)))
      ("iters", "Timed iterations (model only, matmul); the median is reported",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.iters)))
      ("matrix-size", "Mode matmul: N of the N x N product",
       cxxopts::value<int64_t>()->default_value(std::to_string(p.matrix_size)))
      ("weights", "Weights to load (default: random, seed 0); with --data, the dataset's classes",
       cxxopts::value<std::string>())
      ("predictions", "End-to-end infer: write each image's predicted class, one per line",
       cxxopts::value<std::string>())
      ("logits", "Model-only infer: write the last batch's logits (float32, row-major, raw)",
       cxxopts::value<std::string>())
      ("json", "Print the result as one JSON object");
  add_common_options(options);
  const auto result = parse_or_usage(options, argc, argv);
  if (wants_help(result)) {
    std::printf("%s", options.help().c_str());
    return 0;
  }
  const auto usage = [&](const std::string& message) { throw UsageError(message, options.help()); };
  if (result.count("data")) p.data = result["data"].as<std::string>();
  p.mode = result.count("mode") ? result["mode"].as<std::string>() : (p.data.empty() ? "infer" : "data");
  if (p.mode != "infer" && p.mode != "train" && p.mode != "data" && p.mode != "matmul")
    usage("--mode " + p.mode + ": expected infer, train, data or matmul");
  p.split = result["split"].as<std::string>();
  p.transform = result["transform"].as<std::string>();
  p.workers = result["workers"].as<int64_t>();
  p.batch_size = positive_flag(result, "batch-size", options);
  p.repeat = positive_flag(result, "repeat", options);
  p.iters = positive_flag(result, "iters", options);
  p.matrix_size = positive_flag(result, "matrix-size", options);
  p.num_classes = positive_flag(result, "num-classes", options);
  p.limit = result["limit"].as<int64_t>();
  p.warmup = result["warmup"].as<int64_t>();
  p.image_size = result["image-size"].as<int64_t>();
  p.json = result.count("json") > 0;
  if (result.count("weights")) p.weights = result["weights"].as<std::string>();
  if (result.count("predictions")) p.predictions = result["predictions"].as<std::string>();
  if (!p.predictions.empty() && (p.mode != "infer" || p.data.empty()))
    usage("--predictions needs --mode infer with --data");
  if (result.count("logits")) p.logits = result["logits"].as<std::string>();
  if (!p.logits.empty() && (p.mode != "infer" || !p.data.empty()))
    usage("--logits needs --mode infer without --data");
  if (p.mode == "data" && p.data.empty()) usage("--mode data needs --data");
  if (p.transform != "train" && p.transform != "eval")
    usage("--transform " + p.transform + ": expected train or eval");
  if (p.workers < 0) usage("--workers must be 0 or positive");
  if (p.limit < 0) usage("--limit must be 0 or positive");
  if (p.warmup < 0) usage("--warmup must be 0 or positive");
  if (p.image_size != 0 && p.image_size < kMinInputSize)
    usage("--image-size must be at least " + std::to_string(kMinInputSize) + " (or 0)");
  const auto precision = parse_precision(result["precision"].as<std::string>());
  if (!precision) usage("--precision " + result["precision"].as<std::string>() + ": expected fp32, bf16, fp16 or auto");
  const auto channels_last = parse_channels_last(result["channels-last"].as<std::string>());
  if (!channels_last)
    usage("--channels-last " + result["channels-last"].as<std::string>() + ": expected auto, on or off");
  const auto plan_flag = parse_plan_choice(result["onednn-plan"].as<std::string>());
  if (!plan_flag)
    usage("--onednn-plan " + result["onednn-plan"].as<std::string>() + ": expected auto, winograd, direct or off");

  if (p.mode == "data") {
    configure_threads(result["threads"].as<int>());
    return bench_data(p);
  }
  RunInfo info;
  info.device = setup_runtime(result);
  if (p.batch_size > 1) reuse_freed_memory();  // as train and eval do; batch 1 measures predict's memory
  info.threads = torch::get_num_threads();
  info.batch_size = p.batch_size;
  info.image_size = p.image_size > 0 ? p.image_size : 224;
  info.num_classes = p.num_classes;
  info.data = p.data;
  info.workers = p.data.empty() ? 0 : p.workers;
  const bool train = p.mode == "train";
  const Precision resolved =
      resolve_precision(*precision, info.device, train ? Workload::kTraining : Workload::kInference);
  configure_cuda_math(info.device, resolved);
  if (p.mode == "matmul") {
    info.cfg = inference_config(info.device, resolved, false);
    info.batch_size = 0;
    info.image_size = 0;
    info.num_classes = 0;
    report(p, info, bench_matmul(p, info));
    return 0;
  }
  info.cfg = inference_config(info.device, resolved, resolve_channels_last(*channels_last, info.device, resolved));
  if (train) info.cfg.low_precision_weights = false;  // fp32 master weights, autocast
  if (!train) choose_plan(info.cfg, *plan_flag);
  spdlog::info("bench {}{}: {}", p.mode, p.data.empty() ? "" : " end to end", info.cfg.describe());
  const Measurement m = p.data.empty() ? bench_model(p, info, train) : bench_end_to_end(p, info, train);
  report(p, info, m);
  return 0;
}

}  // namespace alexnet::app
