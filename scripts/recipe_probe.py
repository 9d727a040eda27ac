#!/usr/bin/python3
"""Short recipe probes for the main job, in PyTorch: torchvision's AlexNet on
Fashion-MNIST at 64 px, trained for a few hundred steps with one setting changed,
then evaluated on the 10,000 test images. Used to choose `alexnet train`'s
defaults (BENCHMARKS.md); the chosen recipe is then run with the binary itself.

The data path follows the binary's in spirit, not bit for bit: bilinear
upsampling of the whole batch, and the optional padded crop is taken at 64 px.

    scripts/recipe_probe.py --steps 468 --lr 0.06 --clip 2 --dropout 0.1 --aug none
"""
import argparse
import gzip
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

FMNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path, offset):
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="steps of --batch-size images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--warmup", type=int, default=0, help="linear warmup steps")
    ap.add_argument("--clip", type=float, default=0, help="clip_grad_norm_ max norm (0 = off)")
    ap.add_argument("--init", choices=["torchvision", "vgg"], default="vgg")
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--aug", choices=["both", "flip", "crop", "none"], default="both")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    def images(name):
        return torch.from_numpy(read_idx(os.path.join(FMNIST, name), 16).reshape(-1, 1, 28, 28).copy())

    def labels(name):
        return torch.from_numpy(read_idx(os.path.join(FMNIST, name), 8).astype(np.int64))

    x_train, y_train = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
    x_test, y_test = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")

    def prepare(x, train):
        x = F.interpolate(x.float() / 255, size=(64, 64), mode="bilinear", align_corners=False)
        x = (x - 0.2860) / 0.3530
        if train and a.aug in ("both", "crop"):
            i, j = rng.integers(0, 5, 2)
            x = F.pad(x, (2, 2, 2, 2))[:, :, i:i + 64, j:j + 64]
        if train and a.aug in ("both", "flip") and rng.random() < 0.5:
            x = x.flip(3)
        return x.expand(-1, 3, -1, -1).contiguous()

    model = torchvision.models.alexnet(num_classes=10, dropout=a.dropout)
    if a.init == "vgg":
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                torch.nn.init.zeros_(m.bias)
            elif isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, 0, 0.01)
                torch.nn.init.zeros_(m.bias)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=a.weight_decay)

    def lr_at(step):  # linear warmup, then cosine to 0 at the last step
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        return a.lr * 0.5 * (1 + math.cos(math.pi * (step - a.warmup) / max(1, a.steps - a.warmup)))

    start = time.time()
    order, pos, smooth = torch.randperm(60000), 0, None
    for step in range(a.steps):
        if pos + a.batch_size > 60000:
            order, pos = torch.randperm(60000), 0
        idx = order[pos:pos + a.batch_size]
        pos += a.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = F.cross_entropy(model(prepare(x_train[idx], True)), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if (step + 1) % 50 == 0:
            rate = (step + 1) * a.batch_size / (time.time() - start)
            print(f"step {step + 1}: smoothed loss {smooth:.3f} lr {lr_at(step):.4f} {rate:.0f} img/s", flush=True)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, 10000, 500):
            correct += (model(prepare(x_test[i:i + 500], False)).argmax(1) == y_test[i:i + 500]).sum().item()
    print(f"test top-1 {correct / 100:.2f}% after {a.steps} steps, {time.time() - start:.0f} s: {vars(a)}")


if __name__ == "__main__":
    main()
