#!/usr/bin/python3
"""Data loading throughput: `alexnet bench --mode data` against torchvision's
ImageFolder + DataLoader with the same transforms, on an ImageNet-like folder
of ~500x375 JPEGs made from the photographs OpenCV's documentation ships.

Runs alternate (C++, torchvision) for each transform and worker count and are
repeated; the table gives medians in images per second and the ratio.
Each run is one epoch from a fresh loader (worker start-up included on both sides).

Usage: /usr/bin/python3 scripts/bench_data.py [--binary build/app/alexnet] [--images 300]
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import tempfile
import time

import torch
import torchvision
from PIL import Image
from torchvision import transforms

PHOTOS = "/usr/share/doc/opencv-doc/examples/data"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_folder(root, count, classes=4, seed=0):
    """count JPEGs of 500x375 or 375x500 (ImageNet's typical sizes), random crops of the photos."""
    rng = random.Random(seed)
    sources = []
    for name in sorted(os.listdir(PHOTOS)):
        if name.lower().endswith(".jpg"):
            img = Image.open(os.path.join(PHOTOS, name)).convert("RGB")
            if min(img.size) >= 200:
                sources.append(img)
    for i in range(count):
        src = rng.choice(sources)
        w, h = (500, 375) if rng.random() < 0.75 else (375, 500)
        # A random crop of 60-100% of the photo, resized to the target size, sometimes mirrored.
        f = rng.uniform(0.6, 1.0)
        cw, ch = int(src.width * f), int(src.height * f)
        x, y = rng.randint(0, src.width - cw), rng.randint(0, src.height - ch)
        img = src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        d = os.path.join(root, f"class{i % classes}")
        os.makedirs(d, exist_ok=True)
        img.save(os.path.join(d, f"img{i:05d}.jpg"), quality=90)


def torchvision_rate(root, transform, workers, batch_size):
    tf = (transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                              transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
          if transform == "train" else
          transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                              transforms.ToTensor(), transforms.Normalize(MEAN, STD)]))
    ds = torchvision.datasets.ImageFolder(root, tf)
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=transform == "train",
                                         num_workers=workers)
    n = sum(images.shape[0] for images, _ in loader)
    return n / (time.perf_counter() - start)


def cpp_rate(binary, root, transform, workers, batch_size):
    out = subprocess.run([binary, "bench", "--mode", "data", "--data", root, "--transform", transform,
                          "--workers", str(workers), "--batch-size", str(batch_size), "--repeat", "1"],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"median ([0-9.]+) img/s", out).group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default="build/app/alexnet")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--folder", help="use (or create) this folder instead of a temporary one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = args.folder or os.path.join(tmp, "images")
        if not os.path.isdir(root):
            make_folder(root, args.images)
        n = sum(len(files) for _, _, files in os.walk(root))
        print(f"folder {root}: {n} JPEGs, batch {args.batch_size}, {args.repeat} runs each, "
              f"torch {torch.__version__}, torchvision {torchvision.__version__}, {os.cpu_count()} CPUs")
        rates = {}
        for _ in range(args.repeat):
            for transform in ("train", "eval"):
                for w in workers:
                    # Alternate the two sides so drifting machine load hits both alike.
                    rates.setdefault(("cpp", transform, w), []).append(
                        cpp_rate(args.binary, root, transform, w, args.batch_size))
                    rates.setdefault(("tv", transform, w), []).append(
                        torchvision_rate(root, transform, w, args.batch_size))
        print(f"{'transform':<10}{'workers':>8}{'torchvision img/s':>19}{'alexnet img/s':>15}"
              f"{'ratio':>8}{'  per worker (alexnet)':>24}")
        for transform in ("train", "eval"):
            for w in workers:
                tv = statistics.median(rates[("tv", transform, w)])
                cpp = statistics.median(rates[("cpp", transform, w)])
                print(f"{transform:<10}{w:>8}{tv:>19.1f}{cpp:>15.1f}{cpp / tv:>7.2f}x{cpp / w:>24.1f}")


if __name__ == "__main__":
    main()
