#!/usr/bin/python3
"""The two LibTorch flavours side by side: the same `alexnet bench --json` workloads run by
the binary built against Debian's LibTorch 1.13 and by the one built against PyPI's (see
scripts/common.sh), alternating, several repetitions, on the same machine with the same
threads; prints a markdown table of medians and the ratio (pypi / debian, above 1: PyPI's
build is faster), the median of the per-repetition ratios, so that a noisy shared machine
hits both sides of a pair alike.

Workloads:
  matmul        2048x2048 fp32 matrix product, GFLOP/s (the BLAS each LibTorch brings)
  infer         inference, batch 64, 224x224, 1000 classes, fp32, each build's default
                (the oneDNN plan where it runs: Debian's always, PyPI's where it was built
                with the system's oneDNN 2.x beside its own, docs/building.md)
  infer-layers  the same with --onednn-plan off: both LibTorches' own kernels
  infer-batch1  batch 1, 224x224: latency
  train-main    one training step of the main job: batch 128, 64x64, 10 classes, fp32
  train224      one training step at 224x224, batch 32, 1000 classes, fp32

Usage: /usr/bin/python3 scripts/bench_flavours.py [--debian build/app/alexnet]
       [--pypi build-pypi/app/alexnet] [--repeat 5] [--threads N] [--workloads infer,train-main]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

MODEL = ["--mode", "infer", "--batch-size", "64", "--image-size", "224", "--num-classes", "1000",
         "--precision", "fp32", "--warmup", "2", "--iters", "8"]
WORKLOADS = {
    "matmul": ["--mode", "matmul", "--matrix-size", "2048", "--precision", "fp32", "--iters", "8"],
    "infer": MODEL,
    "infer-layers": MODEL + ["--onednn-plan", "off"],
    "infer-batch1": ["--mode", "infer", "--batch-size", "1", "--image-size", "224", "--precision",
                     "fp32", "--warmup", "3", "--iters", "30"],
    "train-main": ["--mode", "train", "--batch-size", "128", "--image-size", "64", "--num-classes",
                   "10", "--precision", "fp32", "--warmup", "2", "--iters", "8"],
    "train224": ["--mode", "train", "--batch-size", "32", "--image-size", "224", "--num-classes",
                 "1000", "--precision", "fp32", "--warmup", "2", "--iters", "6"],
}


def run(binary, args, threads):
    cmd = [binary, "bench", "--json", "--device", "cpu", "--threads", str(threads), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def rate(result):
    return result["gflops"] if result["mode"] == "matmul" else result["img_per_s"]


def version(binary):
    return subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--debian", default="build/app/alexnet")
    parser.add_argument("--pypi", default="build-pypi/app/alexnet")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args()
    names = args.workloads.split(",")
    for n in names:
        if n not in WORKLOADS:
            parser.error(f"--workloads: unknown '{n}' (known: {', '.join(WORKLOADS)})")
    sides = {"debian": args.debian, "pypi": args.pypi}
    for side, binary in sides.items():
        if not os.access(binary, os.X_OK):
            sys.exit(f"error: --{side} {binary}: not an executable (build it: scripts/test.sh, or "
                     f"ALEXNET_LIBTORCH={side} scripts/run.sh)")

    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    for side, binary in sides.items():
        print(f"{side}: {version(binary)}")
    start = time.time()
    rows = []
    for n in names:
        rates = {"debian": [], "pypi": []}
        ratios, compute = [], {}
        for rep in range(args.repeat):
            order = ["debian", "pypi"] if rep % 2 == 0 else ["pypi", "debian"]
            got = {}
            for side in order:
                result = run(sides[side], WORKLOADS[n], args.threads)
                got[side] = rate(result)
                rates[side].append(got[side])
                compute[side] = result.get("compute", "") + (f", {result['blas']}" if result.get("blas") else "")
            ratios.append(got["pypi"] / got["debian"])
            print(f"  {n} {rep + 1}/{args.repeat}: debian {got['debian']:.1f}, pypi {got['pypi']:.1f}",
                  file=sys.stderr, flush=True)
        unit = "GFLOP/s" if n == "matmul" else "img/s"
        rows.append((n, compute["debian"], compute["pypi"], statistics.median(rates["debian"]),
                     statistics.median(rates["pypi"]), unit, statistics.median(ratios)))

    print(f"\n{args.repeat} alternating repetitions per workload, {time.time() - start:.0f} s, load average "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print("| workload | Debian 1.13 runs | PyPI runs | Debian 1.13 | PyPI | unit | PyPI / Debian |")
    print("|---|---|---|---|---|---|---|")
    for n, cd, cp, rd, rp, unit, ratio in rows:
        print(f"| {n} | {cd} | {cp} | {rd:.1f} | {rp:.1f} | {unit} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
