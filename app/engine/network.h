// What a distributed rank needs to know about the network before c10d connects:
// which local address the kernel would use to reach MASTER_ADDR, which interface
// owns it, and whether the store's port answers, with the reason when it does not.
// No LibTorch: plain POSIX sockets, so that the unit tests need nothing else.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace alexnet::engine::net {

/// The numeric address `host` resolves to (IPv4 preferred, as Gloo and TCPStore
/// try it first), or nullopt with the resolver's message in *error.
std::optional<std::string> resolve(const std::string& host, std::string* error);

/// 127.0.0.0/8 or ::1 (numeric addresses only; resolve names first).
bool is_loopback(const std::string& address);

/// A local address and the interface that owns it.
struct Endpoint {
  std::string address;    // numeric, e.g. "10.0.0.2"
  std::string interface;  // e.g. "eth0"; empty when no interface claims the address
};

/// The source address and interface the kernel's routing table picks to reach
/// `address` (numeric): a connected UDP socket's local address, with no packet
/// sent. Throws std::runtime_error naming the address when there is no route.
Endpoint route_to(const std::string& address);

/// The first IPv4 (else IPv6) address of interface `name`. Throws
/// std::runtime_error when the interface does not exist or has no address.
Endpoint interface_endpoint(const std::string& name);

/// gethostname(), or "?" if that fails.
std::string host_name();

/// One TCP connection attempt to address:port (numeric), bounded by `timeout`.
enum class Reach { kOk, kRefused, kTimedOut, kUnreachable, kOther };
struct Probe {
  Reach reach = Reach::kOther;
  std::string detail;  // strerror text of the failure
};
Probe probe_tcp(const std::string& address, int port, std::chrono::milliseconds timeout);

}  // namespace alexnet::engine::net
