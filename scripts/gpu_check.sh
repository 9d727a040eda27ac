#!/usr/bin/env bash
# scripts/gpu_check.sh: build alexnet against the LibTorch inside a pip PyTorch on a
# machine with an NVIDIA GPU, then check the CUDA paths:
#   1. logits on CUDA equal logits on the CPU within 1e-3 (fp32, NCHW and channels-last),
#      and bf16/fp16 stay close; the unit tests (tests/cuda_test.cpp's CUDA paths among them,
#      which CI compiles but can only skip), and the reference tests when torchvision is
#      there (ctest);
#   2. a short Fashion-MNIST training run on the GPU (when the data is at hand);
#   3. `alexnet bench` beside PyTorch on the same GPU (scripts/bench_vs_pytorch.py).
# Exits non-zero when a check fails; prints what was skipped and why.
#
# Usage:
#   scripts/gpu_check.sh [--dry-run] [--python PY] [--build-dir DIR] [--third-party DIR]
#                        [--fashion DIR] [--repeat N] [--skip-bench]
#   scripts/gpu_check.sh --prepare-third-party DIR    (on a machine that has the headers)
#
# The GPU machine may lack OpenCV (image decoding is then left out: the model, IDX data,
# the tests and `bench` build without it) and the cxxopts / spdlog / fmt headers. Prepare
# a folder of those headers, with CMake package files, on the Debian development machine
# and carry it along (the checkout's shared/ folder travels with it):
#   scripts/gpu_check.sh --prepare-third-party shared/third_party
# then on the GPU machine: scripts/gpu_check.sh --third-party shared/third_party
# (or ALEXNET_THIRD_PARTY=shared/third_party; shared/third_party is used when present).
# Fashion-MNIST: --fashion DIR (or ALEXNET_FASHION_MNIST) with train-/t10k-*-ubyte[.gz];
# shared/fashion-mnist is used when present (copy Debian's /usr/share/datasets/fashion-mnist).
#
# A CUDA PyTorch's CMake files look for the CUDA toolkit (nvcc and headers): install it,
# or have pip's nvidia-cuda-nvcc package (found automatically), or set CUDAToolkit_ROOT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=0
PYTHON=${PYTHON:-python3}
BUILD=$ROOT/build-gpu
THIRD_PARTY=${ALEXNET_THIRD_PARTY:-}
FASHION=${ALEXNET_FASHION_MNIST:-}
REPEAT=3
SKIP_BENCH=0
PREPARE=

usage() { sed -n '2,/^set -euo pipefail/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --python) PYTHON=$2; shift ;;
    --build-dir) BUILD=$2; shift ;;
    --third-party) THIRD_PARTY=$2; shift ;;
    --fashion) FASHION=$2; shift ;;
    --repeat) REPEAT=$2; shift ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --prepare-third-party) PREPARE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

FAILED=()
SKIPPED=()
step() { printf '\n== %s\n' "$*"; }
run() {
  echo "+ $*"
  [[ $DRY_RUN == 1 ]] || "$@"
}
# A check: runs, and records a failure instead of stopping the script.
check() {
  local name=$1; shift
  echo "+ $*"
  [[ $DRY_RUN == 1 ]] && return 0
  if "$@"; then echo "ok: $name"; else echo "FAILED: $name"; FAILED+=("$name"); fi
}
skip() { echo "skipped: $*"; SKIPPED+=("$*"); }

# --- Preparing the carried headers (on the development machine) ------------------------
if [[ -n $PREPARE ]]; then
  step "third-party headers into $PREPARE"
  for h in /usr/include/cxxopts.hpp /usr/include/spdlog /usr/include/fmt /usr/include/zlib.h /usr/include/zconf.h \
      /usr/include/nlohmann; do
    [[ -e $h ]] || { echo "missing $h (Debian: apt-get install libcxxopts-dev libspdlog-dev libfmt-dev zlib1g-dev nlohmann-json3-dev)" >&2; exit 1; }
  done
  run mkdir -p "$PREPARE/include" "$PREPARE/lib/cmake/cxxopts" "$PREPARE/lib/cmake/spdlog" \
    "$PREPARE/lib/cmake/nlohmann_json"
  run cp -r /usr/include/cxxopts.hpp /usr/include/spdlog /usr/include/fmt /usr/include/zlib.h \
    /usr/include/zconf.h /usr/include/nlohmann "$PREPARE/include/"
  # OpenSSL's headers (SHA-256, model/hub_hash.cpp), its per-architecture ones merged in; the
  # GPU machine links its own libcrypto.so.3.
  if [[ -e /usr/include/openssl/evp.h ]]; then
    run cp -r /usr/include/openssl "$PREPARE/include/"
    [[ -d /usr/include/x86_64-linux-gnu/openssl ]] && run cp -r /usr/include/x86_64-linux-gnu/openssl/. "$PREPARE/include/openssl/"
  else
    echo "missing /usr/include/openssl (Debian: apt-get install libssl-dev)" >&2; exit 1
  fi
  # Header-only targets with the names find_package() gives: spdlog without its compiled
  # library, fmt header-only (Debian's spdlog uses the external fmt).
  if [[ $DRY_RUN == 0 ]]; then
    cat > "$PREPARE/lib/cmake/cxxopts/cxxopts-config.cmake" <<'EOF'
# Header-only cxxopts carried by scripts/gpu_check.sh --prepare-third-party.
if(NOT TARGET cxxopts::cxxopts)
  add_library(cxxopts::cxxopts INTERFACE IMPORTED)
  set_target_properties(cxxopts::cxxopts PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CMAKE_CURRENT_LIST_DIR}/../../../include")
endif()
EOF
    cat > "$PREPARE/lib/cmake/spdlog/spdlogConfig.cmake" <<'EOF'
# Header-only spdlog (and fmt) carried by scripts/gpu_check.sh --prepare-third-party.
if(NOT TARGET spdlog::spdlog)
  add_library(spdlog::spdlog INTERFACE IMPORTED)
  set_target_properties(spdlog::spdlog PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CMAKE_CURRENT_LIST_DIR}/../../../include"
    INTERFACE_COMPILE_DEFINITIONS "FMT_HEADER_ONLY")
endif()
EOF
    cat > "$PREPARE/lib/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" <<'EOF'
# Header-only nlohmann-json carried by scripts/gpu_check.sh --prepare-third-party.
if(NOT TARGET nlohmann_json::nlohmann_json)
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CMAKE_CURRENT_LIST_DIR}/../../../include")
endif()
EOF
    cat > "$PREPARE/lib/cmake/nlohmann_json/nlohmann_jsonConfigVersion.cmake" <<'EOF'
set(PACKAGE_VERSION 3.11.2)
set(PACKAGE_VERSION_COMPATIBLE TRUE)
if(PACKAGE_FIND_VERSION_MAJOR AND NOT PACKAGE_FIND_VERSION_MAJOR EQUAL 3)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
endif()
EOF
  fi
  echo "done: carry $PREPARE to the GPU machine and pass --third-party $PREPARE"
  exit 0
fi

[[ -z $THIRD_PARTY && -d $ROOT/shared/third_party ]] && THIRD_PARTY=$ROOT/shared/third_party
[[ -z $FASHION && -d $ROOT/shared/fashion-mnist ]] && FASHION=$ROOT/shared/fashion-mnist
[[ -z $FASHION && -d /usr/share/datasets/fashion-mnist ]] && FASHION=/usr/share/datasets/fashion-mnist
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
BIN=$BUILD/app/alexnet

# --- PyTorch and the GPU -------------------------------------------------------------------
step "PyTorch and the GPU"
if [[ $DRY_RUN == 1 ]]; then
  TORCH_PREFIX='<the torch package folder>'
  HAVE_TORCHVISION=1
  echo "+ $PYTHON -c 'import os, torch; print(os.path.dirname(torch.__file__))'"
else
  "$PYTHON" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
assert torch.cuda.is_available(), "CUDA is not available to this PyTorch"
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB")
EOF
  # The same recipe as scripts/common.sh's pypi flavour (what CI compiles): CMake is pointed at
  # the torch package folder itself, so its libraries are found before any system LibTorch's.
  TORCH_PREFIX=$("$PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
  HAVE_TORCHVISION=0
  "$PYTHON" -c 'import torchvision' 2>/dev/null && HAVE_TORCHVISION=1
fi
echo "LibTorch: $TORCH_PREFIX; torchvision: $([[ $HAVE_TORCHVISION == 1 ]] && echo yes || echo no)"

# --- Configure and build -------------------------------------------------------------------
step "configure and build in $BUILD"
PREFIX_PATH=$TORCH_PREFIX
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release "-DALEXNET_PYTHON=$(command -v "$PYTHON" || echo "$PYTHON")")
if ! echo '#include <cxxopts.hpp>
#include <spdlog/spdlog.h>' | c++ -std=c++17 -E -x c++ - >/dev/null 2>&1; then
  if [[ -z $THIRD_PARTY ]]; then
    echo "cxxopts/spdlog headers not found: prepare them with scripts/gpu_check.sh --prepare-third-party DIR" \
         "on a machine that has them, then pass --third-party DIR" >&2
    [[ $DRY_RUN == 1 ]] || exit 1
    THIRD_PARTY='<third-party folder>'
  fi
fi
if [[ -n $THIRD_PARTY ]]; then
  THIRD_PARTY=$(cd "$THIRD_PARTY" 2>/dev/null && pwd || echo "$THIRD_PARTY")
  PREFIX_PATH="$PREFIX_PATH;$THIRD_PARTY"
  if [[ ! -e /usr/include/zlib.h && -e $THIRD_PARTY/include/zlib.h ]]; then
    LIBZ=$(ldconfig -p 2>/dev/null | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')
    CMAKE_ARGS+=("-DZLIB_INCLUDE_DIR=$THIRD_PARTY/include" "-DZLIB_LIBRARY=${LIBZ:-/lib/x86_64-linux-gnu/libz.so.1}")
  fi
  if [[ ! -e /usr/include/openssl/evp.h && -e $THIRD_PARTY/include/openssl/evp.h ]]; then
    LIBCRYPTO=$(ldconfig -p 2>/dev/null | awk '/libcrypto\.so\.3 .*x86-64/ {print $NF; exit}')
    CMAKE_ARGS+=("-DOPENSSL_INCLUDE_DIR=$THIRD_PARTY/include"
                 "-DOPENSSL_CRYPTO_LIBRARY=${LIBCRYPTO:-/lib/x86_64-linux-gnu/libcrypto.so.3}")
  fi
fi
CMAKE_ARGS+=("-DCMAKE_PREFIX_PATH=$PREFIX_PATH")
# The CUDA toolkit PyTorch's CMake files want: nvcc on PATH, CUDAToolkit_ROOT, or pip's package.
if ! command -v nvcc >/dev/null && [[ -z ${CUDAToolkit_ROOT:-} && $DRY_RUN == 0 ]]; then
  # pip's nvcc: nvidia/cuda_nvcc/bin/nvcc (CUDA 12 wheels) or nvidia/cu13/bin/nvcc (CUDA 13).
  NVCC_DIR=$("$PYTHON" -c 'import glob, nvidia
print(next(p[:-9] for d in nvidia.__path__ for p in sorted(glob.glob(d + "/*/bin/nvcc"))))' 2>/dev/null || true)
  if [[ -n $NVCC_DIR && -x $NVCC_DIR/bin/nvcc ]]; then
    CMAKE_ARGS+=("-DCUDAToolkit_ROOT=$NVCC_DIR" "-DCMAKE_CUDA_COMPILER=$NVCC_DIR/bin/nvcc")
  else
    echo "warning: no nvcc found; if CMake fails to find the CUDA toolkit, install it or set CUDAToolkit_ROOT" >&2
  fi
fi
# Tests need GoogleTest; without it the checks below still run on the binary.
if [[ $DRY_RUN == 1 ]] || ls /usr/lib/*/cmake/GTest /usr/lib/cmake/GTest /usr/local/lib/cmake/GTest >/dev/null 2>&1; then
  CMAKE_ARGS+=(-DALEXNET_BUILD_TESTS=ON); HAVE_TESTS=1
else
  CMAKE_ARGS+=(-DALEXNET_BUILD_TESTS=OFF); HAVE_TESTS=0
  skip "ctest (GoogleTest not installed: apt-get install libgtest-dev)"
fi
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
run cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" "${CMAKE_ARGS[@]}"
run cmake --build "$BUILD" -j "$(nproc)"
HAVE_OPENCV=1
if [[ $DRY_RUN == 0 ]] && grep -q '^OpenCV_DIR:PATH=.*NOTFOUND' "$BUILD/CMakeCache.txt"; then
  HAVE_OPENCV=0
  skip "image decoding (built without OpenCV): predict and image-folder checks"
fi
run "$BIN" --version

# --- 1. CUDA against the CPU ---------------------------------------------------------------
step "logits: CUDA against the CPU (the same seeded model and batch)"
# The seeded model's logits on a seeded batch of 8 (224x224), as raw float32.
LOGITS=(bench --mode infer --batch-size 8 --iters 1 --warmup 0 --json)
check "cpu fp32 logits" "$BIN" "${LOGITS[@]}" --device cpu --precision fp32 --channels-last=off --logits "$TMP/cpu.bin"
check "cuda fp32 logits" "$BIN" "${LOGITS[@]}" --device cuda --precision fp32 --channels-last=off --logits "$TMP/cuda32.bin"
check "cuda fp32 channels-last logits" "$BIN" "${LOGITS[@]}" --device cuda --precision fp32 --channels-last=on --logits "$TMP/cuda32cl.bin"
check "cuda bf16 logits" "$BIN" "${LOGITS[@]}" --device cuda --precision bf16 --channels-last=on --logits "$TMP/cuda16b.bin"
check "cuda fp16 logits" "$BIN" "${LOGITS[@]}" --device cuda --precision fp16 --channels-last=on --logits "$TMP/cuda16h.bin"
compare_logits() {
  "$PYTHON" - "$TMP" "$HAVE_TORCHVISION" <<'EOF'
import sys
import numpy as np
tmp, have_tv = sys.argv[1], sys.argv[2] == "1"
load = lambda n: np.fromfile(f"{tmp}/{n}.bin", dtype=np.float32).reshape(8, -1)
cpu = load("cpu")
ok = True
scale = np.abs(cpu).max()
for name, bound in (("cuda32", 1e-3), ("cuda32cl", 1e-3), ("cuda16b", 0.03 * scale), ("cuda16h", 0.01 * scale)):
    d = np.abs(load(name) - cpu).max()
    agree = (load(name).argmax(1) == cpu.argmax(1)).mean()
    print(f"{name}: max |logit - cpu| = {d:.3g} (bound {bound:.3g}), top-1 agreement {100 * agree:.0f}%")
    ok &= bool(d <= bound)
if have_tv:
    import torch, torchvision
    torch.manual_seed(0)  # alexnet bench draws the model, then the batch, as here
    model = torchvision.models.alexnet().eval()
    x = torch.randn(8, 3, 224, 224)
    with torch.no_grad():
        ref = model(x).numpy()
        ref_cuda = model.cuda()(x.cuda()).cpu().numpy()
    print(f"PyTorch CPU vs alexnet CPU: {np.abs(ref - cpu).max():.3g} (bound 1e-5); "
          f"PyTorch CUDA vs alexnet CUDA: {np.abs(ref_cuda - load('cuda32')).max():.3g} (bound 1e-3)")
    ok &= bool(np.abs(ref - cpu).max() <= 1e-5)
sys.exit(0 if ok else 1)
EOF
}
check "CUDA logits equal CPU logits within 1e-3" compare_logits
run "$BIN" bench --device cuda --mode matmul --precision fp32
run "$BIN" bench --device cuda --mode matmul --precision bf16

if [[ $HAVE_TESTS == 1 ]]; then
  step "tests (ctest): unit, then reference when torchvision is there"
  in_build() { (cd "$BUILD" && "$@"); }  # ctest --test-dir needs CMake 3.20
  check "ctest -L unit" in_build ctest -L unit --output-on-failure
  if [[ $HAVE_TORCHVISION == 1 ]]; then
    check "ctest -L reference" in_build ctest -L reference -LE slow --output-on-failure
  else
    skip "ctest -L reference (no torchvision for $PYTHON)"
  fi
fi

# --- 2. Training on the GPU ----------------------------------------------------------------
step "short Fashion-MNIST training on the GPU"
if [[ -n $FASHION ]]; then
  # --precision auto once alexnet train resolves it (app/runtime/precision.h); bf16 before that.
  TRAIN_PRECISION=bf16
  [[ $DRY_RUN == 0 ]] && "$BIN" train --help | grep -q 'auto' && TRAIN_PRECISION=auto
  check "train on CUDA (200 steps, precision $TRAIN_PRECISION)" "$BIN" train --device cuda \
    --data "fashion-mnist:$FASHION" --epochs 1 --max-steps 200 --print-freq 50 \
    --precision "$TRAIN_PRECISION" --output "$TMP/train" --overwrite
else
  skip "training (no Fashion-MNIST: --fashion DIR, or copy /usr/share/datasets/fashion-mnist to shared/fashion-mnist)"
fi

# --- 3. Speed beside PyTorch ----------------------------------------------------------------
step "alexnet bench beside PyTorch on the GPU"
if [[ $SKIP_BENCH == 1 ]]; then
  skip "benchmark (--skip-bench)"
elif [[ $HAVE_TORCHVISION == 0 ]]; then
  skip "benchmark (no torchvision for $PYTHON)"
else
  WORKLOADS=matmul,infer-fp32,infer-bf16-bf16,infer-fp16,infer-batch1,train224-fp32,train-bf16-amp,train-fp16
  if [[ $HAVE_OPENCV == 1 && -d /usr/share/doc/opencv-doc/examples/data ]]; then
    WORKLOADS+=,e2e-eval
  else
    skip "e2e-eval (needs OpenCV in the build and opencv-doc's photographs)"
  fi
  check "bench_vs_pytorch.py" "$PYTHON" "$ROOT/scripts/bench_vs_pytorch.py" --binary "$BIN" --device cuda \
    --repeat "$REPEAT" --workloads "$WORKLOADS"
fi

step "summary"
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do echo "skipped: $s"; done
if [[ ${#FAILED[@]} -gt 0 ]]; then
  for f in "${FAILED[@]}"; do echo "FAILED: $f"; done
  exit 1
fi
echo "all checks passed$([[ $DRY_RUN == 1 ]] && echo ' (dry run: nothing was executed)')"
