#!/usr/bin/python3
"""A torch.export .pt2 archive, written by the torch running this test, read by alexnet.

torchvision's AlexNet (10 classes, seed 0) is saved twice, as a state_dict (.pth) and with
torch.export.save (.pt2, class names as the extra file classes.json). Then:
- `alexnet info` names the format pt2 and the class names;
- `alexnet export` of the .pt2 writes a .pth whose every tensor is torch.equal to
  torchvision's (bit for bit);
- `alexnet predict --json` on the same images gives the same logits from the .pt2 as from
  the .pth (exact equality of the printed values), and torchvision's (max |difference|
  <= 1e-5, fp32 on the CPU, LibTorch's layers against PyTorch's: `--onednn-plan off`);
- a .pt2 whose weights config is damaged is refused with `error: <file>: pt2: ...`, exit 1.
Skipped (exit 77) where this torch has no torch.export (Debian's 1.13).
"""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import torch
import torchvision

BINARY = os.environ["ALEXNET_BINARY"]
TOLERANCE = 1e-5
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def run(*args):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=300)


def predictions(weights, images):
    p = run("predict", "--weights", weights, "--json", "--topk", "0", "--onednn-plan", "off", *images)
    check(p.returncode == 0, f"predict --weights {os.path.basename(weights)} exits 0: {p.stderr.strip()[-300:]}")
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return {r["image"]: r for r in rows}


def logits_of(row):
    # Every class, by index: --topk 0 prints them all, most probable first.
    return [c["logit"] for c in sorted(row["top"], key=lambda c: c["index"])]


def main():
    if not hasattr(torch, "export") or not hasattr(torch.export, "save"):
        print(f"skipped: torch {torch.__version__} has no torch.export (PyTorch >= 2.1 writes .pt2)")
        return 77
    from PIL import Image

    torch.manual_seed(0)
    model = torchvision.models.alexnet(num_classes=10).eval()
    names = [f"class {chr(ord('a') + i)}" for i in range(10)]
    with tempfile.TemporaryDirectory(prefix="pt2_reference_") as tmp:
        pth = os.path.join(tmp, "alexnet.pth")
        pt2 = os.path.join(tmp, "alexnet.pt2")
        torch.save(model.state_dict(), pth)
        exported = torch.export.export(model, (torch.randn(1, 3, 224, 224),))
        torch.export.save(exported, pt2, extra_files={"classes.json": json.dumps(names)})

        p = run("info", pt2)
        check(p.returncode == 0 and "pt2" in p.stdout, f"info names the format pt2: {p.stdout.strip()[:200]}")
        check(all(n in p.stdout for n in names[:3]), "info shows the class names from extra/classes.json")

        out = os.path.join(tmp, "from_pt2.pth")
        p = run("export", "--weights", pt2, "--output", out)
        check(p.returncode == 0, f"export .pt2 -> .pth exits 0: {p.stderr.strip()[-300:]}")
        if p.returncode == 0:
            back = torch.load(out)
            want = model.state_dict()
            check(list(back) == list(want), "the exported state_dict has torchvision's names, in order")
            check(all(torch.equal(back[k], want[k]) for k in want), "every tensor is bit-identical")

        rng = torch.Generator().manual_seed(1)
        images = []
        for i in range(3):
            pixels = torch.randint(0, 256, (240 + 8 * i, 260, 3), generator=rng, dtype=torch.uint8)
            images.append(os.path.join(tmp, f"image{i}.png"))
            Image.fromarray(pixels.numpy()).save(images[-1])
        from_pt2, from_pth = predictions(pt2, images), predictions(pth, images)
        check(len(from_pt2) == len(images) == len(from_pth), "one prediction per image from each file")
        transform = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
        worst = 0.0
        for path in images:
            if path not in from_pt2 or path not in from_pth:
                continue
            a, b = logits_of(from_pt2[path]), logits_of(from_pth[path])
            check(a == b, f"{os.path.basename(path)}: .pt2 logits == .pth logits (exact)")
            check(from_pt2[path]["top"][0]["label"] in names, "labels come from the archive")
            with torch.no_grad():
                ref = model(transform(Image.open(path).convert("RGB")).unsqueeze(0))[0].tolist()
            worst = max(worst, max(abs(x - y) for x, y in zip(a, ref)))
        check(worst <= TOLERANCE, f"logits against torchvision: max |difference| {worst:.3g} <= {TOLERANCE}")

        # A damaged weights config: the archive otherwise intact.
        bad = os.path.join(tmp, "bad.pt2")
        with zipfile.ZipFile(pt2) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename.endswith("model_weights_config.json"):
                    data = data.replace(b'"as_int": 64', b'"as_int": 65', 1)
                dst.writestr(info, data)
        p = run("info", bad)
        check(p.returncode == 1 and p.stderr.startswith(f"error: {bad}: "),
              f"a damaged .pt2 is refused, naming the file: {p.stderr.strip()[:300]}")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
