#include "app/engine/benchmark.h"

#include "app/engine/train_step.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/transforms.h"
#include "model/torch_compat.h"
#include "model/weights.h"

#include <spdlog/spdlog.h>

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace alexnet::engine {

namespace {

namespace nn = torch::nn;
using Clock = std::chrono::steady_clock;

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

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Logits as raw float32, row-major (B, classes), for comparing devices and precisions.
void write_logits(const std::string& path, const torch::Tensor& logits) {
  const auto host = logits.to(torch::kCPU, torch::kFloat32).contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(host.data_ptr<float>()),
            static_cast<std::streamsize>(host.numel() * sizeof(float)));
  TORCH_CHECK(out.good(), path, ": cannot write the logits");
}

// The model on the setup's device, in its layout and in train mode, and the step
// `alexnet train` takes for it.
std::unique_ptr<TrainStep> make_train_step(AlexNet& model, const BenchOptions& o, const BenchSetup& info) {
  model->to(info.device);
  if (info.cfg.channels_last) runtime::to_channels_last(*model);
  model->train();
  return std::make_unique<TrainStep>(model, o.recipe, info.device, info.cfg.precision);
}

// A training batch (B, 3, S, S) on the device in the model's layout: fp32, autocast converts.
torch::Tensor train_input(const torch::Tensor& images, const runtime::ComputeConfig& cfg,
                          bool non_blocking = false) {
  runtime::ComputeConfig fp32_input = cfg;
  fp32_input.low_precision_weights = false;
  return runtime::prepare_input(images, fp32_input, non_blocking);
}

}  // namespace

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
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

std::vector<double> bench_data(const BenchOptions& o) {
  std::shared_ptr<const data::Dataset> dataset = data::open_dataset(o.data, o.split);
  if (o.limit > 0) dataset = std::make_shared<FirstSamples>(dataset, o.limit);
  const data::Pipeline pipeline(data::default_transform_options(dataset->kind(), o.train_transform));
  const auto options =
      data::LoaderOptions().batch_size(o.batch_size).workers(o.workers).shuffle(o.train_transform).seed(0);
  spdlog::info("bench data: {} ({} images), transform {}, {} workers, batch {}", dataset->description(),
               dataset->size(), o.train_transform ? "train" : "eval", o.workers, o.batch_size);
  std::vector<double> rates;
  for (int64_t r = 0; r < o.repeat; ++r) {
    const auto start = Clock::now();
    data::Loader loader(dataset, pipeline, options);
    loader.start_epoch(r);
    int64_t images = 0;
    while (auto batch = loader.next()) images += batch->images.size(0);
    const double seconds = seconds_since(start);
    rates.push_back(images / seconds);
    spdlog::info("run {}: {} images in {:.3f} s, {:.1f} img/s", r + 1, images, seconds, rates.back());
  }
  return rates;
}

Measurement bench_matmul(const BenchOptions& p, const BenchSetup& info) {
  c10::InferenceMode inference;
  const auto options = torch::TensorOptions().device(info.device).dtype(runtime::precision_dtype(info.cfg.precision));
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

Measurement bench_model(const BenchOptions& p, BenchSetup& info, bool train) {
  torch::manual_seed(0);
  const auto base = AlexNetOptions().dropout(p.recipe.dropout);
  AlexNet model = p.weights.empty() ? AlexNet(AlexNetOptions(base).num_classes(info.num_classes))
                                    : load_alexnet(p.weights, std::nullopt, base);
  info.num_classes = model->options().num_classes();
  const auto input = torch::randn({info.batch_size, 3, info.image_size, info.image_size});  // (B, 3, S, S)
  Measurement m;
  m.what = train ? "train" : "infer";
  m.per_batch = true;
  m.flop_per_item = 2.0 * forward_macs(model, info.image_size, info.image_size) * (train ? 3 : 1);
  if (!train) {
    if (p.before_inference) p.before_inference(model, info.cfg, input, nullptr);
    runtime::prepare_for_inference(model, info.cfg);
    c10::InferenceMode inference;
    // Timed from the float32 NCHW batch a loader gives (on the device already: the copy is
    // not the model's), through its conversion to what the model reads: what predict, eval
    // and serve pay, and what the anchors (ONNX Runtime, OpenVINO) are timed from.
    const auto images = input.to(info.device);  // (B, 3, S, S)
    torch::Tensor logits;
    for (int64_t i = 0; i < p.warmup + p.iters; ++i) {
      const auto start = Clock::now();
      logits = model->forward(runtime::prepare_input(images, info.cfg));  // (B, classes)
      synchronize(info.device);
      if (i >= p.warmup) m.seconds.push_back(seconds_since(start));
    }
    if (!p.logits.empty()) write_logits(p.logits, logits);
    runtime::log_inference_plan(model);
    return m;
  }
  const auto step = make_train_step(model, p, info);
  const auto x = train_input(input, info.cfg);                                                      // (B, 3, S, S)
  const auto y = torch::randint(info.num_classes, {info.batch_size}, torch::kInt64).to(info.device);  // (B,)
  torch::Tensor loss;
  for (int64_t i = 0; i < p.warmup + p.iters; ++i) {
    const auto start = Clock::now();
    loss = (*step)(x, y, p.recipe.lr);
    synchronize(info.device);
    if (i >= p.warmup) m.seconds.push_back(seconds_since(start));
  }
  m.loss = loss.item<double>();
  return m;
}

namespace {

// What both end-to-end runs use: the dataset, its pipeline and the loader's options.
struct EndToEnd {
  std::shared_ptr<const data::Dataset> dataset;
  std::unique_ptr<data::Pipeline> pipeline;
  data::LoaderOptions loader;
  torch::Tensor warm;  // (B, 3, S, S) zeros: the untimed first batch
};

// One class index per line, in dataset order (the loader does not shuffle for inference).
void write_predictions(const std::string& path, const std::vector<torch::Tensor>& predictions) {
  std::ofstream out(path);
  TORCH_CHECK(out.good(), path, ": cannot open for writing");
  for (const auto& batch : predictions) {
    const auto* v = batch.data_ptr<int64_t>();
    for (int64_t i = 0; i < batch.size(0); ++i) out << v[i] << '\n';
  }
  TORCH_CHECK(out.good(), path, ": write failed");
}

void end_to_end_infer(const BenchOptions& p, BenchSetup& info, AlexNet& model, const EndToEnd& e,
                      Measurement& m) {
  if (p.before_inference) p.before_inference(model, info.cfg, torch::Tensor(), &e.pipeline->options());
  runtime::prepare_for_inference(model, info.cfg);
  c10::InferenceMode inference;
  model->forward(runtime::prepare_input(e.warm, info.cfg));
  for (int64_t r = 0; r < p.repeat; ++r) {
    const auto start = Clock::now();
    data::Loader loader(e.dataset, *e.pipeline, e.loader);
    loader.start_epoch(r);
    int64_t images = 0, correct = 0;
    std::vector<torch::Tensor> predictions;
    while (auto batch = loader.next()) {
      const auto x = runtime::prepare_input(batch->images, info.cfg, /*non_blocking=*/true);  // (B, 3, S, S)
      const auto predicted = model->forward(x).argmax(1).to(torch::kCPU);                    // (B,)
      correct += predicted.eq(batch->labels).sum().item<int64_t>();
      images += predicted.size(0);
      if (!p.predictions.empty()) predictions.push_back(predicted);
    }
    m.seconds.push_back(seconds_since(start));
    m.images = images;
    m.top1 = images > 0 ? static_cast<double>(correct) / images : 0.0;
    if (!p.predictions.empty() && r == 0) write_predictions(p.predictions, predictions);
  }
  runtime::log_inference_plan(model);
}

void end_to_end_train(const BenchOptions& p, BenchSetup& info, AlexNet& model, const EndToEnd& e,
                      Measurement& m) {
  const auto train_step = make_train_step(model, p, info);
  const auto step = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    return (*train_step)(train_input(images, info.cfg, /*non_blocking=*/true),
                         labels.to(info.device, /*non_blocking=*/true), p.recipe.lr)
        .item<double>();
  };
  step(e.warm, torch::zeros({p.batch_size}, torch::kInt64));
  for (int64_t r = 0; r < p.repeat; ++r) {
    const auto start = Clock::now();
    data::Loader loader(e.dataset, *e.pipeline, e.loader);
    loader.start_epoch(r);
    int64_t images = 0;
    while (auto batch = loader.next()) {
      m.loss = step(batch->images, batch->labels);
      images += batch->images.size(0);
    }
    m.seconds.push_back(seconds_since(start));
    m.images = images;
  }
}

}  // namespace

Measurement bench_end_to_end(const BenchOptions& p, BenchSetup& info, bool train) {
  EndToEnd e;
  e.dataset = data::open_dataset(p.data, p.split);
  if (p.limit > 0) e.dataset = std::make_shared<FirstSamples>(e.dataset, p.limit);
  auto transform = data::default_transform_options(e.dataset->kind(), train).in_channels(3);
  if (p.image_size > 0)
    transform.resize_size(transform.resize_size() * p.image_size / transform.image_size())
        .image_size(p.image_size);
  e.pipeline = std::make_unique<data::Pipeline>(transform);
  info.image_size = transform.image_size();
  info.num_classes = e.dataset->num_classes();
  spdlog::info("bench {} end to end: {} ({} images), {} workers", train ? "train" : "infer",
               e.dataset->description(), e.dataset->size(), p.workers);

  torch::manual_seed(0);
  const auto base = AlexNetOptions().dropout(p.recipe.dropout);
  AlexNet model = p.weights.empty() ? AlexNet(AlexNetOptions(base).num_classes(info.num_classes))
                                    : load_alexnet(p.weights, info.num_classes, base);
  Measurement m;
  m.what = train ? "train" : "infer";
  m.flop_per_item = 2.0 * forward_macs(model, info.image_size, info.image_size) * (train ? 3 : 1);
  e.loader = data::LoaderOptions()
                 .batch_size(p.batch_size)
                 .workers(p.workers)
                 .shuffle(train)
                 .drop_last(train)
                 .seed(0)
                 .channels_last(info.cfg.channels_last)
                 .pin_memory(info.device.is_cuda());
  e.warm = torch::zeros({p.batch_size, 3, info.image_size, info.image_size});
  if (train)
    end_to_end_train(p, info, model, e, m);
  else
    end_to_end_infer(p, info, model, e, m);
  return m;
}

}  // namespace alexnet::engine
