// The run's lifecycle: the order of set-up, the output folder (checked before
// anything else, and left as it was found when set-up fails), the signals that
// stop a run (caught from the end of set-up to the Trainer's end), and the
// closing files and lines.
#include "app/engine/trainer.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace alexnet::engine {

namespace {

namespace fs = std::filesystem;

// Fails now, not after an epoch, when the output folder cannot take files.
// `made` receives the folders it created, outermost first.
void check_output_dir(const std::string& dir, std::vector<std::string>* made) {
  std::error_code ec;
  for (fs::path p = fs::path(dir).lexically_normal(); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    made->insert(made->begin(), p.string());
    if (p == p.parent_path()) break;
  }
  fs::create_directories(dir, ec);
  TORCH_CHECK(!ec, "--output ", dir, ": cannot create folder (", ec.message(), ")");
  TORCH_CHECK(fs::is_directory(dir), "--output ", dir, ": not a folder");
  const std::string probe = dir + "/.write-test-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(probe.c_str(), "w");
  TORCH_CHECK(f != nullptr, "--output ", dir, ": folder is not writable (", std::strerror(errno), ")");
  std::fclose(f);
  std::remove(probe.c_str());
}

}  // namespace

Trainer::Trainer(TrainConfig config, torch::Device device, bool threads_given,
                 std::shared_ptr<const WeightsFile> opened)
    : config_(std::move(config)), device_(device), start_file_(std::move(opened)) {
  // Distributed: connect first, so that a rank failing any check below ends the
  // others at their next collective instead of leaving them waiting.
  if (config_.distributed) connect(threads_given);
  lead_ = !comm_ || comm_->rank() == 0;
  if (lead_) check_output_dir(config_.output, &made_dirs_);
  try {
    start();
  } catch (...) {
    // A failed start leaves nothing behind: the folders it made, if still empty
    // (but for the empty metrics file it may have opened).
    metrics_.reset();
    std::error_code ec;
    if (!resumed_ && fs::exists(metrics_path_, ec) && fs::file_size(metrics_path_, ec) == 0) fs::remove(metrics_path_, ec);
    for (auto it = made_dirs_.rbegin(); it != made_dirs_.rend(); ++it)
      if (fs::is_empty(*it, ec)) fs::remove(*it, ec);
    throw;
  }
}

void Trainer::start() {
  checkpoint_path_ = config_.output + "/checkpoint.pth";
  TORCH_CHECK(!lead_ || config_.overwrite || !config_.resume.empty() || !fs::exists(checkpoint_path_),
              checkpoint_path_, " exists: continue it with --resume ", checkpoint_path_,
              ", start afresh with --overwrite, or choose another --output");
  open_weights();  // before the data: a bad file fails before a large folder is scanned
  open_data();
  build_model();
  restore();
  make_loaders();
  // From here a signal ends the step under way, saves and stops; a second one quits at once.
  signals_ = std::make_unique<runtime::SignalCatcher>(std::initializer_list<int>{SIGINT, SIGTERM},
                                                      /*second_is_fatal=*/true);
  {
    const Recipe& r = config_.recipe;
    spdlog::info("recipe {} ({}): lr {} momentum {}{} weight decay {} label smoothing {} clip {} dropout {}; "
                 "{} schedule", name_of(kRecipeNames, config_.recipe_name), config_.recipe_reason, r.lr,
                 r.momentum, r.nesterov ? " (Nesterov)" : "", r.weight_decay, r.label_smoothing,
                 r.clip_grad_norm > 0 ? fmt::format("{}", r.clip_grad_norm) : std::string("off"),
                 r.dropout, name_of(kLrSchedulers, config_.lr_scheduler));
  }
  spdlog::info("plan: {} epoch(s) of {} steps of {} images, {} on {}, validating on {} after each; {}; writing {}{}",
               config_.epochs - start_epoch_, steps_per_epoch_,
               config_.batch_size * (comm_ ? comm_->world_size() : 1),
               start_epoch_ > 0 || skip_steps_ > 0 ? "from epoch " + std::to_string(start_epoch_ + 1) + " step " +
                                                         std::to_string(skip_steps_ + 1)
                                                   : std::string("from the start"),
               train_set_->description(), val_set_->description(), estimate_duration(), config_.output,
               progress_style() == ProgressStyle::kBar ? "; the progress bar gives the time left (run ...)"
               : config_.print_freq > 0                 ? "; progress lines give the time left (run ...)"
                                                        : "");
  if (comm_) {
    reducer_ = std::make_unique<GradientReducer>(*comm_, step_->params());
    step_->set_reducer(reducer_.get());
    spdlog::info("distributed: gradients averaged in {} buckets; {} images per step over {} processes",
                 reducer_->num_buckets(), config_.batch_size * comm_->world_size(), comm_->world_size());
  }
}

Trainer::~Trainer() {
  if (failed_peer_) {
    // Gloo's worker threads may still be waiting on a dead link, each queued
    // collective for the whole --dist-timeout, and its destructor would join them:
    // leave the process group to the process's exit instead.
    reducer_.reset();
    (void)comm_.release();
  }
}

int Trainer::stop_signal() const { return caught_signal() != 0 ? caught_signal() : SIGTERM; }

void Trainer::finish() {
  // The last epoch's copy of the weights, made for its checkpoint: the model has not changed since.
  if (lead_)
    save_state_dict(!final_weights_.empty() ? final_weights_ : cpu_weights(),
                    config_.output + "/model.pth", weights_info());
  const LossScaler& scaler = step_->scaler();
  if (scaler.enabled())
    spdlog::info("fp16 loss scaling: {} steps skipped for inf/nan gradients, final scale {}",
                 scaler.skipped_steps(), scaler.current_scale());
  if (reducer_ && reducer_->steps() > 0)
    spdlog::info("distributed: all-reduce of {:.1f} MB of gradients per step in {} buckets; {:.1f} ms per step "
                 "waited for it after backward ({} steps)",
                 reducer_->bytes_per_step() / 1e6, reducer_->num_buckets(),
                 1e3 * reducer_->waited_seconds() / static_cast<double>(reducer_->steps()), reducer_->steps());
  const int64_t skipped = train_loader_->skipped() + val_loader_->skipped();
  if (skipped > 0) spdlog::warn("skipped {} unreadable images", skipped);
  spdlog::info("done: weights in {}/model.pth, checkpoint {}, metrics {}", config_.output, checkpoint_path_,
               metrics_path_);
}

}  // namespace alexnet::engine
