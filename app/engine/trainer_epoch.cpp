// The epoch loop: each batch's step (its loss and any stop request agreed over the
// ranks), the progress it shows, the stop on a signal, the epoch's totals,
// evaluation, and the report and files that end an epoch.
#include "app/engine/trainer.h"

#include "app/runtime/json.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

namespace alexnet::engine {

using runtime::JsonObject;

Trainer::BatchOutcome Trainer::train_batch(const data::Batch& batch, double lr, int64_t epoch, int64_t step) {
  const auto x = batch.images.to(device_, /*non_blocking=*/true);  // (B, C, S, S)
  const auto y = batch.labels.to(device_, /*non_blocking=*/true);  // (B,)
  const TrainStep::Forward f = step_->forward(x, y);
  BatchOutcome out;
  out.loss = f.loss.item<double>();
  out.mean_loss = out.loss;
  out.stop = caught_signal() != 0;
  if (comm_) {
    auto shared = torch::tensor({out.loss, out.stop ? 1.0 : 0.0}, torch::kFloat64);
    comm_->all_reduce_sum(shared, "loss all-reduce");
    out.mean_loss = shared[0].item<double>() / static_cast<double>(comm_->world_size());
    out.stop = shared[1].item<double>() > 0;
  }
  TORCH_CHECK(std::isfinite(out.mean_loss), "epoch ", epoch + 1, " step ", step + 1, ": loss is ",
              std::isnan(out.mean_loss) ? "nan" : "infinite", "; stopping (the last good checkpoint, ",
              checkpoint_path_, ", is kept). Try a lower --lr.");
  if (!step_->update(f.loss, lr))
    spdlog::debug("epoch {} step {}: inf/nan fp16 gradients, step skipped; loss scale now {}", epoch + 1,
                  step + 1, step_->scaler().current_scale());
  out.correct = f.logits.argmax(1).eq(y).sum().item<int64_t>();
  return out;
}

void Trainer::seed_rank_dropout(int64_t epoch) {
  // From (seed, epoch, resume step, rank).
  torch::manual_seed(static_cast<uint64_t>(config_.seed) * 0x9E3779B97F4A7C15ULL +
                     static_cast<uint64_t>(epoch) * 0xBF58476D1CE4E5B9ULL +
                     static_cast<uint64_t>(skip_steps_) * 0x94D049BB133111EBULL +
                     static_cast<uint64_t>(comm_->rank()) + 1);
}

void Trainer::report_step(int64_t epoch, int64_t step, double mean_loss, double lr, const Progress& progress) {
  const int64_t world = comm_ ? comm_->world_size() : 1;
  const bool bar = progress_style() == ProgressStyle::kBar;
  if (bar && lead_)
    show_live(fmt::format("epoch {} {} {}/{} ETA {} (run {}) loss {:.4f} lr {:.4g} {:.0f} img/s", epoch + 1,
                          progress_bar(step, steps_per_epoch_), step, steps_per_epoch_, progress.eta(),
                          run_eta(epoch, step, progress), mean_loss, lr, progress.rate() * world),
              /*force=*/step == steps_per_epoch_);
  if (config_.print_freq <= 0 || (step % config_.print_freq != 0 && step != steps_per_epoch_)) return;
  if (!bar)
    spdlog::info("epoch {} step {}/{}: loss {:.4f} lr {:.4g} {:.0f} img/s ETA {} (run {})", epoch + 1, step,
                 steps_per_epoch_, mean_loss, lr, progress.rate() * world, progress.eta(),
                 run_eta(epoch, step, progress));
  if (metrics_)
    metrics_->write(JsonObject().str("type", "step").integer("epoch", epoch + 1).integer("step", step)
                        .number("loss", mean_loss).number("lr", lr)
                        .number("img_per_s", progress.rate() * world).dump());
}

EpochResult Trainer::train_one_epoch(int64_t epoch) {
  EpochResult r;
  r.lr = schedule_.lr_at(epoch, skip_steps_, steps_per_epoch_);
  model_->train();
  if (comm_) seed_rank_dropout(epoch);  // each rank draws its own dropout masks
  train_loader_->start_epoch(epoch, /*first_batch=*/skip_steps_);  // resuming: skip what was done
  Progress progress("epoch " + std::to_string(epoch + 1), steps_per_epoch_ - skip_steps_);
  double loss_sum = 0;
  int64_t step = skip_steps_;
  while (step < steps_per_epoch_) {
    auto batch = train_loader_->next();
    if (!batch) break;
    const double lr = schedule_.lr_at(epoch, step, steps_per_epoch_);
    BatchOutcome b;
    try {
      b = train_batch(*batch, lr, epoch, step);
    } catch (const PeerFailure& e) {
      peer_failed(e, epoch, step);
    }
    const int64_t n = batch->labels.size(0);
    ++step;
    loss_sum += b.loss * n;
    r.images += n;
    r.correct += b.correct;
    progress.advance(n);
    report_step(epoch, step, b.mean_loss, lr, progress);
    // A signal after the epoch's last step lets the epoch finish normally (evaluation,
    // end-of-epoch checkpoint), then stops.
    if (b.stop && step < steps_per_epoch_) {
      save_checkpoint(epoch - 1, step, schedule_.lr_at(epoch, step, steps_per_epoch_));
      spdlog::info("stopped by signal {} at epoch {} step {}: wrote {}; continue with --resume {}",
                   stop_signal(), epoch + 1, step, checkpoint_path_, checkpoint_path_);
      r.signal = stop_signal();
      r.stopped_mid_epoch = true;
      return r;
    }
  }
  clear_live();  // the epoch's summary line takes the bar's place
  skip_steps_ = 0;
  r.seconds = progress.rate() > 0 ? r.images / progress.rate() : 0;
  const bool stop_after_epoch = sum_over_ranks(r, loss_sum, caught_signal() != 0);
  r.loss = r.images ? loss_sum / r.images : 0.0;
  if (stop_after_epoch) r.signal = stop_signal();
  return r;
}

bool Trainer::sum_over_ranks(EpochResult& r, double& loss_sum, bool stop) {
  if (!comm_) return stop;
  auto totals = torch::tensor({loss_sum, static_cast<double>(r.correct), static_cast<double>(r.images),
                               stop ? 1.0 : 0.0}, torch::kFloat64);
  try {
    comm_->all_reduce_sum(totals, "epoch totals all-reduce");
  } catch (const PeerFailure& e) {
    failed_peer_ = true;
    throw PeerFailure(std::string(e.what()) + resume_hint(false));
  }
  loss_sum = totals[0].item<double>();
  r.correct = static_cast<int64_t>(totals[1].item<double>());
  r.images = static_cast<int64_t>(totals[2].item<double>());
  return totals[3].item<double>() > 0;
}

EvalResult Trainer::evaluate() {
  std::function<void(torch::Tensor&)> reduce_sum;
  if (comm_) reduce_sum = [this](torch::Tensor& t) { comm_->all_reduce_sum(t, "evaluation all-reduce"); };
  val_loader_->start_epoch(0);
  try {
    // Progress about as often as training's (a few lines per evaluation at most).
    const int64_t every = config_.print_freq > 0
                              ? std::max<int64_t>(config_.print_freq, val_loader_->num_batches() / 4)
                              : 0;
    EvalResult r = engine::evaluate(model_, *val_loader_, device_, every, "eval", reduce_sum);
    last_eval_seconds_ = r.seconds;
    return r;
  } catch (const PeerFailure& e) {
    failed_peer_ = true;  // the epoch's training is lost: its checkpoint comes after evaluation
    throw PeerFailure(std::string(e.what()) + resume_hint(false));
  }
}

void Trainer::end_epoch(int64_t epoch, const EpochResult& train, const EvalResult& val) {
  const int64_t seen = train.images;
  const double rate = train.seconds > 0 ? seen / train.seconds : 0;  // all ranks
  // Top-5 of fewer than 5 classes is meaningless: "n/a", as eval prints it.
  const std::string top5 = std::isnan(val.top5) ? "n/a" : fmt::format("{:.2f}%", 100 * val.top5);
  spdlog::info("epoch {} done: train loss {:.4f} acc {:.2f}% | val loss {:.4f} top1 {:.2f}% top5 {} | {} train, {:.0f} img/s",
               epoch + 1, train.loss, seen ? 100.0 * train.correct / seen : 0.0, val.loss, 100 * val.top1,
               top5, format_duration(train.seconds), rate);
  if (metrics_)
    metrics_->write(JsonObject().str("type", "epoch").integer("epoch", epoch + 1).number("lr", train.lr)
                        .number("train_loss", train.loss)
                        .number("train_acc", seen ? static_cast<double>(train.correct) / seen : 0.0)
                        .number("val_loss", val.loss).number("val_top1", val.top1).number("val_top5", val.top5)
                        .number("train_seconds", train.seconds).number("img_per_s", rate).dump());
  const bool best = val.top1 > best_top1_;
  if (best) best_top1_ = val.top1;
  if (!lead_) return;  // rank 0 writes the files
  const TrainCheckpoint c = checkpoint(epoch, 0);  // one CPU copy for every file below
  // model_best.pth: the weights of the best validation top-1 so far (a state_dict).
  if (best) {
    save_state_dict(c.model, config_.output + "/model_best.pth", c.info);
    spdlog::info("epoch {}: best validation top-1 so far ({:.2f}%): wrote {}/model_best.pth", epoch + 1,
                 100 * val.top1, config_.output);
  }
  const double next_lr = schedule_.lr_at(epoch + 1, 0, steps_per_epoch_);
  write_checkpoint(c, next_lr, checkpoint_path_);
  spdlog::info("epoch {}: wrote {}", epoch + 1, checkpoint_path_);
  // model_{epoch}.pth as train.py names them (0-based), full checkpoints.
  if (config_.save_every > 0 && (epoch + 1) % config_.save_every == 0) {
    const std::string path = config_.output + "/model_" + std::to_string(epoch) + ".pth";
    write_checkpoint(c, next_lr, path);
    spdlog::info("epoch {}: wrote {}", epoch + 1, path);
  }
  if (epoch + 1 == config_.epochs) final_weights_ = c.model;  // finish() writes it as model.pth
}

}  // namespace alexnet::engine
