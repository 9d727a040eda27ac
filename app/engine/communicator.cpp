// The c10d wrapper: Communicator::create connects a Gloo or NCCL process group
// after the rendezvous (rendezvous.h), and every collective it runs turns a
// failure into a PeerFailure that says what was being done and the likely cause.
#include "app/engine/distributed.h"

#include "app/engine/rendezvous.h"
#include "app/runtime/errors.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#ifdef ALEXNET_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef ALEXNET_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace alexnet::engine {

#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)

namespace {

// The failure text of a collective: what was being done, and the likely cause.
[[noreturn]] void collective_failed(const char* what, int64_t rank, const std::string& host,
                                    const std::exception& e) {
  throw PeerFailure("distributed " + std::string(what) + " failed on rank " + std::to_string(rank) + " (host " +
                    host + "): another rank died, stopped, was cut off or timed out: " +
                    runtime::error_message(e));
}

template <class Group>
class C10dCommunicator final : public Communicator {
 public:
  C10dCommunicator(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<Group> group,
                   int64_t rank, int64_t world_size, std::string backend, std::string host)
      : Communicator(rank, world_size, std::move(backend), std::move(host)),
        store_(std::move(store)),
        group_(std::move(group)) {}

  class Work final : public Pending {
   public:
    Work(c10::intrusive_ptr<c10d::Work> work, const char* what, int64_t rank, std::string host)
        : work_(std::move(work)), what_(what), rank_(rank), host_(std::move(host)) {}
    void wait() override {
      try {
        work_->wait();
      } catch (const std::exception& e) {
        collective_failed(what_, rank_, host_, e);
      }
    }

   private:
    c10::intrusive_ptr<c10d::Work> work_;
    const char* what_;
    int64_t rank_;
    std::string host_;
  };

  std::unique_ptr<Pending> all_reduce_sum_async(torch::Tensor& t, const char* what) override {
    std::vector<torch::Tensor> tensors{t};
    try {
      return std::make_unique<Work>(group_->allreduce(tensors), what, rank(), host());
    } catch (const std::exception& e) {
      collective_failed(what, rank(), host(), e);
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
        collective_failed(what, rank(), host(), e);
      }
    }
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<Group> group_;
};

#ifdef ALEXNET_WITH_GLOO
std::unique_ptr<Communicator> connect_gloo(const DistEnv& env, std::chrono::milliseconds timeout,
                                           const Rendezvous& rv) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (rv.me.source == rv.variable) {  // every interface the variable lists, as Gloo reads it
    const std::string list = std::getenv(rv.variable.c_str());
    for (size_t at = 0; at <= list.size();) {
      const size_t comma = std::min(list.find(',', at), list.size());
      if (comma > at)
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(list.substr(at, comma - at)));
      at = comma + 1;
    }
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(rv.me.address));
  }
  options->threads = 2;
  auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(rv.store, static_cast<int>(env.rank),
                                                           static_cast<int>(env.world_size), options);
  return std::make_unique<C10dCommunicator<c10d::ProcessGroupGloo>>(rv.store, group, env.rank, env.world_size,
                                                                    "gloo", rv.host);
}
#endif

#ifdef ALEXNET_WITH_NCCL
std::unique_ptr<Communicator> connect_nccl(const DistEnv& env, std::chrono::milliseconds timeout,
                                           const Rendezvous& rv) {
  // NCCL's bootstrap reads the variable itself: give it the interface chosen above.
  if (rv.me.source != rv.variable && !rv.me.interface.empty())
    ::setenv(rv.variable.c_str(), rv.me.interface.c_str(), 0);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(rv.store, static_cast<int>(env.rank),
                                                           static_cast<int>(env.world_size), options);
  return std::make_unique<C10dCommunicator<c10d::ProcessGroupNCCL>>(rv.store, group, env.rank, env.world_size,
                                                                    "nccl", rv.host);
}
#endif

// The process group of `backend` over the rendezvous' store; nullptr when this
// build has no such backend.
std::unique_ptr<Communicator> connect_group(const DistEnv& env, const std::string& backend,
                                            std::chrono::milliseconds timeout, const Rendezvous& rv) {
#ifdef ALEXNET_WITH_GLOO
  if (backend == "gloo") return connect_gloo(env, timeout, rv);
#endif
#ifdef ALEXNET_WITH_NCCL
  if (backend == "nccl") return connect_nccl(env, timeout, rv);
#endif
  (void)env;
  (void)backend;
  (void)timeout;
  (void)rv;
  return nullptr;
}

}  // namespace

#endif

std::unique_ptr<Communicator> Communicator::create(const DistEnv& env, const std::string& backend,
                                                   std::chrono::milliseconds timeout) {
  TORCH_CHECK(backend == "gloo" || backend == "nccl", "--dist-backend must be gloo or nccl, got '",
              backend, "'");
  TORCH_CHECK(backend != "gloo" || have_gloo(),
              "--dist-backend gloo: this build has no Gloo (install libgloo-dev and rebuild)");
  TORCH_CHECK(backend != "nccl" || have_nccl(),
              "--dist-backend nccl: this build has no NCCL (build against a CUDA LibTorch)");
#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)
  const Rendezvous rv = rendezvous(env, backend, timeout);
  const std::string table = describe(rv.peers);
  spdlog::info("distributed: {} binds {}, chosen by {}; ranks: {}", who(env, rv.host), describe(rv.me),
               rv.me.source, table);
  std::unique_ptr<Communicator> comm;
  try {
    comm = connect_group(env, backend, timeout, rv);
  } catch (const std::exception& e) {
    throw std::runtime_error("distributed: " + who(env, rv.host) + " could not connect to the other ranks within " +
                             std::to_string(timeout.count() / 1000) + " s: " + runtime::error_message(e) +
                             ". Every host must reach the others' addresses (" + table +
                             ") on any TCP port; set " + rv.variable + " on a host to choose another interface");
  }
  if (comm) return comm;
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

}  // namespace alexnet::engine
