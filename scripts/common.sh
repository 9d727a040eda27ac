# Shared by run.sh and test.sh: install missing Debian packages, then build.
# Sourced, not run.

ALEXNET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALEXNET_BUILD=${ALEXNET_BUILD:-$ALEXNET_ROOT/build}

# Build and run-time packages (Debian bookworm). libopenblas0-openmp matters:
# without it LibTorch falls back to the reference BLAS (~60x slower Linear layers).
ALEXNET_BUILD_PACKAGES=(cmake ninja-build g++ libtorch-dev libopencv-dev libcxxopts-dev
  libspdlog-dev libgtest-dev libopenblas0-openmp zlib1g-dev libgloo-dev libdnnl-dev)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# install_packages PKG...: apt-get installs whichever are missing (as root or via sudo).
install_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root or sudo to install: ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  log "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || return 1
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >&2 || return 1
}

# build [CMAKE_ARGS...]: configures (Release) and builds into $ALEXNET_BUILD.
build() {
  local gen=()
  command -v ninja >/dev/null && [ ! -f "$ALEXNET_BUILD/Makefile" ] && gen=(-G Ninja)
  log "configuring $ALEXNET_BUILD"
  cmake -S "$ALEXNET_ROOT" -B "$ALEXNET_BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "$@" >&2 || return 1
  log "building with $(nproc) jobs"
  cmake --build "$ALEXNET_BUILD" -j "$(nproc)" >&2 || return 1
}
