#!/usr/bin/python3
"""Write torchvision's AlexNet as a TorchScript archive that `alexnet --weights` reads.

Weights come from one of:
  --pretrained            torchvision's IMAGENET1K_V1 (downloaded; needs internet once)
  --state-dict FILE.pth   a local state_dict, e.g. alexnet-owt-7be5be79.pth
  --seed N                seeded random initialisation (tests and demos)

Examples:
  scripts/export_torchvision.py --pretrained --output alexnet-imagenet.pt
  scripts/export_torchvision.py --state-dict alexnet-owt-7be5be79.pth --output alexnet-imagenet.pt
  scripts/export_torchvision.py --seed 0 --output alexnet-seed0.pt
"""
import argparse
import sys

import torch
import torchvision


def build(args):
    if args.pretrained:
        weights = torchvision.models.AlexNet_Weights.IMAGENET1K_V1
        return torchvision.models.alexnet(weights=weights)
    model = torchvision.models.alexnet(num_classes=args.num_classes)
    if args.state_dict:
        state = torch.load(args.state_dict, map_location="cpu")
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]  # a torchvision references/classification checkpoint
        model.load_state_dict(state)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", action="store_true", help="torchvision's IMAGENET1K_V1")
    source.add_argument("--state-dict", metavar="FILE", help="a local .pth state_dict")
    source.add_argument("--seed", type=int, help="seeded random weights")
    parser.add_argument("--num-classes", type=int, default=1000,
                        help="classes of a random or local model (default 1000)")
    parser.add_argument("--mode", choices=["script", "trace"], default="script",
                        help="torch.jit.script (default) or torch.jit.trace")
    parser.add_argument("--output", required=True, help="TorchScript archive to write")
    args = parser.parse_args()

    if args.seed is not None:
        torch.manual_seed(args.seed)
    try:
        model = build(args).eval()
    except (OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.mode == "script":
        archive = torch.jit.script(model)
    else:
        archive = torch.jit.trace(model, torch.zeros(1, 3, 224, 224))
    archive.save(args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output}: torchvision AlexNet ({args.mode}), "
          f"{model.classifier[6].out_features} classes, {n} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
