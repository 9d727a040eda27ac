// Training as torchvision's references/classification/train.py runs it, one
// piece a function: set-up (ranks, weights, data, model, optimiser, resume),
// train_one_epoch(), evaluate(), end_epoch() (report and checkpoint), finish().
// app/train.cpp drives it:
//   Trainer trainer(config, device, threads_given);
//   for (epoch = trainer.start_epoch(); epoch < config.epochs; ++epoch) {
//     const EpochResult e = trainer.train_one_epoch(epoch);   // stops early on a signal
//     trainer.end_epoch(epoch, e, trainer.evaluate());
//   }
//   trainer.finish();
// Its parts, in the order a run meets them: trainer.cpp (the run's lifecycle: the
// output folder, the signals, the closing lines), trainer_distributed.cpp (joining
// the ranks; a peer's failure), trainer_checkpoint.cpp (the file to start from,
// resume, checkpoints), trainer_setup.cpp (data, model, loaders),
// trainer_estimate.cpp (the run's duration), trainer_epoch.cpp (the epoch loop).
#pragma once

#include "app/engine/checkpoint.h"
#include "app/engine/distributed.h"
#include "app/engine/evaluate.h"
#include "app/engine/lr_schedule.h"
#include "app/engine/progress.h"
#include "app/engine/train_config.h"
#include "app/engine/train_step.h"
#include "app/runtime/signals.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "model/alexnet.h"
#include "model/weights.h"

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>

namespace alexnet::engine {

/// What one epoch of training did, summed over the ranks.
struct EpochResult {
  double loss = 0;          // mean training loss (with label smoothing)
  int64_t correct = 0;      // training images classified right
  int64_t images = 0;
  double seconds = 0;       // training time, evaluation excluded
  double lr = 0;            // the learning rate the epoch started with
  /// A SIGINT/SIGTERM arrived: the signal number. Mid-epoch the run has been
  /// saved and must stop now (stopped_mid_epoch); otherwise after end_epoch().
  int signal = 0;
  bool stopped_mid_epoch = false;
};

class Trainer {
 public:
  /// Sets everything up, checking every input before training starts: connects
  /// the ranks (distributed; then rank 0 alone logs), checks --output, reads
  /// --resume or --weights, opens the data, builds the model, the step and the
  /// loaders, and restores a checkpoint's state. threads_given: --threads was
  /// set (distributed ranks otherwise share this machine's cores). `opened`: the
  /// --resume (or --weights) file when the caller has read it already (train reads
  /// --resume's flags first); nullptr: it is opened here.
  Trainer(TrainConfig config, torch::Device device, bool threads_given,
          std::shared_ptr<const WeightsFile> opened = nullptr);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// The 0-based epoch to train next (after a resume, the interrupted one).
  int64_t start_epoch() const { return start_epoch_; }
  /// Trains from where the run stands to the end of `epoch`; on a signal
  /// mid-epoch it saves the position and returns with stopped_mid_epoch.
  EpochResult train_one_epoch(int64_t epoch);
  /// The validation data, every rank its shard, totals over all ranks.
  EvalResult evaluate();
  /// Logs the epoch, appends it to metrics.jsonl and writes the checkpoint.
  void end_epoch(int64_t epoch, const EpochResult& train, const EvalResult& val);
  /// Writes model.pth and the closing lines.
  void finish();

 private:
  void connect(bool threads_given);
  void start();  // the constructor's work after the output folder exists
  void open_weights();
  void open_data();
  void build_model();
  void restore();
  void make_loaders();
  // The model's state_dict on the CPU, contiguous: what every weights file holds.
  NamedTensors cpu_weights() const;
  // The run's state as a checkpoint records it, the weights and momentum copied to
  // the CPU (once: every file an epoch writes is made from the same copy).
  TrainCheckpoint checkpoint(int64_t completed_epoch, int64_t epoch_step) const;
  void write_checkpoint(const TrainCheckpoint& c, double next_lr, const std::string& path) const;
  // checkpoint() into OUT/checkpoint.pth; rank 0 only.
  void save_checkpoint(int64_t completed_epoch, int64_t epoch_step, double next_lr);
  // The signal caught since set-up (0: none); the one that stopped the run
  // (SIGTERM when it was another rank's).
  int caught_signal() const { return signals_ ? signals_->last() : 0; }
  int stop_signal() const;
  // A peer died or was cut off during `step` of `epoch`: rank 0 saves the last
  // completed step, and the error says how to resume.
  [[noreturn]] void peer_failed(const PeerFailure& e, int64_t epoch, int64_t step);
  // ". Once every host is back, restart every rank with --resume ..." when there is
  // a checkpoint to resume from.
  std::string resume_hint(bool saved_now) const;
  // The class names and the validation transform, written with every weights file.
  WeightsInfo weights_info() const;
  // How long the run will take, from a timed step that leaves no trace: "about 9m (...)".
  std::string estimate_duration();
  // The time left in the whole run, from this epoch's pace and the last evaluation's.
  std::string run_eta(int64_t epoch, int64_t step, const Progress& progress) const;
  // One batch of train_one_epoch: the step, with the loss and any rank's stop
  // request shared over the ranks (so that all agree on both).
  struct BatchOutcome {
    double loss = 0;       // this rank's
    double mean_loss = 0;  // over the ranks
    int64_t correct = 0;
    bool stop = false;
  };
  BatchOutcome train_batch(const data::Batch& batch, double lr, int64_t epoch, int64_t step);
  // Distributed: each rank draws its own dropout masks for the epoch.
  void seed_rank_dropout(int64_t epoch);
  // The bar, progress line and metrics record after `step` of `epoch`.
  void report_step(int64_t epoch, int64_t step, double mean_loss, double lr, const Progress& progress);
  // r's loss, images and correct summed over the ranks; whether any rank was signalled.
  bool sum_over_ranks(EpochResult& r, double& loss_sum, bool stop);

  TrainConfig config_;
  torch::Device device_;
  std::unique_ptr<Communicator> comm_;
  bool failed_peer_ = false;
  double best_top1_ = -1;               // of the epochs so far (model_best.pth)
  double last_eval_seconds_ = -1;       // the last evaluation's duration; -1 = none yet
  std::vector<std::string> made_dirs_;  // the --output folders this run created, outermost first
  bool lead_ = true;  // rank 0: writes checkpoints, metrics, logs
  std::string checkpoint_path_;
  std::shared_ptr<const WeightsFile> start_file_;  // --resume or --weights
  std::optional<TrainCheckpoint> resumed_;
  std::shared_ptr<data::Dataset> train_set_, val_set_;
  int64_t classes_ = 0;
  runtime::Precision precision_ = runtime::Precision::kFp32;
  bool channels_last_ = false;
  AlexNet model_{nullptr};
  std::unique_ptr<TrainStep> step_;
  std::unique_ptr<GradientReducer> reducer_;
  LrSchedule schedule_;
  int64_t start_epoch_ = 0;
  int64_t skip_steps_ = 0;  // batches of start_epoch_ already done (a mid-epoch resume)
  std::unique_ptr<data::Loader> train_loader_, val_loader_;
  int64_t steps_per_epoch_ = 0;
  std::optional<MetricsLog> metrics_;
  std::string metrics_path_;
  std::unique_ptr<runtime::SignalCatcher> signals_;  // SIGINT, SIGTERM once set up
  NamedTensors final_weights_;  // the last epoch's CPU copy, which finish() writes as model.pth
};

}  // namespace alexnet::engine
