// The rendezvous before a process group connects, and why one fails: see rendezvous.h.
#include "app/engine/rendezvous.h"

#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)

#include "app/engine/network.h"
#include "app/runtime/errors.h"

#include <spdlog/spdlog.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/version.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <thread>

namespace alexnet::engine {

namespace {

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
                               runtime::error_message(e));
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


// The store every rank meets at, under a prefix per attempt: torchrun's store
// outlives a restart of the workers. `serve`: this rank serves it (rank 0 unless
// torchrun's agent does).
c10::intrusive_ptr<c10d::Store> open_store(const DistEnv& env, const std::string& master_ip, bool serve,
                                           std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<std::uint16_t>(env.master_port);
  options.isServer = serve;
  // torchrun's agent counts its own clients; only our own store waits for every rank.
  if (!env.agent_store) options.numWorkers = static_cast<std::size_t>(env.world_size);
  options.waitWorkers = !env.agent_store;
  options.timeout = timeout;
  c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(master_ip, options);
  return c10::make_intrusive<c10d::PrefixStore>("alexnet/attempt_" + std::to_string(env.restart_count), store);
}

}  // namespace

Rendezvous rendezvous(const DistEnv& env, const std::string& backend, std::chrono::milliseconds timeout) {
  Rendezvous rv;
  rv.host = net::host_name();
  rv.variable = backend == "nccl" ? "NCCL_SOCKET_IFNAME" : "GLOO_SOCKET_IFNAME";
  const std::string& host = rv.host;
  std::string resolve_error;
  const std::optional<std::string> master_ip = net::resolve(env.master_addr, &resolve_error);
  if (!master_ip)
    throw std::runtime_error("distributed: " + who(env, host) + ": MASTER_ADDR '" + env.master_addr +
                             "' does not resolve (" + resolve_error +
                             "); set MASTER_ADDR to a name or address of rank 0's host that every host resolves");
  const bool master_remote = !net::is_loopback(*master_ip);
  Peer& me = rv.me;
  try {
    me = choose_endpoint(env, *master_ip, rv.variable, host);
  } catch (const std::runtime_error& e) {
    me.host = host;
    me.error = e.what();  // told to the others through the store, then thrown
  }
  const bool serve = env.rank == 0 && !env.agent_store;
  if (serve && master_remote && me.error.empty() && me.source != rv.variable && me.address != *master_ip)
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
  try {
    rv.store = open_store(env, *master_ip, serve, timeout);
    rv.peers = swap_peers(*rv.store, env, me, master_remote, rv.variable, serve);
  } catch (const std::exception& e) {  // c10's store errors are std::exception, not runtime_error
    const std::string m = runtime::error_message(e);
    if (!me.error.empty()) throw std::runtime_error(me.error);  // the cause, not the store's timeout
    if (m.rfind("distributed", 0) == 0) throw std::runtime_error(m);
    throw std::runtime_error("distributed rendezvous at " + env.master_addr + ":" + std::to_string(env.master_port) +
                             " failed on " + who(env, host) + " of " + std::to_string(env.world_size) + " within " +
                             std::to_string(timeout.count() / 1000) +
                             " s (a rank did not arrive, or the address or port is wrong or taken): " + m);
  }
  return rv;
}

std::string who(const DistEnv& env, const std::string& host) {
  return "rank " + std::to_string(env.rank) + " on host " + host;
}

std::string describe(const Peer& p) { return p.address + (p.interface.empty() ? "" : " (" + p.interface + ")"); }

std::string describe(const std::vector<Peer>& peers) {
  std::string table;
  for (size_t r = 0; r < peers.size(); ++r)
    table += (r ? ", " : "") + std::to_string(r) + " " + peers[r].host + " " + describe(peers[r]);
  return table;
}

}  // namespace alexnet::engine

#endif
