#!/bin/sh
# Builds tests/fuzz with clang and runs its fuzz targets, each for a bounded time.
# usage: run_fuzzer.sh BUILD_DIR [SECONDS] [TARGET...]
#   TARGET: pth pt2 safetensors idx cifar image_header (default: all of them, one after another)
#   SECONDS: per target (default 10); 0 builds only.
# ctest runs each target for a few seconds (tests/CMakeLists.txt, label fuzz). A longer run,
# one target at a time, on one core:
#   tests/fuzz/run_fuzzer.sh build/fuzz 600 safetensors
#   tests/fuzz/run_fuzzer.sh build/fuzz 300            # every target, 5 minutes each
# New inputs collect in BUILD_DIR/corpus/TARGET (kept between runs; the committed seeds in
# tests/fuzz/corpus/TARGET stay as they are); a crash, leak or timeout leaves its input in
# BUILD_DIR/artifacts and fails the run. Turn such an input into a regression test (a unit
# test feeding its bytes) and a seed (tests/fuzz/make_corpus.py), then fix the reader.
# Exit 77 (ctest: skipped) when clang++ or libFuzzer is missing, saying why.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: run_fuzzer.sh BUILD_DIR [SECONDS] [TARGET...]" >&2; exit 2; }
build=$1
seconds=${2:-10}
shift $(($# < 2 ? $# : 2))
targets=${*:-pth pt2 safetensors idx cifar image_header}

if ! command -v clang++ >/dev/null 2>&1; then
  echo "skipped: clang++ not found (apt-get install -y clang libclang-rt-14-dev)"
  exit 77
fi
probe="${TMPDIR:-/tmp}/alexnet_fuzz_probe.$$"
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
    clang++ -x c++ -fsanitize=fuzzer - -o "$probe" >/dev/null 2>&1; then
  rm -f "$probe"
  echo "skipped: clang++ cannot link libFuzzer (apt-get install -y libclang-rt-14-dev)"
  exit 77
fi
rm -f "$probe"

# Concurrent runs (ctest -j) share the build folder: one builds at a time.
mkdir -p "$build"
(
  flock 9
  cmake -S "$here" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log"; exit 1; }
  cmake --build "$build" >"$build/build.log" 2>&1 || { tail -n 60 "$build/build.log"; exit 1; }
) 9>"$build/.lock"
[ "$seconds" -eq 0 ] && exit 0

# Per target: the largest input tried (bytes) and libFuzzer's dictionary, if any. The rss
# limit is libFuzzer's default (2 GiB): the readers refuse what would need more.
max_len() {
  case $1 in
    pth) echo 65536 ;;        # the TorchScript seeds are under 32 KiB
    pt2) echo 16384 ;;        # the .pt2 seeds are under 8 KiB
    safetensors) echo 16384 ;;
    idx) echo 16384 ;;        # a gzip file of 16 KiB may declare 16.5 MB
    cifar) echo 12300 ;;      # four CIFAR-10 records, three CIFAR-100 ones
    image_header) echo 4096 ;;
    *) echo "unknown fuzz target '$1' (pth pt2 safetensors idx cifar image_header)" >&2; return 1 ;;
  esac
}

failed=""
for target in $targets; do
  len=$(max_len "$target")
  corpus="$build/corpus/$target"
  mkdir -p "$corpus" "$build/artifacts"
  dict=""
  [ -f "$here/$target.dict" ] && dict="-dict=$here/$target.dict"
  log="$build/$target.log"
  status=0
  # shellcheck disable=SC2086 # $dict is one word or none
  "$build/${target}_fuzzer" "$corpus" "$here/corpus/$target" $dict -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -max_len="$len" -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$target-" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log"
    echo "fuzz $target: FAILED (exit $status); the input is named above, under $build/artifacts"
    failed="$failed $target"
    continue
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -n 1)
  echo "fuzz $target: $runs runs in ${seconds} s, $cov inputs, no crash"
done
[ -z "$failed" ] || { echo "failed:$failed"; exit 1; }
