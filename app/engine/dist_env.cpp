// The distributed environment: torchrun's variables read and checked, and which
// process group backends this build has.
#include "app/engine/distributed.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdlib>
#include <string>

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

}  // namespace alexnet::engine
