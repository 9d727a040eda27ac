#!/usr/bin/python3
"""Training throughput of N processes x T/N threads (train --distributed over
Gloo on 127.0.0.1, scripts/launch.sh) against 1 process x T threads, at the
same global batch, on the same machine, alternating, several repetitions.

Usage: scripts/bench_distributed.py [--steps 30] [--repeats 3] [--batch 128]
           [--processes 2] [--threads 2] [--data fashion-mnist] [--binary build/app/alexnet]

Prints the median training img/s (all processes together) of each set-up and
their ratio. The validation split is a 256-image subset so that evaluation
time stays small; only the training phase's rate is compared.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = re.compile(r"epoch 1 done: .*? ([0-9.]+) img/s")

# The tests' Fashion-MNIST subsets (tests/fixture.py needs only the standard library).
sys.path.insert(0, os.path.join(ROOT, "tests"))
from fixture import FASHION_MNIST, write_fashion_mnist_subset  # noqa: E402


def rate_of(text):
    m = RATE.search(text)
    if not m:
        sys.exit("error: no training rate in the output:\n" + text[-2000:])
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128, help="global batch (split over processes)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="threads of the single process")
    ap.add_argument("--fmnist", default=FASHION_MNIST)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "app", "alexnet"))
    a = ap.parse_args()
    if a.batch % a.processes:
        sys.exit("error: --batch must be a multiple of --processes")

    with tempfile.TemporaryDirectory() as tmp:
        data = write_fashion_mnist_subset(os.path.join(tmp, "fmnist"), 60000, 256, src=a.fmnist)
        common = ["--data", "fashion-mnist:" + data, "--epochs", "1", "--max-steps", str(a.steps),
                  "--print-freq", "0", "--overwrite"]
        per_thread = max(1, a.threads // a.processes)
        single, multi = [], []
        for rep in range(a.repeats):
            r = subprocess.run([a.binary, "train", *common, "--batch-size", str(a.batch),
                                "--threads", str(a.threads), "--output", os.path.join(tmp, "one")],
                               capture_output=True, text=True)
            if r.returncode:
                sys.exit("error: single-process run failed:\n" + r.stderr[-2000:])
            single.append(rate_of(r.stderr))
            r = subprocess.run([os.path.join(ROOT, "scripts", "launch.sh"), str(a.processes), *common,
                                "--batch-size", str(a.batch // a.processes),
                                "--threads", str(per_thread), "--output", os.path.join(tmp, "multi")],
                               capture_output=True, text=True, env=dict(os.environ, ALEXNET=a.binary))
            if r.returncode:
                sys.exit("error: distributed run failed:\n" + r.stderr[-2000:])
            multi.append(rate_of(r.stderr))
            print(f"repeat {rep + 1}/{a.repeats}: 1x{a.threads} {single[-1]:.1f} img/s, "
                  f"{a.processes}x{per_thread} {multi[-1]:.1f} img/s", file=sys.stderr, flush=True)

    s, m = statistics.median(single), statistics.median(multi)
    print(f"| set-up | global batch | img/s (median of {a.repeats}) | ratio |")
    print("|---|---|---|---|")
    print(f"| 1 process x {a.threads} threads | {a.batch} | {s:.1f} | 1.00 |")
    print(f"| {a.processes} processes x {per_thread} thread(s), Gloo | {a.batch // a.processes} x "
          f"{a.processes} | {m:.1f} | {m / s:.2f} |")


if __name__ == "__main__":
    main()
