#include "app/engine/distributed.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>

#ifdef ALEXNET_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef ALEXNET_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace alexnet::engine {

namespace {

int64_t env_int(const char* name, std::optional<int64_t> fallback, int64_t lo, int64_t hi) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    TORCH_CHECK(fallback.has_value(), "--distributed: ", name,
                " is not set (launch with torchrun, scripts/launch.sh, or set RANK, WORLD_SIZE, "
                "MASTER_ADDR and MASTER_PORT)");
    return *fallback;
  }
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v, &end, 10);
  TORCH_CHECK(errno == 0 && end != v && *end == '\0' && x >= lo && x <= hi, "--distributed: ", name,
              "='", v, "' is not an integer in [", lo, ", ", hi, "]");
  return x;
}

// The failure text of a collective: what was being done, and the likely cause.
[[noreturn]] void collective_failed(const char* what, int64_t rank, const std::exception& e) {
  std::string m = e.what();
  const auto cut = m.find("\nException raised from");
  if (cut != std::string::npos) m.resize(cut);
  throw std::runtime_error("distributed " + std::string(what) + " failed on rank " +
                           std::to_string(rank) + " (another rank died, stopped or timed out): " + m);
}

#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)

template <class Group>
class C10dCommunicator final : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<Group> group,
                   int64_t rank, int64_t world_size, std::string backend)
      : Communicator(rank, world_size, std::move(backend)),
        store_(std::move(store)),
        group_(std::move(group)) {}

  class Work final : public Pending {
   public:
    Work(c10::intrusive_ptr<c10d::Work> work, const char* what, int64_t rank)
        : work_(std::move(work)), what_(what), rank_(rank) {}
    void wait() override {
      try {
        work_->wait();
      } catch (const std::exception& e) {
        collective_failed(what_, rank_, e);
      }
    }

   private:
    c10::intrusive_ptr<c10d::Work> work_;
    const char* what_;
    int64_t rank_;
  };

  std::unique_ptr<Pending> all_reduce_sum_async(torch::Tensor& t, const char* what) override {
    std::vector<torch::Tensor> tensors{t};
    try {
      return std::make_unique<Work>(group_->allreduce(tensors), what, rank());
    } catch (const std::exception& e) {
      collective_failed(what, rank(), e);
    }
  }

  void broadcast(std::vector<torch::Tensor>& tensors, const char* what) override {
    c10d::BroadcastOptions options;
    options.rootRank = 0;
    for (auto& t : tensors) {
      std::vector<torch::Tensor> one{t};
      try {
        group_->broadcast(one, options)->wait();
      } catch (const std::exception& e) {
        collective_failed(what, rank(), e);
      }
    }
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<Group> group_;
};

#endif

}  // namespace

DistEnv read_dist_env() {
  DistEnv env;
  env.world_size = env_int("WORLD_SIZE", std::nullopt, 1, 1 << 20);
  env.rank = env_int("RANK", std::nullopt, 0, env.world_size - 1);
  env.local_rank = env_int("LOCAL_RANK", env.rank, 0, env.world_size - 1);
  env.local_world_size = env_int("LOCAL_WORLD_SIZE", 1, 1, env.world_size);
  if (std::getenv("LOCAL_WORLD_SIZE") == nullptr && std::getenv("LOCAL_RANK") == nullptr)
    env.local_world_size = 1;
  env.master_port = static_cast<int>(env_int("MASTER_PORT", std::nullopt, 1, 65535));
  const char* addr = std::getenv("MASTER_ADDR");
  TORCH_CHECK(addr != nullptr && *addr != '\0',
              "--distributed: MASTER_ADDR is not set (launch with torchrun, scripts/launch.sh, or "
              "set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)");
  env.master_addr = addr;
  return env;
}

bool have_gloo() {
#ifdef ALEXNET_WITH_GLOO
  return true;
#else
  return false;
#endif
}

bool have_nccl() {
#ifdef ALEXNET_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> Communicator::create(const DistEnv& env, const std::string& backend,
                                                   std::chrono::milliseconds timeout) {
  TORCH_CHECK(backend == "gloo" || backend == "nccl", "--dist-backend must be gloo or nccl, got '",
              backend, "'");
  TORCH_CHECK(backend != "gloo" || have_gloo(),
              "--dist-backend gloo: this build has no Gloo (install libgloo-dev and rebuild)");
  TORCH_CHECK(backend != "nccl" || have_nccl(),
              "--dist-backend nccl: this build has no NCCL (build against a CUDA LibTorch)");
#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(env.master_port);
  store_options.isServer = env.rank == 0;
  store_options.numWorkers = static_cast<std::size_t>(env.world_size);
  store_options.waitWorkers = true;
  store_options.timeout = timeout;
  // The store, then the process group's full mesh: both wait for every rank.
  try {
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
#ifdef ALEXNET_WITH_GLOO
    if (backend == "gloo") {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      if (const char* iface = std::getenv("GLOO_SOCKET_IFNAME"); iface && *iface) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
      } else if (env.master_addr == "localhost" || env.master_addr.rfind("127.", 0) == 0) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      options->threads = 2;
      auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(
          store, static_cast<int>(env.rank), static_cast<int>(env.world_size), options);
      return std::make_unique<C10dCommunicator<c10d::ProcessGroupGloo>>(
          store, group, env.rank, env.world_size, backend);
    }
#endif
#ifdef ALEXNET_WITH_NCCL
    if (backend == "nccl") {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          store, static_cast<int>(env.rank), static_cast<int>(env.world_size), options);
      return std::make_unique<C10dCommunicator<c10d::ProcessGroupNCCL>>(
          store, group, env.rank, env.world_size, backend);
    }
#endif
  } catch (const std::exception& e) {
    std::string m = e.what();
    const auto cut = m.find("\nException raised from");
    if (cut != std::string::npos) m.resize(cut);
    throw std::runtime_error("distributed rendezvous at " + env.master_addr + ":" +
                             std::to_string(env.master_port) + " failed on rank " +
                             std::to_string(env.rank) + " of " + std::to_string(env.world_size) +
                             " within " + std::to_string(timeout.count() / 1000) +
                             " s (a rank did not arrive, or the address or port is wrong or taken): " + m);
  }
#endif
  (void)env;
  (void)timeout;
  TORCH_CHECK(false, "--distributed: no process group backend '", backend, "' in this build");
}

void Communicator::all_reduce_sum(torch::Tensor& t, const char* what) {
  all_reduce_sum_async(t, what)->wait();
}

void broadcast_module(Communicator& comm, torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  for (auto& p : module.parameters()) tensors.push_back(p);
  for (auto& b : module.buffers()) tensors.push_back(b);
  comm.broadcast(tensors, "broadcast of rank 0's weights");
}

GradientReducer::GradientReducer(Communicator& comm, std::vector<torch::Tensor> params,
                                 int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)), where_(params_.size()) {
  // Reverse order: the classifier's gradients come first out of backward().
  Bucket current;
  int64_t bytes = 0;
  auto close = [&] {
    if (current.params.empty()) return;
    const int64_t n = current.offsets.back() + params_[current.params.back()].numel();
    current.flat = torch::zeros({n}, params_[current.params.front()].options().dtype(torch::kFloat32));
    buckets_.push_back(std::move(current));
    current = Bucket{};
    bytes = 0;
  };
  for (size_t i = params_.size(); i-- > 0;) {
    const auto& p = params_[i];
    TORCH_CHECK(p.scalar_type() == torch::kFloat32, "distributed: parameter ", i, " is ",
                p.scalar_type(), ", expected float32 master weights");
    const int64_t offset = current.params.empty()
                               ? 0
                               : current.offsets.back() + params_[current.params.back()].numel();
    where_[i] = {buckets_.size(), current.params.size()};
    current.params.push_back(i);
    current.offsets.push_back(offset);
    bytes += p.numel() * 4;
    if (bytes >= bucket_bytes) close();
  }
  close();
  self_ = std::make_shared<GradientReducer*>(this);
  std::weak_ptr<GradientReducer*> self = self_;
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].register_hook([self, i](torch::Tensor grad) {
      if (auto reducer = self.lock()) (*reducer)->on_grad(i, grad);
    });
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::prepare() {
  for (auto& b : buckets_) {
    b.pending = b.params.size();
    b.work.reset();
  }
  next_launch_ = 0;
  active_ = true;
}

void GradientReducer::on_grad(size_t param, const torch::Tensor& grad) {
  if (!active_) return;
  const auto [b, slot] = where_[param];
  Bucket& bucket = buckets_[b];
  TORCH_CHECK(bucket.pending > 0, "distributed: parameter ", param,
              " received two gradients in one step");
  bucket.flat.narrow(0, bucket.offsets[slot], grad.numel()).view(grad.sizes()).copy_(grad);
  --bucket.pending;
  launch_ready();
}

void GradientReducer::launch_ready() {
  // In bucket order only, so every rank issues the same collectives in the same order.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& bucket = buckets_[next_launch_];
    bucket.work = comm_.all_reduce_sum_async(bucket.flat, "gradient all-reduce");
    ++next_launch_;
  }
}

void GradientReducer::finish() {
  TORCH_CHECK(active_, "GradientReducer::finish without prepare");
  active_ = false;
  TORCH_CHECK(next_launch_ == buckets_.size(), "distributed: only ", next_launch_, " of ",
              buckets_.size(), " gradient buckets were ready after backward()");
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / static_cast<double>(comm_.world_size());
  for (auto& bucket : buckets_) {
    bucket.work->wait();
    bucket.work.reset();
    bucket.flat.mul_(scale);
    for (size_t s = 0; s < bucket.params.size(); ++s) {
      auto& p = params_[bucket.params[s]];
      auto averaged = bucket.flat.narrow(0, bucket.offsets[s], p.numel()).view(p.sizes());
      if (p.grad().defined()) {
        p.mutable_grad().copy_(averaged);
      } else {
        p.mutable_grad() = averaged.clone(p.suggest_memory_format());
      }
    }
  }
}

}  // namespace alexnet::engine
