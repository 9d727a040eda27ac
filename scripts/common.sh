# Shared by run.sh, test.sh and docker_smoke.sh: install what is missing, choose the LibTorch,
# build. Sourced, not run.
#
# ALEXNET_LIBTORCH chooses the LibTorch to build against (the one switch):
#   debian  Debian's libtorch-dev 1.13.1, built into build/; the reference tests run Debian's
#           python3-torch 1.13 and python3-torchvision 0.14.
#   pypi    the LibTorch inside PyPI's torch (scripts/requirements-pypi.txt pins it), built into
#           build-pypi/. The torch and torchvision it needs live in a virtual environment outside
#           the clone ($ALEXNET_VENV), made once per machine and reused; the reference tests run
#           that torchvision. PyPI's torch for Linux is the CUDA build, so this build compiles
#           and links every CUDA path (its CMake files need the CUDA toolkit: nvcc).
# Each script sets its own default (run.sh: the faster one; test.sh: both).

ALEXNET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALEXNET_REQUIREMENTS=$ALEXNET_ROOT/scripts/requirements-pypi.txt
ALEXNET_VENV=${ALEXNET_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/alexnet/venv-pypi}

# Build and run-time packages (Debian bookworm). libopenblas0-openmp matters:
# without it Debian's LibTorch falls back to the reference BLAS (~60x slower Linear layers).
ALEXNET_BUILD_PACKAGES=(cmake ninja-build g++ libtorch-dev libopencv-dev libcxxopts-dev nlohmann-json3-dev
  libspdlog-dev libgtest-dev libopenblas0-openmp zlib1g-dev libgloo-dev libdnnl-dev libcpp-httplib-dev
  libssl-dev pkg-config)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# cpu_class: this CPU's model, class and the flags that matter, from /proc/cpuinfo (the binary's
# --version says the same after the build, with ONEDNN_MAX_CPU_ISA applied).
cpu_class() {
  local flags model class have=()
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
  for f in avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_int8; do
    [[ $flags == *" $f "* ]] && have+=("$f")
  done
  if [[ $flags == *" amx_bf16 "* && $flags == *" amx_int8 "* ]]; then class=AMX
  elif [[ $flags == *" avx512f "* && $flags == *" avx512_vnni "* ]]; then class="AVX-512 VNNI"
  elif [[ $flags == *" avx512f "* ]]; then class=AVX-512
  elif [[ $flags == *" avx2 "* ]]; then class=AVX2
  else class=pre-AVX2
  fi
  echo "cpu: ${model:-unknown}: class $class (${have[*]:-none of the flags that matter})"
}

# lower_isa_caps: the ONEDNN_MAX_CPU_ISA values below this CPU's class that the tests are run
# under again (scripts/test.sh): AVX-512 without AMX and AVX2 on an AMX CPU, AVX2 on an AVX-512 one.
lower_isa_caps() {
  local flags
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  if [[ $flags == *" amx_bf16 "* ]]; then echo "AVX512_CORE_VNNI AVX2"
  elif [[ $flags == *" avx512f "* ]]; then echo "AVX2"
  fi
}

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

# pypi_pin NAME: the version scripts/requirements-pypi.txt pins for NAME.
pypi_pin() { sed -n "s/^$1==\([^[:space:]]*\).*/\1/p" "$ALEXNET_REQUIREMENTS"; }

# ensure_venv: the PyPI flavour's virtual environment, made with Debian's python3 and filled
# from scripts/requirements-pypi.txt, once: it is reused while the pins are unchanged.
ensure_venv() {
  local stamp=$ALEXNET_VENV/.alexnet-requirements
  if [ -x "$ALEXNET_VENV/bin/python" ] && cmp -s "$ALEXNET_REQUIREMENTS" "$stamp"; then
    return 0
  fi
  install_packages python3-venv || return 1
  # A folder without a working pip (made before python3-venv was there) is made again.
  if ! "$ALEXNET_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "making the virtual environment $ALEXNET_VENV"
    /usr/bin/python3 -m venv --clear "$ALEXNET_VENV" || return 1
  fi
  log "installing torch $(pypi_pin torch), torchvision $(pypi_pin torchvision) from PyPI into" \
      "$ALEXNET_VENV (once per machine; several GB with CUDA's libraries)"
  "$ALEXNET_VENV/bin/python" -m pip install --progress-bar off -r "$ALEXNET_REQUIREMENTS" >&2 || return 1
  cp "$ALEXNET_REQUIREMENTS" "$stamp"
}

# have_cuda_toolkit: whether nvcc is there for the pypi flavour's CMake files (on PATH, in
# CUDAToolkit_ROOT, or where NVIDIA's packages put it).
have_cuda_toolkit() {
  command -v nvcc >/dev/null || [ -x "${CUDAToolkit_ROOT:-/nonexistent}/bin/nvcc" ] \
    || [ -x /usr/local/cuda/bin/nvcc ]
}

# use_libtorch debian|pypi: installs what that flavour needs and sets ALEXNET_LIBTORCH,
# ALEXNET_BUILD (its build folder), ALEXNET_PYTHON (its reference Python) and
# ALEXNET_CMAKE_ARGS (how CMake finds its LibTorch).
use_libtorch() {
  ALEXNET_LIBTORCH=$1
  ALEXNET_CMAKE_ARGS=()
  case $1 in
    debian)
      ALEXNET_BUILD=${ALEXNET_BUILD_DEBIAN:-${ALEXNET_BUILD:-$ALEXNET_ROOT/build}}
      ALEXNET_PYTHON=/usr/bin/python3
      ;;
    pypi)
      ALEXNET_BUILD=${ALEXNET_BUILD_PYPI:-$ALEXNET_ROOT/build-pypi}
      if ! have_cuda_toolkit; then
        echo "error: ALEXNET_LIBTORCH=pypi: PyPI's torch is the CUDA build and its CMake files need the" \
             "CUDA toolkit (nvcc); install it or set CUDAToolkit_ROOT, or build with ALEXNET_LIBTORCH=debian" >&2
        return 1
      fi
      ensure_venv || return 1
      ALEXNET_PYTHON=$ALEXNET_VENV/bin/python
      local torch_dir
      torch_dir=$("$ALEXNET_PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))') || return 1
      # The torch package folder itself (lib/, include/, share/cmake/Torch), not only
      # torch.utils.cmake_prefix_path: CMake then finds its libraries before a system LibTorch's.
      ALEXNET_CMAKE_ARGS+=("-DCMAKE_PREFIX_PATH=$torch_dir" "-DALEXNET_PYTHON=$ALEXNET_PYTHON")
      ;;
    *)
      echo "error: ALEXNET_LIBTORCH must be debian or pypi, got '$1'" >&2
      return 1
      ;;
  esac
  export ALEXNET_LIBTORCH
}

# build [CMAKE_ARGS...]: configures (Release) and builds the chosen flavour into $ALEXNET_BUILD.
# ccache, when installed, keeps compiled objects between builds and clones (paths relative to
# the clone, so a fresh clone in another folder reuses them; the sloppiness lets it cache
# sources compiled with the precompiled <torch/torch.h>).
build() {
  local gen=() launcher=()
  command -v ninja >/dev/null && [ ! -f "$ALEXNET_BUILD/Makefile" ] && gen=(-G Ninja)
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    export CCACHE_BASEDIR=$ALEXNET_ROOT CCACHE_NOHASHDIR=true \
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  fi
  log "configuring $ALEXNET_BUILD (LibTorch: $ALEXNET_LIBTORCH)"
  cmake -S "$ALEXNET_ROOT" -B "$ALEXNET_BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
    "${launcher[@]}" "${ALEXNET_CMAKE_ARGS[@]}" "$@" >&2 || return 1
  log "building with $(nproc) jobs"
  cmake --build "$ALEXNET_BUILD" -j "$(nproc)" >&2 || return 1
}
