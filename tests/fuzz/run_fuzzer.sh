#!/bin/sh
# Builds tests/fuzz with clang and runs the checkpoint fuzzer for a bounded time.
# usage: run_fuzzer.sh BUILD_DIR [SECONDS]
# Exit 77 (ctest: skipped) when clang++ or libFuzzer is missing, saying why.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=$1
seconds=${2:-45}

if ! command -v clang++ >/dev/null 2>&1; then
  echo "skipped: clang++ not found (apt-get install -y clang libclang-rt-14-dev)"
  exit 77
fi
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
    clang++ -x c++ -fsanitize=fuzzer - -o "${TMPDIR:-/tmp}/alexnet_fuzz_probe.$$" >/dev/null 2>&1; then
  echo "skipped: clang++ cannot link libFuzzer (apt-get install -y libclang-rt-14-dev)"
  exit 77
fi
rm -f "${TMPDIR:-/tmp}/alexnet_fuzz_probe.$$"

cmake -S "$here" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" >/dev/null
# New inputs go to a scratch corpus; the committed seeds stay as they are.
mkdir -p "$build/corpus"
status=0
"$build/pth_fuzzer" "$build/corpus" "$here/corpus" -max_total_time="$seconds" -timeout=5 \
  -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$build/fuzz.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  tail -n 60 "$build/fuzz.log"
  echo "fuzzer failed (exit $status); the crashing input is named in the log above"
  exit 1
fi
tail -n 6 "$build/fuzz.log"
