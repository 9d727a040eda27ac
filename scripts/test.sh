#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest) against each LibTorch flavour
# (scripts/common.sh): Debian's libtorch-dev 1.13 with Debian's torchvision 0.14 as the
# reference, then PyPI's torch with its torchvision (pinned in scripts/requirements-pypi.txt),
# whose CUDA build also compiles and links every CUDA path. Tests that need a GPU report
# skipped, with the reason.
# Usage: scripts/test.sh [CTEST_ARGS...]       e.g. scripts/test.sh -L unit
#        ALEXNET_LIBTORCH=debian|pypi scripts/test.sh   one flavour only
set -euo pipefail
source "$(dirname "$0")/common.sh"
log "$(cpu_class)${ONEDNN_MAX_CPU_ISA:+, ONEDNN_MAX_CPU_ISA=$ONEDNN_MAX_CPU_ISA}"

case ${ALEXNET_LIBTORCH:-both} in
  both)
    flavours=(debian pypi)
    if ! have_cuda_toolkit; then
      # Asked for by name (ALEXNET_LIBTORCH=pypi) this is an error instead.
      log "skipped: the pypi flavour (PyPI's torch is the CUDA build; its CMake files need the CUDA" \
          "toolkit, nvcc, which this machine lacks)"
      flavours=(debian)
    fi
    ;;
  debian|pypi) flavours=("$ALEXNET_LIBTORCH") ;;
  *) echo "error: ALEXNET_LIBTORCH must be debian, pypi or both, got '$ALEXNET_LIBTORCH'" >&2; exit 2 ;;
esac

# Reference tests run PyTorch/torchvision (Debian's for the debian flavour); opencv-doc has real
# photographs; clang builds the fuzzer; ccache keeps compiled objects between builds; GNU time
# measures the peak memory of refused files; iproute2 makes the network namespaces of the
# multi-host test.
install_packages "${ALEXNET_BUILD_PACKAGES[@]}" python3-torch python3-torchvision python3-pil \
  python3-matplotlib clang libclang-rt-14-dev opencv-doc dataset-fashion-mnist ccache time iproute2

# run_ctest NAME CTEST_ARGS...: ctest in $ALEXNET_BUILD with the temporary folder $tmp, then the
# skipped entries with their reasons.
run_ctest() {
  local name=$1 status=0
  shift
  (cd "$ALEXNET_BUILD" && TMPDIR="$tmp" TEST_TMPDIR="$tmp" \
      ctest --output-on-failure --no-tests=error --timeout 900 -j "$(nproc)" "$@" 2>&1 | tee "$tmp/ctest.out"
   exit "${PIPESTATUS[0]}") || status=$?
  "$ALEXNET_PYTHON" "$ALEXNET_ROOT/tests/list_skips.py" "$tmp/ctest.out" "$ALEXNET_BUILD" | sed "s/^/[$name] /" >&2 || true
  rm -f "$tmp/ctest.out"
  return $status
}

failed=()
extra=()
once_ran=
tmp=
trap 'rm -rf "$tmp"' EXIT  # an interrupted run leaves nothing in memory (tmpfs) or on disk
for flavour in "${flavours[@]}"; do
  use_libtorch "$flavour" && build || { failed+=("$flavour (build)"); continue; }
  log "testing against LibTorch '$flavour' ($("$ALEXNET_BUILD/app/alexnet" --version))"
  # The tests' temporary files (checkpoints of 0.2 to 0.9 GB each, written with fsync) go to a
  # folder of this run's own, removed after; whatever a test forgot to remove is named. On tmpfs
  # when it has room (about 6 GB at the peak, in memory), else in the build folder.
  tmp_root=$ALEXNET_BUILD
  shm_kb=$(df --output=avail -k /dev/shm 2>/dev/null | tail -1 | tr -d ' ')
  mem_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo 2>/dev/null)
  if [ "${shm_kb:-0}" -gt $((8 << 20)) ] && [ "${mem_kb:-0}" -gt $((14 << 20)) ]; then tmp_root=/dev/shm; fi
  # The reference data (about 4.2 GB of seeded models and checkpoints, made again by each run)
  # goes to the build folder; the temporary files there too when tmpfs is short.
  need_gb=5 what="reference data"
  [ "$tmp_root" = /dev/shm ] || { need_gb=11; what="reference data and temporary files"; }
  free_kb=$(df --output=avail -k "$ALEXNET_BUILD" | tail -1 | tr -d ' ')
  if [ "${free_kb:-0}" -lt $((need_gb << 20)) ]; then
    log "error: $((free_kb >> 20)) GB free on the disk of $ALEXNET_BUILD; the tests need about" \
        "$need_gb GB there ($what); not testing '$flavour'"
    failed+=("$flavour (disk space)")
    continue
  fi
  tmp=$(mktemp -d "$tmp_root/alexnet-tests.XXXXXX")
  log "temporary files in $tmp ($(df -h --output=avail "$tmp" | tail -1 | tr -d ' ') free)"
  run_ctest "$flavour" "${extra[@]}" "$@" || failed+=("$flavour")
  if [ -z "$once_ran" ] && [ $# -eq 0 ] && [ -z "${ONEDNN_MAX_CPU_ISA:-}${DNNL_MAX_CPU_ISA:-}" ]; then
    caps=$(lower_isa_caps)
    [ -n "$caps" ] || log "no lower CPU class to test under an ISA cap: this CPU is AVX2 or below"
    for cap in $caps; do
      # Under the AVX2 cap the whole isa list; under the AVX-512 one the unit tests of it (the
      # class table, the plan): the int8 and CPU-class tests' AVX-512 paths run on AVX-512 CPUs.
      log "the precision- and ISA-dependent tests again, capped: ONEDNN_MAX_CPU_ISA=$cap"
      # The reference Python inherits the cap too; ATen's own kernels are capped alike.
      (export ONEDNN_MAX_CPU_ISA="$cap"
       if [ "$cap" = AVX2 ]; then export ATEN_CPU_CAPABILITY=avx2; fi
       run_ctest "$flavour, $cap" -R '^(Precision|CpuIsa|OneDnnPlan|OneDnnInt8Linear|OneDnnInt8Conv|SpaceToDepth)\.' || exit 1
       # The reference data the first run made is still there: its set-up tests need not run again.
       if [ "$cap" = AVX2 ]; then run_ctest "$flavour, $cap" -L isa -FS ".*"; fi) \
        || failed+=("$flavour (ONEDNN_MAX_CPU_ISA=$cap)")
    done
  fi
  # torchrun's logs (torchelastic_*) and torch 2.x's compile cache (torchinductor_*) are PyTorch's.
  left=$(ls -A "$tmp" | { grep -v -e '^torchelastic_' -e '^torchinductor_' || true; } | head -5 | tr '\n' ' ')
  [ -z "$left" ] || log "warning: the tests left files behind: $left"
  rm -rf "$tmp"
  # The next flavour's reference data then fits on the disk beside this build.
  rm -rf "$ALEXNET_BUILD/reference"
  # What does not depend on the LibTorch runs once, with the first flavour: the tests labelled
  # once (the fuzz targets, the hostile data files) and the command-line tests that
  # tests/fixture.py's @once marks (flags, logs, the progress bar: the same C++ in both builds).
  [ -n "$once_ran" ] || log "the flavour-independent tests (label once, @once) ran with '$flavour'; later flavours skip them"
  extra=(-LE once)
  once_ran=1
done
if [ ${#failed[@]} -gt 0 ]; then
  log "tests failed against: ${failed[*]}"
  exit 1
fi
log "tests passed against: ${flavours[*]}"
