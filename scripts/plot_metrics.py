#!/usr/bin/python3
"""Draw the curves of an `alexnet train` run from its metrics.jsonl.

Usage: scripts/plot_metrics.py OUT_DIR/metrics.jsonl [--output curves.png]

Three panels: loss (per logged step and per epoch, train and validation),
accuracy (train, validation top-1 and top-5) and the learning rate.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path):
    steps, epochs = [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"error: {path}:{n}: not JSON ({e})")
            (steps if rec.get("type") == "step" else epochs).append(rec)
    return steps, epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="metrics.jsonl written by alexnet train")
    parser.add_argument("--output", help="PNG to write (default: next to the metrics, curves.png)")
    args = parser.parse_args()
    if not os.path.isfile(args.metrics):
        sys.exit(f"error: {args.metrics}: no such file")
    steps, epochs = read(args.metrics)
    if not steps and not epochs:
        sys.exit(f"error: {args.metrics}: no records")
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "curves.png")

    # Steps are numbered within their epoch; place them on a fractional epoch axis.
    per_epoch = {}
    for r in steps:
        per_epoch[r["epoch"]] = max(per_epoch.get(r["epoch"], 0), r["step"])
    def x_of(r):
        return r["epoch"] - 1 + r["step"] / max(1, per_epoch[r["epoch"]])

    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4.2))
    if steps:
        ax_loss.plot([x_of(r) for r in steps], [r["loss"] for r in steps], lw=0.8, alpha=0.6,
                     label="train (step)")
    ex = [r["epoch"] for r in epochs]
    if epochs:
        ax_loss.plot(ex, [r["train_loss"] for r in epochs], "o-", label="train (epoch)")
        ax_loss.plot(ex, [r["val_loss"] for r in epochs], "s-", label="validation")
        ax_acc.plot(ex, [100 * r["train_acc"] for r in epochs], "o-", label="train")
        ax_acc.plot(ex, [100 * r["val_top1"] for r in epochs], "s-", label="val top-1")
        # Top-5 is null (n/a) with fewer than 5 classes.
        top5 = [(x, 100 * r["val_top5"]) for x, r in zip(ex, epochs) if r.get("val_top5") is not None]
        if top5:
            ax_acc.plot([x for x, _ in top5], [y for _, y in top5], "^-", label="val top-5")
        for x, r in zip(ex, epochs):
            ax_acc.annotate(f"{100 * r['val_top1']:.1f}", (x, 100 * r["val_top1"]),
                            textcoords="offset points", xytext=(0, -12), ha="center", fontsize=8)
    lr_src = steps if steps else epochs
    ax_lr.plot([x_of(r) if "step" in r else r["epoch"] for r in lr_src],
               [r["lr"] for r in lr_src], "-")
    ax_loss.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="%")
    ax_lr.set(title="learning rate", xlabel="epoch", ylabel="lr")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
