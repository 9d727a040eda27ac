#!/usr/bin/python3
"""Training throughput of N processes x T/N threads (train --distributed over
Gloo on 127.0.0.1, scripts/launch.sh) against 1 process x T threads, at the
same global batch, on the same machine, alternating, several repetitions.

Usage: scripts/bench_distributed.py [--steps 30] [--repeats 3] [--batch 128]
           [--processes 2] [--threads 2] [--data fashion-mnist] [--binary build/app/alexnet]
           [--hosts]

Prints the median training img/s (all processes together) of each set-up and
their ratio. The validation split is a 256-image subset so that evaluation
time stays small; only the training phase's rate is compared.

--hosts (root): instead, P processes on 1 host (127.0.0.1) against P hosts x 1
process each, the hosts being network namespaces on a bridge (tests/netns.py),
at the same per-process batch and threads. On one machine this measures the
protocol's overhead (veth and bridge instead of loopback), not a real network.
Both rows also give the all-reduce's bytes per step and the time per step that
rank 0 waited for it after its backward pass.
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
REDUCE = re.compile(r"all-reduce of ([0-9.]+) MB of gradients per step in \d+ buckets; ([0-9.]+) ms per step")

# The tests' Fashion-MNIST subsets (tests/fixture.py needs only the standard library).
sys.path.insert(0, os.path.join(ROOT, "tests"))
from fixture import FASHION_MNIST, write_fashion_mnist_subset  # noqa: E402
import netns  # noqa: E402


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
    ap.add_argument("--hosts", action="store_true",
                    help="1 host x P processes against P hosts x 1 process (network namespaces; root)")
    a = ap.parse_args()
    if a.batch % a.processes:
        sys.exit("error: --batch must be a multiple of --processes")
    if a.hosts:
        return hosts(a)

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


def reduce_of(text):
    m = REDUCE.search(text)
    if not m:
        sys.exit("error: no all-reduce line in rank 0's output:\n" + text[-2000:])
    return float(m.group(1)), float(m.group(2))


def hosts(a):
    why = netns.why_not()
    if why:
        sys.exit("error: --hosts: " + why)
    per = a.batch // a.processes
    threads = max(1, a.threads // a.processes)
    rows = {"one": [], "many": []}
    port = 29700
    with tempfile.TemporaryDirectory() as tmp:
        data = write_fashion_mnist_subset(os.path.join(tmp, "fmnist"), 60000, 256, src=a.fmnist)
        common = ["--data", "fashion-mnist:" + data, "--epochs", "1", "--max-steps", str(a.steps),
                  "--print-freq", "0", "--overwrite", "--batch-size", str(per), "--threads", str(threads),
                  "--dist-timeout", "120"]
        with netns.Hosts(a.processes) as net:
            for rep in range(a.repeats):
                r = subprocess.run([os.path.join(ROOT, "scripts", "launch.sh"), str(a.processes), *common,
                                    "--output", os.path.join(tmp, "one")],
                                   capture_output=True, text=True, env=dict(os.environ, ALEXNET=a.binary))
                if r.returncode:
                    sys.exit("error: 1-host run failed:\n" + r.stderr[-2000:])
                rows["one"].append((rate_of(r.stderr), *reduce_of(r.stderr)))
                port += 1
                procs = []
                for h in range(a.processes):
                    env = dict(os.environ, RANK=str(h), WORLD_SIZE=str(a.processes), LOCAL_RANK="0",
                               LOCAL_WORLD_SIZE="1", MASTER_ADDR=net.addresses[0], MASTER_PORT=str(port))
                    env.pop("GLOO_SOCKET_IFNAME", None)
                    procs.append(net.popen(h, [a.binary, "train", "--distributed", *common, "--output",
                                               os.path.join(tmp, "many")],
                                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
                errs = [p.communicate()[1] for p in procs]
                if any(p.returncode for p in procs):
                    sys.exit("error: multi-host run failed:\n" + "\n".join(e[-1500:] for e in errs))
                rows["many"].append((rate_of(errs[0]), *reduce_of(errs[0])))
                print(f"repeat {rep + 1}/{a.repeats}: 1 host {rows['one'][-1][0]:.1f} img/s, "
                      f"{a.processes} hosts {rows['many'][-1][0]:.1f} img/s", file=sys.stderr, flush=True)
    base = statistics.median(x[0] for x in rows["one"])
    print(f"| set-up ({a.processes} processes x {threads} thread(s), batch {per} each) | img/s (median of "
          f"{a.repeats}) | step ms | all-reduce MB/step | waited after backward, ms/step | ratio |")
    print("|---|---|---|---|---|---|")
    for key, name in (("one", f"1 host x {a.processes} processes (127.0.0.1)"),
                      ("many", f"{a.processes} hosts x 1 process (namespaces, veth + bridge)")):
        rate = statistics.median(x[0] for x in rows[key])
        mb = statistics.median(x[1] for x in rows[key])
        wait = statistics.median(x[2] for x in rows[key])
        print(f"| {name} | {rate:.1f} | {1e3 * a.batch / rate:.0f} | {mb:.1f} | {wait:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
