#include "app/engine/distributed.h"

#include "app/engine/network.h"

#include <c10/util/Exception.h>
#include <spdlog/spdlog.h>
#include <torch/version.h>

#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

#ifdef ALEXNET_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef ALEXNET_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
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
[[noreturn]] void collective_failed(const char* what, int64_t rank, const std::string& host,
                                    const std::exception& e) {
  std::string m = e.what();
  const auto cut = m.find("\nException raised from");
  if (cut != std::string::npos) m.resize(cut);
  throw PeerFailure("distributed " + std::string(what) + " failed on rank " + std::to_string(rank) + " (host " +
                    host + "): another rank died, stopped, was cut off or timed out: " + m);
}

#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)

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
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  env.agent_store = agent != nullptr && std::string(agent) == "True";  // Python's str(True)
  if (env.agent_store) env.restart_count = env_int("TORCHELASTIC_RESTART_COUNT", 0, 0, 1 << 30);
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

#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)

namespace {

std::string strip_trace(std::string m) {
  const auto cut = m.find("\nException raised from");
  if (cut != std::string::npos) m.resize(cut);
  return m;
}

// Where this rank is and how the others reach it, as swapped through the store.
struct Peer {
  std::string host;     // gethostname()
  std::string address;  // what the process group binds and advertises
  std::string interface;
  std::string source;   // why that address: "the route to MASTER_ADDR", "GLOO_SOCKET_IFNAME", ...
  std::string error;    // set instead of the above when this rank cannot take part
};

// A rank that cannot take part publishes "!" and its error instead, so that the
// others stop at once with it rather than after the timeout.
std::string encode(const Peer& p) {
  if (!p.error.empty()) return "!" + p.error;
  return p.host + '\n' + p.address + '\n' + p.interface + '\n' + p.source;
}

Peer decode(const std::vector<uint8_t>& bytes) {
  std::string s(bytes.begin(), bytes.end());
  Peer p;
  if (!s.empty() && s[0] == '!') {
    p.error = s.substr(1);
    return p;
  }
  std::string* fields[] = {&p.host, &p.address, &p.interface, &p.source};
  size_t at = 0;
  for (std::string* f : fields) {
    const size_t nl = s.find('\n', at);
    *f = s.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
  return p;
}

// "10.0.0.2 (eth0)"
std::string describe(const Peer& p) { return p.address + (p.interface.empty() ? "" : " (" + p.interface + ")"); }

// Who we are, in every message: "rank 1 on host b".
std::string who(const DistEnv& env, const std::string& host) {
  return "rank " + std::to_string(env.rank) + " on host " + host;
}

// The address this rank's process group binds, and why. The variable, when set, wins.
Peer choose_endpoint(const DistEnv& env, const std::string& master_ip, const std::string& variable,
                     const std::string& host) {
  Peer me;
  me.host = host;
  if (const char* v = std::getenv(variable.c_str()); v != nullptr && *v != '\0') {
    std::string first = v;
    first = first.substr(0, first.find(','));  // Gloo takes a list; the first one is advertised
    try {
      const net::Endpoint e = net::interface_endpoint(first);
      me.address = e.address;
      me.interface = e.interface;
    } catch (const std::exception& e) {
      throw std::runtime_error("distributed: " + who(env, host) + ": " + variable + "=" + v + ": " + e.what() +
                               " (unset it to use the interface of the route to MASTER_ADDR, or name one "
                               "`ip -brief address` lists)");
    }
    me.source = variable;
  } else if (net::is_loopback(master_ip)) {
    me.address = "127.0.0.1";
    me.interface = "lo";
    me.source = "the loopback MASTER_ADDR";
  } else {
    try {
      const net::Endpoint e = net::route_to(master_ip);
      me.address = e.address;
      me.interface = e.interface;
    } catch (const std::exception& e) {
      throw std::runtime_error("distributed: " + who(env, host) + ": MASTER_ADDR " + env.master_addr + ": " +
                               e.what() + ". Is this host's interface up? Set MASTER_ADDR to an address of rank "
                               "0's host that this host can reach");
    }
    me.source = "the route to MASTER_ADDR";
  }
  return me;
}

// Waits until the store's port accepts a connection, or says why it never did.
// no_route: what to throw at once when the kernel has no route at all (this rank
// could not choose its address either, so waiting would not help).
void wait_for_store(const DistEnv& env, const std::string& master_ip, const std::string& host,
                    std::chrono::milliseconds timeout, const std::string& no_route) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = start + timeout;
  net::Probe last;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    last = net::probe_tcp(master_ip, env.master_port,
                          std::max(std::chrono::milliseconds(100), std::min(left, std::chrono::milliseconds(3000))));
    if (last.reach == net::Reach::kOk) return;
    if (last.reach == net::Reach::kUnreachable && !no_route.empty()) throw std::runtime_error(no_route);
    if (Clock::now() >= deadline) break;
    // Rank 0 may simply not be up yet: try again, a few times a second.
    if (last.reach != net::Reach::kTimedOut) std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  const std::string where = env.master_addr + (env.master_addr == master_ip ? "" : " = " + master_ip) + ":" +
                            std::to_string(env.master_port);
  const std::string seconds = std::to_string((timeout.count() + 999) / 1000) + " s";
  std::string why;
  switch (last.reach) {
    case net::Reach::kRefused:
      why = "the connection was refused for " + seconds +
            ": nothing listens there. Start rank 0 on that host (node 0 first), and give every host the same "
            "MASTER_ADDR and MASTER_PORT";
      break;
    case net::Reach::kTimedOut:
      why = "connections timed out for " + seconds + ": packets are dropped on the way, by a firewall or a cut link. Open TCP port " +
            std::to_string(env.master_port) +
            " (and the ports Gloo picks) on rank 0's host, or set MASTER_ADDR to an address of it that this "
            "host reaches";
      break;
    case net::Reach::kUnreachable:
      why = "no route (" + last.detail + ") for " + seconds +
            ": is this host's interface up? Set MASTER_ADDR to an address of rank 0's host that this host "
            "reaches";
      break;
    default:
      why = last.detail;
  }
  throw std::runtime_error("distributed: " + who(env, host) + " cannot reach the store at " + where +
                           " (MASTER_ADDR:MASTER_PORT): " + why);
}

// torchrun's store speaks the TCPStore protocol of its own PyTorch, and 1.x and 2.x
// do not understand each other (a 1.x client gets "Broken pipe" from a 2.x server;
// a 2.x client waits on a 1.x server until the timeout). Which torchrun started us
// shows in the variables only it sets: 2.x's TORCHELASTIC_SIGNALS_TO_HANDLE and
// TORCH_NCCL_ASYNC_ERROR_HANDLING, 1.x's NCCL_ASYNC_ERROR_HANDLING.
void check_agent_store(const DistEnv& env, const std::string& host) {
  if (!env.agent_store) return;
  const auto set = [](const char* name) { return std::getenv(name) != nullptr; };
  const bool agent2 = set("TORCHELASTIC_SIGNALS_TO_HANDLE") ||
                      (set("TORCH_NCCL_ASYNC_ERROR_HANDLING") && !set("NCCL_ASYNC_ERROR_HANDLING"));
  const bool agent1 = !agent2 && set("NCCL_ASYNC_ERROR_HANDLING") && !set("TORCH_NCCL_ASYNC_ERROR_HANDLING");
  const bool build2 = TORCH_VERSION_MAJOR >= 2;
  if ((agent2 && !build2) || (agent1 && build2))
    throw std::runtime_error(
        "distributed: " + who(env, host) + ": this torchrun is PyTorch " + (agent2 ? "2.x" : "1.x") +
        "'s, and its store at MASTER_ADDR:MASTER_PORT speaks another protocol than this build's LibTorch " +
        TORCH_VERSION + ". Start this binary with the torchrun of PyTorch " + (build2 ? "2.x" : "1.x") +
        (build2 ? " (pip install torch)" : " (Debian: python3-torch)") +
        ", or with scripts/launch.sh, which needs no Python");
}

// Swaps every rank's host and address through the store, then refuses a set-up
// that cannot connect: a peer advertising loopback while MASTER_ADDR is remote (so
// other hosts would dial themselves), or two hosts advertising one address.
std::vector<Peer> swap_peers(c10d::Store& store, const DistEnv& env, const Peer& me, bool master_remote,
                             const std::string& variable, bool serve) {
  const std::string mine = encode(me);
  store.set("alexnet/peer/" + std::to_string(env.rank), std::vector<uint8_t>(mine.begin(), mine.end()));
  std::vector<Peer> peers(static_cast<size_t>(env.world_size));
  for (int64_t r = 0; r < env.world_size; ++r) {
    try {
      peers[static_cast<size_t>(r)] = decode(store.get("alexnet/peer/" + std::to_string(r)));
    } catch (const std::exception& e) {
      throw std::runtime_error("distributed rendezvous at " + env.master_addr + ":" +
                               std::to_string(env.master_port) + " failed on " + who(env, me.host) + ": rank " +
                               std::to_string(r) + " did not arrive within " +
                               std::to_string(store.getTimeout().count() / 1000) +
                               " s (is it running, with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE?): " +
                               strip_trace(e.what()));
    }
  }
  // The rank that serves the store waits (briefly) until every rank has read the
  // others: if it stopped first, its store would go with it, and a slower rank
  // would see "Connection reset" instead of the reason.
  store.add("alexnet/peers_read", 1);
  if (serve) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (store.add("alexnet/peers_read", 0) < env.world_size && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!me.error.empty()) throw std::runtime_error(me.error);
  for (const Peer& p : peers)
    if (!p.error.empty())
      throw std::runtime_error("distributed: " + who(env, me.host) + " stops, as " +
                               (p.error.rfind("distributed: ", 0) == 0 ? p.error.substr(13) : p.error));
  for (int64_t r = 0; r < env.world_size; ++r) {
    const Peer& p = peers[static_cast<size_t>(r)];
    if (master_remote && net::is_loopback(p.address))
      throw std::runtime_error(
          "distributed: rank " + std::to_string(r) + " on host " + p.host + " advertises " + p.address +
          " (chosen by " + p.source + "), a loopback address, while MASTER_ADDR " + env.master_addr +
          " is remote: no other host could connect to it. On " + p.host + ", unset " + variable +
          " (the interface of the route to MASTER_ADDR is then used) or set it to the interface that reaches "
          "the other hosts");
    for (int64_t q = 0; q < r; ++q) {
      const Peer& o = peers[static_cast<size_t>(q)];
      if (o.address == p.address && o.host != p.host)
        throw std::runtime_error("distributed: ranks " + std::to_string(q) + " (host " + o.host + ") and " +
                                 std::to_string(r) + " (host " + p.host + ") both advertise " + p.address +
                                 ": hosts behind NAT or containers with private addresses cannot reach each "
                                 "other. Set " + variable + " on each host to an interface with its own address");
    }
  }
  return peers;
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
  const std::string host = net::host_name();
  std::string resolve_error;
  const std::optional<std::string> master_ip = net::resolve(env.master_addr, &resolve_error);
  if (!master_ip)
    throw std::runtime_error("distributed: " + who(env, host) + ": MASTER_ADDR '" + env.master_addr +
                             "' does not resolve (" + resolve_error +
                             "); set MASTER_ADDR to a name or address of rank 0's host that every host resolves");
  const bool master_remote = !net::is_loopback(*master_ip);
  const std::string variable = backend == "nccl" ? "NCCL_SOCKET_IFNAME" : "GLOO_SOCKET_IFNAME";
  Peer me;
  try {
    me = choose_endpoint(env, *master_ip, variable, host);
  } catch (const std::runtime_error& e) {
    me.host = host;
    me.error = e.what();  // told to the others through the store, then thrown
  }
  const bool serve = env.rank == 0 && !env.agent_store;
  if (serve && master_remote && me.error.empty() && me.source != variable && me.address != *master_ip)
    spdlog::warn("distributed: MASTER_ADDR {} is not an address of this host ({}): the store listens on all of "
                 "its addresses, but the other hosts will look for it at {}",
                 env.master_addr, host, env.master_addr);
  check_agent_store(env, host);
  if (!serve) {
    try {
      wait_for_store(env, *master_ip, host, timeout, me.error);
    } catch (const std::runtime_error&) {
      if (!me.error.empty()) throw std::runtime_error(me.error);  // this host's own cause first
      throw;
    }
  }

  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(env.master_port);
  store_options.isServer = serve;
  // torchrun's agent counts its own clients; only our own store waits for every rank.
  if (!env.agent_store) store_options.numWorkers = static_cast<std::size_t>(env.world_size);
  store_options.waitWorkers = !env.agent_store;
  store_options.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store;
  std::vector<Peer> peers;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(*master_ip, store_options);
    // A prefix per attempt: torchrun's store outlives a restart of the workers.
    store = c10::make_intrusive<c10d::PrefixStore>("alexnet/attempt_" + std::to_string(env.restart_count), store);
    peers = swap_peers(*store, env, me, master_remote, variable, serve);
  } catch (const std::exception& e) {  // c10's store errors are std::exception, not runtime_error
    const std::string m = strip_trace(e.what());
    if (!me.error.empty()) throw std::runtime_error(me.error);  // the cause, not the store's timeout
    if (m.rfind("distributed", 0) == 0) throw std::runtime_error(m);
    throw std::runtime_error("distributed rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
                             " failed on " + who(env, host) + " of " + std::to_string(env.world_size) + " within " +
                             std::to_string(timeout.count() / 1000) +
                             " s (a rank did not arrive, or the address or port is wrong or taken): " + m);
  }
  std::string table;
  for (size_t r = 0; r < peers.size(); ++r)
    table += (r ? ", " : "") + std::to_string(r) + " " + peers[r].host + " " + describe(peers[r]);
  spdlog::info("distributed: {} binds {}, chosen by {}; ranks: {}", who(env, host), describe(me), me.source, table);

  try {
#ifdef ALEXNET_WITH_GLOO
    if (backend == "gloo") {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      if (me.source == variable) {
        std::string list = std::getenv(variable.c_str());
        for (size_t at = 0; at <= list.size();) {
          const size_t comma = std::min(list.find(',', at), list.size());
          if (comma > at) options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(list.substr(at, comma - at)));
          at = comma + 1;
        }
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(me.address));
      }
      options->threads = 2;
      auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(
          store, static_cast<int>(env.rank), static_cast<int>(env.world_size), options);
      return std::make_unique<C10dCommunicator<c10d::ProcessGroupGloo>>(
          store, group, env.rank, env.world_size, backend, host);
    }
#endif
#ifdef ALEXNET_WITH_NCCL
    if (backend == "nccl") {
      // NCCL's bootstrap reads the variable itself: give it the interface chosen above.
      if (me.source != variable && !me.interface.empty()) ::setenv(variable.c_str(), me.interface.c_str(), 0);
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          store, static_cast<int>(env.rank), static_cast<int>(env.world_size), options);
      return std::make_unique<C10dCommunicator<c10d::ProcessGroupNCCL>>(
          store, group, env.rank, env.world_size, backend, host);
    }
#endif
  } catch (const std::exception& e) {
    throw std::runtime_error("distributed: " + who(env, host) + " could not connect to the other ranks within " +
                             std::to_string(timeout.count() / 1000) + " s: " + strip_trace(e.what()) +
                             ". Every host must reach the others' addresses (" + table +
                             ") on any TCP port; set " + variable + " on a host to choose another interface");
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

int64_t GradientReducer::bytes_per_step() const {
  int64_t bytes = 0;
  for (const auto& b : buckets_) bytes += b.flat.numel() * 4;
  return bytes;
}

void GradientReducer::finish() {
  TORCH_CHECK(active_, "GradientReducer::finish without prepare");
  active_ = false;
  TORCH_CHECK(next_launch_ == buckets_.size(), "distributed: only ", next_launch_, " of ",
              buckets_.size(), " gradient buckets were ready after backward()");
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / static_cast<double>(comm_.world_size());
  for (auto& bucket : buckets_) {
    const auto start = std::chrono::steady_clock::now();
    bucket.work->wait();
    waited_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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
  ++steps_;
}

}  // namespace alexnet::engine
