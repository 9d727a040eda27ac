#!/usr/bin/python3
"""Weights files from strangers: each attack class, crafted here, must give a clean error.

Every case below writes its own hostile file, runs `alexnet` on it and checks: exit status 1,
stderr starting `error: <file>: ` and naming what is wrong, peak resident memory within
REFUSED_EXTRA_MIB of a run refused for a missing file (LibTorch's own start: about 160 MiB for
Debian's, 520 MiB for PyPI's CUDA build; a normal load adds the weights to it), and
no hang (HANG_SECONDS is a guard, not a benchmark; each case's seconds are printed). Then the
formats that must load do: TorchScript read without its code, safetensors both ways, with
Python's safetensors.torch (PyPI) where this Python has it.

Usage: safe_files_test.py --part PART, one ctest entry each:
  attacks             the hostile files, NaN weights and written files' modes: our readers and
                      flags, the same code in both LibTorch flavours (ctest label once)
  loading             TorchScript without its code, against torchvision's logits; safetensors
                      written and read by our binary alone
  safetensors-python  our safetensors file read by Python's safetensors package, and its file by us
Exit status: 0 every check passed, 1 a check failed, 77 skipped (the reason is printed).
"""
import argparse
import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

import torch
import torchvision

from fixture import scripted_setstate_trap

BINARY = os.environ["ALEXNET_BINARY"]
SKIPPED = 77
# predict as torchvision computes: fp32 on LibTorch's layers in NCHW (predict's defaults, spelled
# out so that the comparisons below depend on no default).
FP32 = ("--precision", "fp32", "--channels-last=off", "--onednn-plan", "off")
HANG_SECONDS = 60
REFUSED_EXTRA_MIB = 48  # over the floor: what a refused file may cost (10-class weights: 218 MiB)
FLOOR_MIB = None  # peak RSS of `alexnet info` refusing a missing file, measured first
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def run(*args, umask=None):
    """(returncode, stdout, stderr, seconds) of one alexnet run; returncode None if it hung."""
    return run_wrapped([], *args, umask=umask)


def run_wrapped(wrapper, *args, umask=None):
    start = time.monotonic()
    p = subprocess.Popen([*wrapper, BINARY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL,
                         preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    try:
        out, err = p.communicate(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return None, out, err + f"\n(killed after {HANG_SECONDS} s)", HANG_SECONDS
    return p.returncode, out, err, time.monotonic() - start


def run_measured(*args):
    """Like run(), with the command's own peak RSS in MiB as a fifth value. Measured by
    /usr/bin/time (GNU time): a child forked from this Python would count its RSS too."""
    with tempfile.NamedTemporaryFile("r") as report:
        code, out, err, seconds = run_wrapped(["/usr/bin/time", "-f", "%M", "-o", report.name], *args)
        text = report.read().strip().splitlines()
    mib = int(text[-1]) / 1024 if text and text[-1].isdigit() else float("inf")
    return code, out, err, seconds, mib


def error_line(err):
    """The `error: ...` line of stderr (log lines come before it)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    return lines[-1] if lines else err.strip()[-300:]


def floor_mib():
    global FLOOR_MIB
    if FLOOR_MIB is None:
        _, _, _, _, FLOOR_MIB = run_measured("info", "--weights", "/nonexistent/weights.pth")
        print(f"floor: a refused missing file peaks at {FLOOR_MIB:.0f} MiB")
    return FLOOR_MIB


INFO = ("info", "--weights", "{}")


def refused(path, *needles, command=INFO):
    """`command` with {} replaced by `path` must fail cleanly, naming the file and `needles`."""
    args = [a.replace("{}", path) for a in command]
    code, _, err, seconds, mib = run_measured(*args)
    first = error_line(err)
    ok = (code == 1 and first.startswith(f"error: {path}: ") and all(n in first for n in needles)
          and mib < floor_mib() + REFUSED_EXTRA_MIB)
    check(ok, f"{command[0]} {os.path.basename(path)}: exit {code}, {seconds:.2f} s, "
              f"{mib:.0f} MiB peak: {first[:220]}")


# ---------------------------------------------------------------- crafting

def alexnet_shapes(num_classes=10):
    return {k: v.shape for k, v in torchvision.models.alexnet(num_classes=num_classes).state_dict().items()}


def rewrite_zip(src, dst, patch):
    """Copies a torch.save zip with patch(name, bytes) -> bytes applied to every entry."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, patch(info.filename, zin.read(info.filename)))


def stride_zero(tmp):
    """A 1000x larger classifier declared by stride-0 views of one float each."""
    shapes = alexnet_shapes()
    shapes["classifier.6.weight"] = torch.Size([100000, 4096])
    shapes["classifier.6.bias"] = torch.Size([100000])
    path = os.path.join(tmp, "stride0.pth")
    torch.save({k: torch.zeros(1).expand(s) for k, s in shapes.items()}, path)
    return path


def overlapping_view(tmp):
    """Rows overlapping by all but one element: 400 KB read as a 1.6 GB matrix."""
    base = torch.zeros(4096 + 99999)
    state = {"classifier.6.weight": base.as_strided((100000, 4096), (1, 1)),
             "classifier.6.bias": torch.zeros(100000)}
    path = os.path.join(tmp, "overlap.pth")
    torch.save(state, path)
    return path


def duplicate_key(tmp):
    """classifier.6.bias twice: Python would keep the second, a careless reader the first."""
    shapes = alexnet_shapes()
    state = {k: torch.zeros(1).expand(s) for k, s in shapes.items()}
    state["classifier.6.biaZ"] = torch.ones(1).expand(shapes["classifier.6.bias"])
    plain = os.path.join(tmp, "dup_src.pth")
    torch.save(state, plain)
    path = os.path.join(tmp, "duplicate.pth")
    rewrite_zip(plain, path, lambda name, data:
                data.replace(b"classifier.6.biaZ", b"classifier.6.bias") if name.endswith("data.pkl") else data)
    return path


def zip_aliases(tmp, count=250, record=8 << 20):
    """One 8 MB record named by `count` central-directory entries."""
    name = b"archive/data/0"
    payload = bytes(record)
    crc = zlib.crc32(payload)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, record, record, len(name), 0) + name
    pkl = b"\x80\x02}q\x00."  # {}
    pkl_name = b"archive/data.pkl"
    pkl_off = len(local) + record
    local_pkl = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(pkl), len(pkl), len(pkl),
                            len(pkl_name), 0) + pkl_name
    body = local + payload + local_pkl + pkl
    central = b""
    entries = [(f"archive/data/{i}".encode(), 0, crc, record) for i in range(count)]
    entries.append((pkl_name, pkl_off, zlib.crc32(pkl), len(pkl)))
    for n, off, c, size in entries:
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, c, size, size, len(n),
                               0, 0, 0, 0, 0, off) + n
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(body), 0)
    path = os.path.join(tmp, f"aliases{count}.pth")
    with open(path, "wb") as f:
        f.write(body + central + end)
    return path


def many_entries(tmp, count=40000):
    """40k distinct small entries: legal, and must cost time linear in their number."""
    path = os.path.join(tmp, "many.pth")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        for i in range(count):
            z.writestr(f"archive/extra/{i}", b"x")
    return path


def torchscript_with_setstate(tmp):
    """A module whose __setstate__ never returns: torch.jit.load would run it."""
    path = os.path.join(tmp, "trap.pt")
    try:
        scripted_setstate_trap().save(path)
    except Exception as e:  # noqa: BLE001 - older TorchScript may not take this signature
        print(f"note: could not script the __setstate__ trap ({type(e).__name__}: {e}); using a tuple state")
        return None
    return path


def safetensors_bytes(header, data):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------- the cases

def attacks(tmp):
    print("-- small files declaring huge tensors")
    image = os.path.join(tmp, "grey.png")
    from PIL import Image
    Image.new("RGB", (80, 60), (120, 120, 120)).save(image)
    predict = ("predict", "--weights", "{}", image)
    refused(stride_zero(tmp), "overlap")
    refused(stride_zero(tmp), "overlap", command=predict)
    refused(overlapping_view(tmp), "classifier.6.weight", "overlap")

    print("-- duplicate keys, in every command")
    dup = duplicate_key(tmp)
    for command in (INFO, predict, ("eval", "--data", "fashion-mnist", "--weights", "{}"),
                    ("export", "--output", os.path.join(tmp, "dup_out.pth"), "--weights", "{}")):
        refused(dup, "'classifier.6.bias' appears twice", command=command)
    check(not os.path.exists(os.path.join(tmp, "dup_out.pth")), "export of a refused file writes nothing")

    print("-- zip amplification")
    refused(zip_aliases(tmp), "overlap")
    code, _, err, seconds, mib = run_measured("info", "--weights", many_entries(tmp))
    check(code == 1 and error_line(err).startswith("error: ") and mib < floor_mib() + REFUSED_EXTRA_MIB,
          f"40000 zip entries: exit {code}, {seconds:.2f} s, {mib:.0f} MiB: {error_line(err)[:160]}")

    print("-- TorchScript runs no code")
    trap = torchscript_with_setstate(tmp)
    if trap:
        refused(trap, "custom state")
        refused(trap, "custom state", command=predict)

    print("-- not a regular file")
    fifo = os.path.join(tmp, "fifo.pth")
    os.mkfifo(fifo)
    refused(fifo, "not a regular file (a FIFO)")
    refused(fifo, "not a regular file (a FIFO)", command=predict)
    refused("/dev/zero", "not a regular file (a character device)")

    print("-- safetensors")
    f32 = struct.calcsize("<f")
    refused(write(os.path.join(tmp, "st_oob.safetensors"), safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [64], "data_offsets": [0, 64 * f32]}}, bytes(16))), "outside")
    refused(write(os.path.join(tmp, "st_overlap.safetensors"), safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
         "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24))), "overlaps")
    refused(write(os.path.join(tmp, "st_hole.safetensors"), safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}, bytes(32))), "belong to no tensor")
    refused(write(os.path.join(tmp, "st_shape.safetensors"), safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [100000, 4096], "data_offsets": [0, 16]}}, bytes(16))), "need")
    refused(write(os.path.join(tmp, "st_header.safetensors"),
                  struct.pack("<Q", 200_000_000) + b"{" + bytes(64)), "over the limit")
    text = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' \
           b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    refused(write(os.path.join(tmp, "st_dup.safetensors"), struct.pack("<Q", len(text)) + text + bytes(8)),
            "'a' twice")
    refused(write(os.path.join(tmp, "st_dtype.safetensors"), safetensors_bytes(
        {"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, bytes(4))), "F8_E4M3")


def nonfinite_and_modes(tmp):
    print("-- NaN weights, JSON, and the written file's mode")
    torch.manual_seed(1)
    model = torchvision.models.alexnet(num_classes=10)
    state = {k: v.half() for k, v in model.state_dict().items()}
    state["classifier.6.bias"][3] = float("nan")
    nan_path = os.path.join(tmp, "nan.pth")
    torch.save(state, nan_path)
    image = os.path.join(tmp, "grey.png")
    from PIL import Image
    Image.new("RGB", (80, 60), (120, 120, 120)).save(image)

    code, _, err, _ = run("predict", "--weights", nan_path, image)
    line = error_line(err)
    check(code == 1 and line.startswith(f"error: {nan_path}: weights hold NaN or infinity in classifier.6.bias")
          and "--allow-nonfinite" in line, f"predict refuses NaN weights: {line[:160]}")
    code, _, err, _ = run("eval", "--data", "fashion-mnist", "--weights", nan_path)
    line = error_line(err)
    check(code == 1 and "NaN or infinity" in line, f"eval refuses NaN weights: {line[:160]}")

    code, out, err, _ = run("predict", "--weights", nan_path, "--json", "--allow-nonfinite", image)

    def no_constants(name):
        raise ValueError(f"non-JSON constant {name}")

    try:
        rows = [json.loads(line, parse_constant=no_constants) for line in out.splitlines()]
        valid = code == 0 and len(rows) == 1 and rows[0]["top"][0]["probability"] is None
    except ValueError as e:
        valid = False
        err += str(e)
    check(valid and "warning: " in err and "classifier.6.bias" in err,
          f"--allow-nonfinite --json prints valid JSON with null for NaN: {out.strip()[:120]}")

    # Modes: a replaced file keeps its own; a new one gets 0666 less the umask.
    kept = os.path.join(tmp, "private.pth")
    write(kept, b"old")
    os.chmod(kept, 0o600)
    code, _, err, _ = run("export", "--weights", nan_path, "--output", kept)
    mode = stat.S_IMODE(os.stat(kept).st_mode)
    check(code == 0 and mode == 0o600, f"export over a 0600 file leaves it {oct(mode)} (want 0o600) {err.strip()[:80]}")
    fresh = os.path.join(tmp, "fresh.pth")
    code, _, _, _ = run("export", "--weights", nan_path, "--output", fresh, umask=0o027)
    mode = stat.S_IMODE(os.stat(fresh).st_mode)
    check(code == 0 and mode == 0o640, f"export under umask 027 makes {oct(mode)} (want 0o640)")
    return nan_path, image


def reference_model(tmp):
    """A 10-class torchvision AlexNet (seed 2), its weights by torch.save, and a 250x230 noise PNG."""
    torch.manual_seed(2)
    model = torchvision.models.alexnet(num_classes=10).eval()
    image = os.path.join(tmp, "noise.png")
    from PIL import Image
    Image.fromarray((torch.rand(230, 250, 3) * 255).byte().numpy()).save(image)
    pth = os.path.join(tmp, "ts_ref.pth")
    torch.save(model.state_dict(), pth)
    return model, pth, image


def torchvision_logits(model, image):
    """torchvision's logits for `image`, fed as predict feeds weights without a transform:
    torchvision's ImageNet evaluation transform on the RGB image."""
    from PIL import Image
    from torchvision import transforms
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    with torch.no_grad():
        return model(tf(Image.open(image).convert("RGB")).unsqueeze(0))[0]  # (classes,)


def torchscript_without_code(tmp):
    print("-- TorchScript archives load from data.pkl alone, logits as torchvision's")
    model, pth, image = reference_model(tmp)
    x = torch.rand(1, 3, 224, 224)
    archives = {"scripted": torch.jit.script(model), "traced": torch.jit.trace(model, x)}
    ref = logits_of(pth, image)
    # predict's logits (printed with 9 significant digits) against torchvision's own: the same
    # pixels through the same network, so within 1e-4 of the largest logit (measured 2e-7 of it).
    # These random weights' logits are near 0.02, so an absolute 1e-4 would pass a resize without
    # antialiasing (1.7e-5 off), which this bound does not.
    want = torchvision_logits(model, image)
    bound = 1e-4 * want.abs().max().item()
    if ref is None:
        check(False, "predict on the .pth gave no logits to compare with torchvision's")
    else:
        got = torch.tensor([logit for _, logit in ref])
        diff = (got - want).abs().max().item()
        check([i for i, _ in ref] == list(range(len(want))) and diff <= bound,
              f"predict on the .pth: logits as torchvision's, max |diff| {diff:.3g} (bound {bound:.3g}: "
              f"1e-4 of the largest logit)")
    # Memory: the file and the model are never both resident, whatever the format. Both at once
    # would be 2x the weights over the floor; one is 1x plus the allocator's and the archive's own
    # (measured 1.20x for .pth and 1.20x to 1.26x for a scripted archive), so the bound is 1.5x.
    floor = floor_mib()
    model_mib = sum(t.numel() * 4 for t in model.state_dict().values()) / 2**20
    for kind, module in archives.items():
        module.save(os.path.join(tmp, f"ts_{kind}.pt"))
    for path in (pth, os.path.join(tmp, "ts_scripted.pt")):
        code, _, _, _, mib = run_measured("predict", "--weights", path, image)
        check(code == 0 and mib - floor < 1.5 * model_mib,
              f"predict {os.path.basename(path)} peaks at {mib:.0f} MiB: {mib - floor:.0f} over a refused "
              f"file's {floor:.0f}, for {model_mib:.0f} MiB of weights (bound 1.5x: never file and model at once)")
    for kind, module in archives.items():
        path = os.path.join(tmp, f"ts_{kind}.pt")
        check(logits_of(path, image) == ref, f"{kind} archive ({torch.__version__}): logits identical to the .pth's")
        # The same archive with its code replaced by something that cannot run.
        broken = os.path.join(tmp, f"ts_{kind}_nocode.pt")
        rewrite_zip(path, broken, lambda name, data: b"raise RuntimeError('never run')\n" if "/code/" in name else data)
        check(logits_of(broken, image) == ref, f"{kind} archive with its code/ replaced: logits identical")
    return model, pth, image


LOGITS = {}


def logits_of(weights, image):
    """Every class's logit for `image` from `predict --json` (cached per file), or None."""
    if (weights, image) not in LOGITS:
        LOGITS[weights, image] = predict_logits(weights, image)
    return LOGITS[weights, image]


def predict_logits(weights, image):
    # One thread: a weights load's NaN scan on two OpenMP threads took 50 s instead of 1 on a
    # machine busy with other tests.
    code, out, err, _ = run("predict", "--weights", weights, *FP32, "--threads", "1", "--json", "--topk", "0",
                            image)
    if code != 0:
        print(f"     predict --weights {weights}: exit {code}: {err.strip()[:200]}")
        return None
    return sorted((t["index"], t["logit"]) for t in json.loads(out.splitlines()[0])["top"])


CLASS_NAMES = [f"kind {i}" for i in range(10)]


def export_safetensors(tmp, pth):
    """`alexnet export` of pth to .safetensors with CLASS_NAMES as its labels; the file's path."""
    out = os.path.join(tmp, "ours.safetensors")
    labels = os.path.join(tmp, "labels.txt")
    write(labels, ("\n".join(CLASS_NAMES) + "\n").encode())
    code, _, err, _ = run("export", "--weights", pth, "--output", out, "--labels", labels)
    check(code == 0, f"export --output .safetensors: exit {code} {err.strip()[:120]}")
    return out


def safetensors_ours(tmp, pth, image):
    print("-- safetensors written and read by alexnet")
    out = export_safetensors(tmp, pth)
    check(logits_of(out, image) == logits_of(pth, image) and logits_of(out, image) is not None,
          "our .safetensors predicts as the .pth does")
    code, text, _, _ = run("predict", "--weights", out, image)
    check(code == 0 and "kind " in text, "predict names classes from the file's metadata")


def safetensors_python(tmp, safe_open, load_file, save_file):
    print("-- safetensors both ways with Python's safetensors package")
    model, pth, image = reference_model(tmp)
    out = export_safetensors(tmp, pth)
    theirs = load_file(out)
    state = model.state_dict()
    same = list(theirs) == list(state) and all(
        theirs[k].dtype == v.dtype and torch.equal(theirs[k], v) for k, v in state.items())
    check(same, "safetensors.torch.load_file reads our file bit for bit, torchvision's names in order")
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    check(meta.get("architecture") == "alexnet" and json.loads(meta.get("classes", "[]")) == CLASS_NAMES
          and meta.get("num_classes") == "10", f"metadata carries architecture and classes: {meta}")
    # Python's file, with a wrapper prefix and bfloat16 data, read by us.
    py = os.path.join(tmp, "python.safetensors")
    save_file({"model." + k: v.to(torch.bfloat16) for k, v in state.items()}, py)
    bf = os.path.join(tmp, "bf16.pth")
    torch.save({k: v.to(torch.bfloat16) for k, v in state.items()}, bf)
    check(logits_of(py, image) == logits_of(bf, image) and logits_of(py, image) is not None,
          "Python's bfloat16 'model.'-prefixed safetensors predicts as the same .pth")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", required=True, choices=("attacks", "loading", "safetensors-python"))
    part = parser.parse_args().part
    with tempfile.TemporaryDirectory() as tmp:
        if part == "attacks":
            attacks(tmp)
            nonfinite_and_modes(tmp)
        elif part == "loading":
            model, pth, image = torchscript_without_code(tmp)
            safetensors_ours(tmp, pth, image)
        else:
            try:
                from safetensors import safe_open
                from safetensors.torch import load_file, save_file
            except ImportError as e:
                print(f"skipped: the safetensors package is not installed for this Python ({e}; Debian has "
                      "none, the PyPI flavour's environment has it)")
                sys.exit(SKIPPED)
            safetensors_python(tmp, safe_open, load_file, save_file)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
