// The rendezvous before a process group connects, with the diagnostics that make
// a failed one say why: each rank picks the address it will bind, waits for the
// store at MASTER_ADDR:MASTER_PORT (naming a refused port, a dropped packet or a
// missing route), and swaps its host and address with the others through it, so
// that a set-up no other host could reach fails every rank at once. Internal to
// Communicator::create (communicator.cpp); only built with Gloo or NCCL.
#pragma once

#if defined(ALEXNET_WITH_GLOO) || defined(ALEXNET_WITH_NCCL)

#include "app/engine/distributed.h"

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace alexnet::engine {

/// Where a rank is and how the others reach it, as swapped through the store.
struct Peer {
  std::string host;     // gethostname()
  std::string address;  // what the process group binds and advertises
  std::string interface;
  std::string source;   // why that address: "the route to MASTER_ADDR", "GLOO_SOCKET_IFNAME", ...
  std::string error;    // set instead of the above when this rank cannot take part
};

/// What a successful rendezvous leaves: the store every rank shares, and the peers.
struct Rendezvous {
  std::string host;      // this rank's gethostname()
  std::string variable;  // GLOO_SOCKET_IFNAME or NCCL_SOCKET_IFNAME, as the backend reads it
  Peer me;               // this rank's address and why
  std::vector<Peer> peers;  // by rank
  c10::intrusive_ptr<c10d::Store> store;  // under a prefix per torchrun restart
};

/// Meets the other ranks through a TCPStore (served by rank 0, or by torchrun's
/// agent). Throws std::runtime_error naming the cause: a MASTER_ADDR that does not
/// resolve, an unreachable store, a rank that never came, a peer that failed its
/// own checks, a loopback or shared address that the other hosts could not reach.
Rendezvous rendezvous(const DistEnv& env, const std::string& backend, std::chrono::milliseconds timeout);

/// "rank 1 on host b": who we are, in every message.
std::string who(const DistEnv& env, const std::string& host);
/// "10.0.0.2 (eth0)"
std::string describe(const Peer& p);
/// "0 a 10.0.0.1 (eth0), 1 b 10.0.0.2 (eth0)": every rank's host and address.
std::string describe(const std::vector<Peer>& peers);

}  // namespace alexnet::engine

#endif
