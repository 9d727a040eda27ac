#include "app/training.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>

namespace alexnet::app {

EvalResult evaluate(AlexNet& model, data::Loader& loader, torch::Device device,
                    int64_t progress_every, const std::string& what,
                    const std::function<void(torch::Tensor&)>& reduce_sum) {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t classes = model->options().num_classes();
  EvalResult r;
  r.confusion = torch::zeros({classes, classes}, torch::kInt64);
  double loss_sum = 0;
  int64_t correct1 = 0, correct5 = 0;
  Progress progress(what, loader.num_batches());
  const auto start = std::chrono::steady_clock::now();
  while (auto batch = loader.next()) {
    const auto x = batch->images.to(device, /*non_blocking=*/true);  // (B, C, S, S)
    const auto y = batch->labels.to(device, /*non_blocking=*/true);  // (B,)
    const auto logits = model->forward(x).to(torch::kFloat32);      // (B, classes)
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    const int64_t k = std::min<int64_t>(5, classes);
    const auto top = std::get<1>(logits.topk(k, 1)).to(torch::kCPU);  // (B, k)
    const auto labels = batch->labels.to(torch::kCPU);
    const auto hits = top.eq(labels.unsqueeze(1));                     // (B, k)
    correct1 += hits.select(1, 0).sum().item<int64_t>();
    correct5 += hits.any(1).sum().item<int64_t>();
    const auto pred = top.select(1, 0);
    r.confusion.view(-1).index_add_(0, labels * classes + pred,
                                    torch::ones_like(labels, torch::kInt64));
    r.images += labels.size(0);
    progress.advance(labels.size(0));
    if (progress_every > 0 && progress.step() % progress_every == 0)
      spdlog::info("{} step {}/{}: {:.0f} img/s ETA {}", what, progress.step(),
                   loader.num_batches(), progress.rate(), progress.eta());
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (reduce_sum) {
    auto totals = torch::tensor({loss_sum, static_cast<double>(correct1),
                                 static_cast<double>(correct5), static_cast<double>(r.images)},
                                torch::kFloat64);
    reduce_sum(totals);
    reduce_sum(r.confusion);
    loss_sum = totals[0].item<double>();
    correct1 = static_cast<int64_t>(totals[1].item<double>());
    correct5 = static_cast<int64_t>(totals[2].item<double>());
    r.images = static_cast<int64_t>(totals[3].item<double>());
  }
  if (r.images > 0) {
    r.loss = loss_sum / r.images;
    r.top1 = static_cast<double>(correct1) / r.images;
    // Top-5 is undefined below 5 classes (torchvision's accuracy() refuses it).
    r.top5 = classes >= 5 ? static_cast<double>(correct5) / r.images : std::nan("");
  }
  const auto per_class_total = r.confusion.sum(1);
  const auto diag = r.confusion.diagonal();
  for (int64_t c = 0; c < classes; ++c) {
    const int64_t n = per_class_total[c].item<int64_t>();
    r.per_class_accuracy.push_back(n ? static_cast<double>(diag[c].item<int64_t>()) / n : 0.0);
  }
  return r;
}

double LrSchedule::lr_at(int64_t epoch, int64_t step, int64_t steps_per_epoch) const {
  // Position in epochs: whole epochs for train.py's per-epoch stepping.
  const double t = per_step && steps_per_epoch > 0
                       ? static_cast<double>(epoch) + static_cast<double>(step) / steps_per_epoch
                       : static_cast<double>(epoch);
  if (t < warmup_epochs) {
    // Warmup multiplies the lr as LinearLR / ConstantLR do.
    const double factor = warmup_method == "constant"
                              ? warmup_decay
                              : warmup_decay + (1.0 - warmup_decay) * t / warmup_epochs;
    return base_lr * factor;
  }
  const double main_t = t - warmup_epochs;
  if (kind == "step")
    return base_lr * std::pow(gamma, std::floor(main_t / static_cast<double>(std::max<int64_t>(1, step_size))));
  if (kind == "cosine") {
    const double t_max = std::max(per_step ? 1e-9 : 1.0, static_cast<double>(epochs) - warmup_epochs);
    return base_lr * (1 + std::cos(M_PI * std::min(main_t, t_max) / t_max)) / 2;
  }
  return base_lr;
}

Progress::Progress(std::string what, int64_t total_steps)
    : what_(std::move(what)), total_(total_steps), start_(std::chrono::steady_clock::now()) {}

double Progress::advance(int64_t images) {
  ++step_;
  images_ += images;
  return rate();
}

double Progress::rate() const {
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return s > 0 ? images_ / s : 0.0;
}

std::string Progress::eta() const {
  if (step_ == 0 || total_ <= 0) return "?";
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return format_duration(s / step_ * std::max<int64_t>(0, total_ - step_));
}

std::string format_duration(double seconds) {
  const auto total = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  const int64_t h = total / 3600, m = total / 60 % 60, s = total % 60;
  char buf[32];
  if (h > 0)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm%02llds", static_cast<long long>(h),
                  static_cast<long long>(m), static_cast<long long>(s));
  else if (m > 0)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(m), static_cast<long long>(s));
  else
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  return buf;
}

MetricsLog::MetricsLog(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "a" : "w");
  TORCH_CHECK(file_ != nullptr, path, ": cannot open for writing");
  holder_.reset(file_, [](std::FILE* f) { std::fclose(f); });
}

void MetricsLog::write(const std::string& json_object) {
  std::fprintf(file_, "%s\n", json_object.c_str());
  std::fflush(file_);
}

}  // namespace alexnet::app
