#include "app/engine/checkpoint.h"

#include "model/pth/checkpoint_io.h"

#include <cmath>

namespace alexnet::engine {

namespace {

using pth::Value;

Value str(const std::string& s) { return Value::string(s); }

Value float_list(double v) { return Value::list({Value::floating(v)}); }

// The optimizer's state_dict as torch.optim.SGD writes it.
Value optimizer_state(const TrainCheckpoint& c, const SgdOptions& sgd, const LrSchedule& schedule,
                      double lr) {
  Value state = Value::dict();
  for (size_t i = 0; i < c.momentum.size(); ++i) {
    if (!c.momentum[i].defined()) continue;
    Value entry = Value::dict();
    entry.set(str("momentum_buffer"), tensor_value(c.momentum[i]));
    state.set(Value::integer(static_cast<int64_t>(i)), std::move(entry));
  }
  Value group = Value::dict();
  group.set(str("lr"), Value::floating(lr));
  group.set(str("momentum"), Value::floating(sgd.momentum()));
  group.set(str("dampening"), Value::integer(0));
  group.set(str("weight_decay"), Value::floating(sgd.weight_decay()));
  group.set(str("nesterov"), Value::boolean(sgd.nesterov()));
  group.set(str("maximize"), Value::boolean(false));
  group.set(str("foreach"), Value::none());
  group.set(str("differentiable"), Value::boolean(false));
  group.set(str("initial_lr"), Value::floating(schedule.base_lr));
  std::vector<Value> params;
  for (size_t i = 0; i < c.model.size(); ++i) params.push_back(Value::integer(static_cast<int64_t>(i)));
  group.set(str("params"), Value::list(std::move(params)));
  Value root = Value::dict();
  root.set(str("state"), std::move(state));
  root.set(str("param_groups"), Value::list({std::move(group)}));
  return root;
}

// Fields every LRScheduler state_dict has; last_epoch counts its steps.
void common_scheduler_fields(Value& s, int64_t last_epoch, double base_lr, double lr) {
  s.set(str("base_lrs"), float_list(base_lr));
  s.set(str("last_epoch"), Value::integer(last_epoch));
  s.set(str("_step_count"), Value::integer(last_epoch + 1));
  s.set(str("verbose"), Value::boolean(false));
  s.set(str("_get_lr_called_within_step"), Value::boolean(false));
  s.set(str("_last_lr"), float_list(lr));
}

// The scheduler's state_dict as torchvision's train.py builds it: StepLR,
// CosineAnnealingLR or ConstantLR(factor=1), wrapped in SequentialLR after a
// LinearLR/ConstantLR warmup. `steps` = epochs completed (scheduler.step() calls).
Value scheduler_state(int64_t steps, const LrSchedule& schedule, double lr) {
  // Per-step schedules are written as their per-epoch counterparts (train.py
  // steps per epoch), with the current lr; a fractional warmup rounds up.
  const auto warmup = static_cast<int64_t>(std::ceil(schedule.warmup_epochs));
  Value main = Value::dict();
  if (schedule.kind == LrScheduler::kStep) {
    main.set(str("step_size"), Value::integer(schedule.step_size));
    main.set(str("gamma"), Value::floating(schedule.gamma));
  } else if (schedule.kind == LrScheduler::kCosine) {
    main.set(str("T_max"), Value::integer(schedule.epochs - warmup));
    main.set(str("eta_min"), Value::floating(0.0));
  } else {
    main.set(str("factor"), Value::floating(1.0));
    main.set(str("total_iters"), Value::integer(0));
  }
  if (warmup == 0) {
    common_scheduler_fields(main, steps, schedule.base_lr, lr);
    return main;
  }
  // SequentialLR steps the warmup until the milestone, then the main scheduler from 0.
  common_scheduler_fields(main, std::max<int64_t>(0, steps - warmup), schedule.base_lr, lr);
  Value warm = Value::dict();
  if (schedule.warmup_method == WarmupMethod::kLinear) {
    warm.set(str("start_factor"), Value::floating(schedule.warmup_decay));
    warm.set(str("end_factor"), Value::floating(1.0));
  } else {
    warm.set(str("factor"), Value::floating(schedule.warmup_decay));
  }
  warm.set(str("total_iters"), Value::integer(warmup));
  common_scheduler_fields(warm, std::min(steps, warmup - 1), schedule.base_lr, lr);
  Value seq = Value::dict();
  seq.set(str("_milestones"), Value::list({Value::integer(warmup)}));
  seq.set(str("last_epoch"), Value::integer(steps));
  seq.set(str("_last_lr"), float_list(lr));
  seq.set(str("_schedulers"), Value::list({std::move(warm), std::move(main)}));
  return seq;
}

}  // namespace

void save_train_checkpoint(const std::string& path, const TrainCheckpoint& c,
                           const SgdOptions& sgd, const LrSchedule& schedule, double lr) {
  Value root = Value::dict();
  root.set(str("model"), state_dict_value(c.model, c.info));
  root.set(str("optimizer"), optimizer_state(c, sgd, schedule, lr));
  root.set(str("lr_scheduler"), scheduler_state(c.epoch + 1, schedule, lr));
  root.set(str("epoch"), Value::integer(c.epoch));
  root.set(str("args"), c.args.is_none() ? Value::dict() : c.args);
  // Ours, beyond train.py's keys: exact resumption inside an epoch.
  root.set(str("epoch_step"), Value::integer(c.epoch_step));
  if (c.best_top1 >= 0) root.set(str("best_top1"), Value::floating(c.best_top1));
  if (c.rng_state.defined()) root.set(str("rng_state"), tensor_value(c.rng_state));
  if (c.cuda_rng_state.defined()) root.set(str("cuda_rng_state"), tensor_value(c.cuda_rng_state));
  pth::write_checkpoint(path, root);
}

TrainCheckpoint read_train_state(const WeightsFile& file) {
  const std::string& path = file.path();
  TORCH_CHECK(file.format() != WeightFormat::kTorchScript, path,
              ": a TorchScript archive holds weights only; resume needs a training checkpoint "
              "(use --weights to start from it)");
  const Value& root = file.root();
  TORCH_CHECK(root.is_dict() && root.find("model") && root.find("epoch"), path,
              ": not a training checkpoint (no \"model\" and \"epoch\" keys); to start from "
              "these weights use --weights");
  TrainCheckpoint c;
  const Value* epoch = root.find("epoch");
  TORCH_CHECK(epoch->is_int(), path, ": \"epoch\" is ", epoch->describe(), ", expected an int");
  c.epoch = epoch->as_int();
  if (const Value* s = root.find("epoch_step"); s && s->is_int()) c.epoch_step = s->as_int();
  if (const Value* b = root.find("best_top1"); b && (b->kind() == Value::Kind::kFloat || b->is_int()))
    c.best_top1 = b->as_float();
  if (const Value* r = root.find("rng_state"); r && r->is_tensor())
    c.rng_state = to_tensor(r->as_tensor()).clone();
  if (const Value* r = root.find("cuda_rng_state"); r && r->is_tensor())
    c.cuda_rng_state = to_tensor(r->as_tensor()).clone();
  if (const Value* a = root.find("args")) c.args = *a;

  const size_t entries = file.entries().size();
  c.momentum.assign(entries, torch::Tensor());
  const Value* optimizer = root.find("optimizer");
  const Value* state = optimizer && optimizer->is_dict() ? optimizer->find("state") : nullptr;
  if (state && state->is_dict()) {
    for (const auto& [key, entry] : state->entries()) {
      TORCH_CHECK(key.is_int() && key.as_int() >= 0 &&
                      key.as_int() < static_cast<int64_t>(entries),
                  path, ": optimizer state for parameter ", key.describe(), " of ", entries);
      const Value* buf = entry.find("momentum_buffer");
      if (buf && buf->is_tensor()) c.momentum[key.as_int()] = to_tensor(buf->as_tensor()).clone();
    }
  }
  return c;
}

}  // namespace alexnet::engine
