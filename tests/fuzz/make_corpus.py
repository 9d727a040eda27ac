#!/usr/bin/python3
"""Writes the fuzzer's seed corpus: tiny torch.save files (a few KB) covering
both container formats and the pickle shapes of real checkpoints.

  /usr/bin/python3 tests/fuzz/make_corpus.py --out tests/fuzz/corpus
"""
import argparse
import collections
import os

import torch


def tiny_state():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 2)
    linear = torch.nn.Linear(4, 2)
    state = collections.OrderedDict()
    for prefix, module in (("features.0", conv), ("classifier.6", linear)):
        for name, t in module.state_dict().items():
            state[f"{prefix}.{name}"] = t
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    state = tiny_state()
    flat = torch.arange(12, dtype=torch.float32)
    optimizer = {"state": {0: {"momentum_buffer": torch.ones(2)}},
                 "param_groups": [{"lr": 0.1, "momentum": 0.9, "nesterov": False, "foreach": None,
                                   "params": [0, 1]}]}
    samples = {
        "state_zip": state,
        "train_ckpt": {"model": state, "optimizer": optimizer, "epoch": 2,
                       "args": argparse.Namespace(lr=0.1, lr_steps=[1, 2], resume="")},
        "views": {"a": flat[2:6], "b": flat.view(3, 4).t(), "c": flat[::3]},
        "dtypes": {d: torch.ones(2, dtype=getattr(torch, d)) for d in
                   ("float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
                    "uint8", "bool")},
        "scalars": [None, True, 1, -2, 2**40, -2**63, 1.5, "text", (1, (2, 3)), {1: "one"}],
    }
    for name, obj in samples.items():
        torch.save(obj, os.path.join(args.out, name + ".pth"))
        torch.save(obj, os.path.join(args.out, name + "_legacy.pth"),
                   _use_new_zipfile_serialization=False)


if __name__ == "__main__":
    main()
