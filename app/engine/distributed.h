// Data-parallel training on PyTorch's c10d: a TCPStore rendezvous from torchrun's
// environment, ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA), and a gradient
// reducer with DistributedDataParallel's semantics (bucketed all-reduce of the
// gradients, launched from autograd hooks while the backward pass runs, averaged
// over the ranks).
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace alexnet::engine {

/// What torchrun (or scripts/launch.sh, or a scheduler) puts in the environment.
struct DistEnv {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // torchrun's static rendezvous (its default with --master_addr) serves the store
  // itself at MASTER_ADDR:MASTER_PORT; every rank is then a client, under a prefix
  // per restart (TORCHELASTIC_USE_AGENT_STORE=True, TORCHELASTIC_RESTART_COUNT).
  bool agent_store = false;
  int64_t restart_count = 0;
};

/// Reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (required) and LOCAL_RANK,
/// LOCAL_WORLD_SIZE, TORCHELASTIC_* (optional). A missing or malformed variable is an
/// error naming it.
DistEnv read_dist_env();

/// A collective that failed because another rank died, stopped, was cut off or
/// timed out. The ranks that remain hold the weights of the last completed step.
class PeerFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// True when this build has the Gloo (CPU) / NCCL (CUDA) process groups.
bool have_gloo();
bool have_nccl();

/// One process group. Every collective is collective: all ranks call the same
/// ones in the same order. Each waits at most the timeout given at creation and
/// throws (naming the operation) when a peer died or never came.
class Communicator {
 public:
  /// Rendezvous through a TCPStore on MASTER_ADDR:MASTER_PORT (rank 0 serves it,
  /// or torchrun's agent does), then connects the process group. backend: "gloo" or
  /// "nccl". Each rank binds the address that its routing table uses to reach
  /// MASTER_ADDR unless GLOO_SOCKET_IFNAME (NCCL_SOCKET_IFNAME) names an interface.
  /// Before connecting, the ranks swap their host names and addresses through the
  /// store, so that a rank no other host could reach (a loopback address while
  /// MASTER_ADDR is remote) fails every rank at once, naming it. An unreachable
  /// store fails with its cause: a name that does not resolve, a refused port, no
  /// route, or a timeout.
  static std::unique_ptr<Communicator> create(const DistEnv& env, const std::string& backend,
                                              std::chrono::milliseconds timeout);
  virtual ~Communicator() = default;

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  const std::string& backend() const { return backend_; }
  const std::string& host() const { return host_; }

  /// In-place sum over the ranks; returns when done.
  void all_reduce_sum(torch::Tensor& t, const char* what);
  /// Starts an in-place sum; wait() on the handle.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  virtual std::unique_ptr<Pending> all_reduce_sum_async(torch::Tensor& t, const char* what) = 0;
  /// Rank 0's values into every rank's tensors (in place).
  virtual void broadcast(std::vector<torch::Tensor>& tensors, const char* what) = 0;

 protected:
  Communicator(int64_t rank, int64_t world_size, std::string backend, std::string host)
      : rank_(rank), world_size_(world_size), backend_(std::move(backend)), host_(std::move(host)) {}

 private:
  int64_t rank_, world_size_;
  std::string backend_, host_;
};

/// Rank 0's parameters (and buffers) into every rank, as DDP does at construction.
void broadcast_module(Communicator& comm, torch::nn::Module& module);

/// Averages the gradients of `params` over the ranks after each backward pass.
/// Parameters are grouped into buckets of about bucket_bytes in reverse order
/// (the order autograd produces their gradients); a bucket's all-reduce starts
/// from an autograd hook as soon as its last gradient is ready, in bucket order,
/// so communication overlaps the rest of the backward pass.
class GradientReducer {
 public:
  GradientReducer(Communicator& comm, std::vector<torch::Tensor> params,
                  int64_t bucket_bytes = 25 << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Call before backward().
  void prepare();
  /// Call after backward(): waits for every bucket, averages it in place and makes
  /// each parameter's .grad a view of its part (valid until the next prepare()).
  void finish();
  size_t num_buckets() const { return buckets_.size(); }
  /// Bytes all-reduced per step: every gradient in fp32.
  int64_t bytes_per_step() const;
  /// Steps finished, and the seconds finish() spent waiting on the all-reduce after
  /// backward() returned, summed over them: the communication backward did not hide.
  int64_t steps() const { return steps_; }
  double waited_seconds() const { return waited_; }

 private:
  struct Bucket {
    std::vector<size_t> params;    // indices into params_
    std::vector<int64_t> offsets;  // element offset of each in flat
    torch::Tensor flat;            // fp32 contiguous buffer
    std::vector<torch::Tensor> views;  // per slot: its part of flat, shaped and strided as the parameter
    size_t pending = 0;            // gradients still to arrive this step
    std::unique_ptr<Communicator::Pending> work;
  };
  void on_grad(size_t param, const torch::Tensor& grad);
  void launch_ready();

  Communicator& comm_;
  std::vector<torch::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<size_t, size_t>> where_;  // param -> (bucket, slot)
  size_t next_launch_ = 0;
  bool active_ = false;
  int64_t steps_ = 0;
  double waited_ = 0;
  // Hooks hold a weak reference: once the reducer is gone they do nothing.
  std::shared_ptr<GradientReducer*> self_;
};

}  // namespace alexnet::engine
