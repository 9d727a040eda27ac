#!/usr/bin/python3
"""The alexnet library as another program uses it: `cmake --install` this build into a fresh
prefix, configure and build tests/consumer (find_package(alexnet)) against it, run its
`classify WEIGHTS PHOTO` on a torchvision AlexNet's state_dict and a photograph, and compare its
logits with torchvision's on the same file and photograph (PIL decoding, torchvision's
evaluation transform), run here: max |difference| at most 1e-5. The installed headers must
include nothing that is not installed, and no spdlog or cxxopts.

Usage: consumer_test.py BUILD_DIR TORCH_PREFIX CXX_COMPILER [CUDA_COMPILER]
Exit status: 0 pass, 1 fail.
"""
import os
import re
import subprocess
import sys
import tempfile

import PIL.Image
import torch
import torchvision
from torchvision import transforms

SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5  # the same fp32 model on the same pixels: sums in another order at most
REF = os.environ.get("ALEXNET_REFERENCE_DIR", "")


def run(cmd, **kwargs):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    if r.returncode != 0:
        raise SystemExit(f"FAIL {' '.join(cmd)}: exit {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r


def photograph():
    with open(os.path.join(REF, "photos.txt")) as f:
        return [line.strip() for line in f if line.strip()][0]


def main():
    build, torch_prefix, cxx = sys.argv[1:4]
    cuda = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    with tempfile.TemporaryDirectory() as tmp:
        prefix, consumer = os.path.join(tmp, "prefix"), os.path.join(tmp, "consumer")
        run(["cmake", "--install", build, "--prefix", prefix])
        include = os.path.join(prefix, "include", "alexnet")
        headers = sorted(os.listdir(include))
        print(f"installed headers: {', '.join(headers)}")
        for name in headers:
            with open(os.path.join(include, name)) as f:
                for line in f:
                    m = re.match(r'\s*#\s*include\s*[<"]([^>"]+)[>"]', line)
                    if not m:
                        continue
                    target = m.group(1)
                    if target.startswith(("spdlog", "cxxopts", "fmt/")) or (
                            "/" in target and target.split("/")[0] in ("model", "data", "app")) or (
                            target.startswith("alexnet/") and target[len("alexnet/"):] not in headers):
                        raise SystemExit(f"FAIL installed {name} includes {target}, which is not installed or public")
        args = ["cmake", "-S", os.path.join(SOURCE, "tests", "consumer"), "-B", consumer,
                f"-DCMAKE_PREFIX_PATH={prefix};{torch_prefix}", f"-DCMAKE_CXX_COMPILER={cxx}",
                "-DCMAKE_BUILD_TYPE=Release"]
        if cuda:
            args.append(f"-DCMAKE_CUDA_COMPILER={cuda}")
        run(args)
        run(["cmake", "--build", consumer, "-j", str(os.cpu_count() or 1)])
        print("built tests/consumer against the installed package")

        weights = os.path.join(tmp, "alexnet.pth")
        torch.manual_seed(0)
        model = torchvision.models.alexnet().eval()
        with torch.no_grad():
            model.classifier[6].weight.mul_(40)  # logits far from 0: a relative error would show
        torch.save(model.state_dict(), weights)
        photo = photograph()
        out = run([os.path.join(consumer, "classify"), weights, photo]).stdout
        line = [x for x in out.splitlines() if x.startswith("logits: ")]
        if len(line) != 1:
            raise SystemExit(f"FAIL classify printed no logits line:\n{out[-2000:]}")
        got = torch.tensor([float(v) for v in line[0][len("logits: "):].split()])
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                 transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
        with torch.no_grad():
            want = model(tf(PIL.Image.open(photo).convert("RGB")).unsqueeze(0))[0]
        if got.shape != want.shape:
            raise SystemExit(f"FAIL {got.numel()} logits, torchvision has {want.numel()}")
        diff = (got - want).abs().max().item()
        top = out.splitlines()[0]
        ok = diff <= TOLERANCE
        print(f"{'ok' if ok else 'FAIL'}   classify {os.path.basename(photo)}: top-1 '{top}'; logits as "
              f"torchvision {torchvision.__version__}'s, max |diff| {diff:.3g} (largest |logit| "
              f"{want.abs().max().item():.3g}, bound {TOLERANCE:g})")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
