#include "app/engine/evaluate.h"

#include "app/engine/progress.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>

namespace alexnet::engine {

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
    if (progress_style() == ProgressStyle::kBar)
      show_live(fmt::format("{} {} {}/{} {:.0f} img/s ETA {}", what, progress_bar(progress.step(), loader.num_batches()),
                            progress.step(), loader.num_batches(), progress.rate(), progress.eta()),
                /*force=*/progress.step() == loader.num_batches());
    else if (progress_every > 0 && progress.step() % progress_every == 0)
      spdlog::info("{} step {}/{}: {:.0f} img/s ETA {}", what, progress.step(),
                   loader.num_batches(), progress.rate(), progress.eta());
  }
  clear_live();
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

}  // namespace alexnet::engine
