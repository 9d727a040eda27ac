#!/usr/bin/python3
"""torch.save files in every shape a torchvision user has, for the C++ reader tests.

Writes into --out (all from torch.manual_seed, AlexNet with 10 classes):
  zip.pth          state_dict, zip format (torch >= 1.6 default)
  legacy.pth       state_dict, legacy stream (_use_new_zipfile_serialization=False)
  train.pth        references/classification/train.py checkpoint: {"model", "optimizer"
                   (SGD with momentum buffers), "lr_scheduler", "epoch", "args" (argparse.Namespace)}
  module.pth       DataParallel/DDP keys ("module." prefix), legacy format
  compiled.pth     torch.compile keys ("_orig_mod." prefix)
  float16.pth, bfloat16.pth, float64.pth   the state_dict converted to that dtype
  shared.pth       tensors that are views of one storage (offsets, strides)
  pth.bin          fixture: input x (2, 3, 224, 224) and logits_<name> of torchvision's
                   AlexNet after load_state_dict of each file (float32 model)
"""
import argparse
import collections
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture import write_fixture  # noqa: E402

NUM_CLASSES = 10


def train_checkpoint(model):
    """What torchvision's train.py saves after an optimizer step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    x = torch.randn(2, 3, 224, 224)
    model.train()
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    model.eval()
    args = argparse.Namespace(data_path="/datasets/imagenet", model="alexnet", device="cuda",
                              batch_size=32, epochs=90, lr=0.01, momentum=0.9,
                              weight_decay=1e-4, label_smoothing=0.0, mixup_alpha=0.0,
                              lr_steps=[16, 22], output_dir=".", resume="", amp=False,
                              model_ema=False, weights=None, auto_augment=None,
                              val_resize_size=256, train_crop_size=224)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(), "epoch": 3, "args": args}


def shared_storage(state):
    """Every tensor as a view into one flat storage, with gaps between them."""
    total = sum(t.numel() + 3 for t in state.values())
    flat = torch.zeros(total)
    out, offset = collections.OrderedDict(), 1
    for name, t in state.items():
        view = flat[offset:offset + t.numel()]
        if t.dim() == 2:  # a transposed view: strides (1, rows)
            view = view.view(t.shape[1], t.shape[0]).t()
        else:
            view = view.view(t.shape)
        view.copy_(t)
        out[name] = view
        offset += t.numel() + 3
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    torch.manual_seed(3)
    model = torchvision.models.alexnet(num_classes=NUM_CLASSES).eval()
    x = torch.randn(2, 3, 224, 224)
    fixture = {"x": x}

    def save(name, obj, state, **kwargs):
        path = os.path.join(args.out, name + ".pth")
        torch.save(obj, path + ".tmp", **kwargs)
        os.replace(path + ".tmp", path)
        reference = torchvision.models.alexnet(num_classes=NUM_CLASSES).eval()
        reference.load_state_dict(state)  # converts to float32 as the C++ loader does
        with torch.no_grad():
            fixture["logits_" + name] = reference(x)

    state = model.state_dict()
    save("zip", state, state)
    save("legacy", state, state, _use_new_zipfile_serialization=False)
    checkpoint = train_checkpoint(model)
    save("train", checkpoint, checkpoint["model"])
    wrapped = torch.nn.DataParallel(model).state_dict()
    save("module", wrapped, state, _use_new_zipfile_serialization=False)
    compiled = collections.OrderedDict(("_orig_mod." + k, v) for k, v in state.items())
    save("compiled", compiled, state)
    for dtype in ("float16", "bfloat16", "float64"):
        converted = collections.OrderedDict((k, v.to(getattr(torch, dtype))) for k, v in state.items())
        save(dtype, converted, converted)
    shared = shared_storage(state)
    save("shared", shared, shared)
    write_fixture(os.path.join(args.out, "pth.bin"), fixture)


if __name__ == "__main__":
    main()
