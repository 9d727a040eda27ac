#!/usr/bin/python3
"""Time loading a 1000-class AlexNet checkpoint (233 MB): Python vs `alexnet info`.

Creates a seeded torchvision AlexNet .pth in a temporary directory, in the zip
and the legacy format, then alternates, for --repeats rounds:
  python   torch.load(file) + AlexNet.load_state_dict (in this process, warm, model prebuilt)
  py+build the same plus building the model (torchvision.models.alexnet()), as predict
           and eval must: both initialise 61M parameters before the file's values land
  alexnet  `alexnet info --weights file` (a whole process: start, read, parse, and
           check every name and shape against AlexNet's table)
  startup  `alexnet --version`: loading LibTorch's shared libraries, paid by any command
  cat      reading the file once (cat > /dev/null), the floor
and prints the median seconds of each, alexnet's time less its startup ("load"),
and the ratios to Python.

  scripts/bench_weights_load.py --binary build/app/alexnet [--repeats 7]
"""
import argparse
import os
import statistics
import subprocess
import tempfile
import time

import torch
import torchvision


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="build/app/alexnet")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = torchvision.models.alexnet().eval()
        files = {"zip": os.path.join(tmp, "alexnet.pth"), "legacy": os.path.join(tmp, "alexnet_legacy.pth")}
        torch.save(model.state_dict(), files["zip"])
        torch.save(model.state_dict(), files["legacy"], _use_new_zipfile_serialization=False)
        target = torchvision.models.alexnet().eval()

        print(f"{'format':8} {'MB':>5} {'python s':>9} {'py+build s':>11} {'alexnet s':>10} "
              f"{'startup s':>10} {'load s':>7} {'cat s':>6} {'load/python':>12} "
              f"{'load/py+build':>14}")
        for name, path in files.items():
            times = {"python": [], "build": [], "alexnet": [], "startup": [], "cat": []}
            for _ in range(args.repeats):
                times["python"].append(timed(lambda: target.load_state_dict(torch.load(path))))
                times["build"].append(timed(lambda: torchvision.models.alexnet().load_state_dict(
                    torch.load(path))))
                times["alexnet"].append(timed(lambda: subprocess.run(
                    [args.binary, "info", "--weights", path], check=True, stdout=subprocess.DEVNULL)))
                times["startup"].append(timed(lambda: subprocess.run(
                    [args.binary, "--version"], check=True, stdout=subprocess.DEVNULL)))
                times["cat"].append(timed(lambda: subprocess.run(
                    ["cat", path], check=True, stdout=subprocess.DEVNULL)))
            med = {k: statistics.median(v) for k, v in times.items()}
            load = med["alexnet"] - med["startup"]
            print(f"{name:8} {os.path.getsize(path) / 1e6:5.0f} {med['python']:9.3f} "
                  f"{med['build']:11.3f} {med['alexnet']:10.3f} {med['startup']:10.3f} {load:7.3f} "
                  f"{med['cat']:6.3f} {load / med['python']:12.2f} {load / med['build']:14.2f}")


if __name__ == "__main__":
    main()
