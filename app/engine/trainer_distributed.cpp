// A distributed run's start and its end when a peer fails: joining the ranks
// (logging, device, threads and backend per rank, then the rendezvous), and the
// error that says what was saved and how to go on.
#include "app/engine/trainer.h"

#include "app/runtime/compute.h"
#include "app/runtime/machine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

namespace alexnet::engine {

void Trainer::connect(bool threads_given) {
  const DistEnv env = read_dist_env();
  spdlog::set_pattern("[%H:%M:%S] [rank " + std::to_string(env.rank) + "] %v");
  if (env.rank != 0) spdlog::set_level(spdlog::level::warn);  // rank 0 alone logs
  if (device_.is_cuda()) {
    TORCH_CHECK(env.local_rank < static_cast<int64_t>(torch::cuda::device_count()),
                "--distributed: LOCAL_RANK ", env.local_rank, " but only ",
                torch::cuda::device_count(), " CUDA devices");
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  }
  if (!threads_given)  // share the cores among this machine's processes
    runtime::configure_threads(std::max(1, runtime::available_cpus() / static_cast<int>(env.local_world_size)));
  const DistBackend backend = config_.dist_backend != DistBackend::kAuto ? config_.dist_backend
                              : device_.is_cuda()                       ? DistBackend::kNccl
                                                                        : DistBackend::kGloo;
  TORCH_CHECK(backend != DistBackend::kNccl || device_.is_cuda(), "--dist-backend nccl needs --device cuda");
  TORCH_CHECK(backend != DistBackend::kGloo || !device_.is_cuda(),
              "--dist-backend gloo: this build averages CPU tensors only; use nccl with --device cuda");
  spdlog::info("distributed: {} processes, {} backend, rendezvous {}:{}, timeout {} s, {} threads each",
               env.world_size, name_of(kDistBackends, backend), env.master_addr, env.master_port, config_.dist_timeout,
               torch::get_num_threads());
  comm_ = Communicator::create(env, name_of(kDistBackends, backend), std::chrono::seconds(config_.dist_timeout));
}

void Trainer::peer_failed(const PeerFailure& e, int64_t epoch, int64_t step) {
  // Every rank finished steps up to `step` (a rank only passes an all-reduce once all
  // have sent), and the failed step changed no weight: the optimiser runs after the
  // gradients' all-reduce. Rank 0 saves that position, as on a signal.
  std::string next;
  if (step > skip_steps_) {
    save_checkpoint(epoch - 1, step, schedule_.lr_at(epoch, step, steps_per_epoch_));
    next = lead_ ? "; wrote " + checkpoint_path_ + " at epoch " + std::to_string(epoch + 1) + " step " +
                       std::to_string(step)
                 : "; rank 0 writes " + checkpoint_path_ + " at epoch " + std::to_string(epoch + 1) + " step " +
                       std::to_string(step) + " if it is still running";
  }
  failed_peer_ = true;
  throw PeerFailure(std::string(e.what()) + next + resume_hint(step > skip_steps_));
}

std::string Trainer::resume_hint(bool saved_now) const {
  if (saved_now || std::filesystem::exists(checkpoint_path_) || !config_.resume.empty())
    return ". Once every host is back, restart every rank with --resume " + checkpoint_path_;
  return ". No checkpoint was written yet: once every host is back, start again";
}

}  // namespace alexnet::engine
