#!/usr/bin/python3
"""Model speed against PyTorch: the same workloads in Python (torchvision's AlexNet,
eager mode) and in `alexnet bench --json`, alternating, several repetitions, on the
same machine with the same thread count and batch size; prints a markdown table of
medians and ratios (alexnet / PyTorch) with the issue's targets.

Every measurement runs in a fresh process on both sides (the Python side re-runs
this script with --worker), so start-up costs and memory are comparable. Within a
repetition the two sides run back to back, the order flipping every repetition, and
the ratio is the median of the per-repetition ratios: a noisy shared machine hits
both sides of a pair alike.

Workloads (--workloads, comma separated; --quick picks a set that runs in minutes):
  matmul           2048x2048 fp32 matrix product, GFLOP/s (the machine's reference rate)
  infer-fp32       inference, batch 64, 224x224: PyTorch eager fp32 NCHW vs alexnet fp32
  infer-fp32-cl    the same with PyTorch in channels-last too (like for like)
  infer-bf16       PyTorch eager fp32 NCHW vs alexnet --precision bf16
  infer-bf16-bf16  PyTorch bf16 weights + channels-last vs alexnet bf16 (like for like)
  infer-batch1     batch 1: latency and peak resident memory
  train-fp32       one training step (SGD, momentum), batch 128, 64x64, 10 classes (the
                   main job's shape): PyTorch fp32 vs alexnet fp32
  train-bf16       PyTorch fp32 vs alexnet bf16 autocast (fp32 master weights)
  train224-fp32    training step at 224x224, batch 32, 1000 classes
  e2e-eval         JPEG folder (ImageNet-like 500x375 photos) -> Resize 256 + CenterCrop 224
                   -> model -> argmax; torchvision ImageFolder + DataLoader vs alexnet, 2 workers
  e2e-train-fp32   Fashion-MNIST training images (padded crop, resize 64, flip) -> training
                   steps; torchvision FashionMNIST + DataLoader vs alexnet, 2 workers
  e2e-train-bf16   the same with alexnet in bf16 (PyTorch stays fp32)
  infer-fp16, train-fp16, train-bf16-amp   like for like on CUDA (--device cuda): both
                   sides in fp16 (loss scaling for training) or bf16 autocast
  scaling          alexnet only: end-to-end evaluation of 1,000 and 10,000 JPEGs
  agreement        alexnet only: top-1 agreement of bf16 with fp32 on the 10,000 Fashion-MNIST
                   test images, with weights from a short `alexnet train` (or --weights)

Usage: /usr/bin/python3 scripts/bench_vs_pytorch.py [--binary build/app/alexnet] [--quick | --full]
       [--workloads infer-fp32,train-fp32] [--repeat 3] [--threads N] [--device cpu|cuda]
       [--python-env OPENBLAS_CORETYPE=CooperLake]
On CUDA both sides run fp32 without TF32 (alexnet's fp32 is strict fp32 there).
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def workload(kind, batch, py, cpp, target=None, **extra):
    """One WORKLOADS entry: py and cpp are each side's (precision, channels_last)."""
    w = dict(kind=kind, batch=batch, **extra, py=dict(precision=py[0], channels_last=py[1]),
             cpp=dict(precision=cpp[0], channels_last=cpp[1]))
    if target is not None:
        w["target"] = target
    return w


# name: what runs on each side; target: the minimum ratio (alexnet / PyTorch), if it
# sets one. Columns: kind, batch, PyTorch's (precision, channels_last), alexnet's, target, shape.
EAGER = ("fp32", False)  # PyTorch eager fp32 NCHW, the usual baseline
IMAGENET = dict(size=224, classes=1000)
WORKLOADS = {
    "matmul": dict(kind="matmul", n=2048),
    "infer-fp32": workload("infer", 64, EAGER, ("fp32", "auto"), 1.35, **IMAGENET),
    "infer-fp32-cl": workload("infer", 64, ("fp32", True), ("fp32", "on"), **IMAGENET),
    "infer-bf16": workload("infer", 64, EAGER, ("bf16", "auto"), 5.5, **IMAGENET),
    "infer-bf16-bf16": workload("infer", 64, ("bf16", True), ("bf16", "on"), **IMAGENET),
    "infer-batch1": workload("infer", 1, EAGER, ("fp32", "auto"), iters=20, **IMAGENET),
    "train-fp32": workload("train", 128, EAGER, ("fp32", "auto"), 1.05, size=64, classes=10),
    "train-bf16": workload("train", 128, EAGER, ("bf16", "auto"), 2.5, size=64, classes=10),
    "train224-fp32": workload("train", 32, EAGER, ("fp32", "auto"), 1.05, **IMAGENET),
    "e2e-eval": workload("e2e-infer", 64, EAGER, ("auto", "auto"), 2.0, workers=2),
    "e2e-train-fp32": workload("e2e-train", 128, EAGER, ("fp32", "auto"), 1.2, workers=2),
    "e2e-train-bf16": workload("e2e-train", 128, EAGER, ("bf16", "auto"), 2.5, workers=2),
    "infer-fp16": workload("infer", 64, ("fp16", True), ("fp16", "on"), **IMAGENET),
    "train-fp16": workload("train", 128, ("fp16", True), ("fp16", "on"), **IMAGENET),
    "train-bf16-amp": workload("train", 128, ("bf16", True), ("bf16", "on"), **IMAGENET),
    "scaling": dict(kind="scaling", batch=64, workers=2),
    "agreement": dict(kind="agreement"),
}
QUICK = ["matmul", "infer-fp32", "infer-bf16", "infer-batch1", "train-fp32", "train-bf16",
         "e2e-eval", "e2e-train-fp32"]
GPU = ["matmul", "infer-fp32", "infer-bf16-bf16", "infer-fp16", "infer-batch1", "train224-fp32",
       "train-bf16-amp", "train-fp16", "e2e-eval"]
FULL = ["matmul", "infer-fp32", "infer-fp32-cl", "infer-bf16", "infer-bf16-bf16", "infer-batch1",
        "train-fp32", "train-bf16", "train224-fp32", "e2e-eval", "e2e-train-fp32",
        "e2e-train-bf16", "scaling", "agreement"]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------- Python side (--worker)

def dtype_of(precision):
    import torch
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def py_model(classes, precision, channels_last, train, device):
    import torch
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.alexnet(num_classes=classes).to(device)
    model.train(train)
    if not train:
        model = model.to(dtype_of(precision))  # low-precision weights; training autocasts
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def py_input(x, precision, channels_last, device):
    import torch
    x = x.to(device, non_blocking=True).to(dtype_of(precision))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class PyStep:
    """One training step as alexnet's: SGD (momentum 0.9, weight decay 5e-4), autocast for
    bf16/fp16 with fp32 master weights, GradScaler for fp16."""

    def __init__(self, model, precision, device):
        import torch
        self.model, self.precision, self.device = model, precision, device
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.scaler = torch.cuda.amp.GradScaler(enabled=precision == "fp16")

    def __call__(self, x, y):
        import torch
        import torch.nn.functional as F
        self.opt.zero_grad(set_to_none=True)
        low = self.precision != "fp32"
        with torch.autocast(self.device.split(":")[0], dtype=dtype_of(self.precision) if low else None,
                            enabled=low):
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss


def timed(device, spec, fn):
    """Per-iteration seconds of fn after the warm-up iterations (synchronised on CUDA)."""
    import torch
    times = []
    for i in range(spec["warmup"] + spec["iters"]):
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def py_worker(spec):
    import torch
    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        # alexnet's fp32 on CUDA is strict fp32; so is this side's.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    kind, cfg = spec["kind"], spec.get("py", {})
    precision, cl = cfg.get("precision", "fp32"), cfg.get("channels_last", False)
    out = {"threads": torch.get_num_threads()}
    if kind == "matmul":
        n = spec["n"]
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        out["gflops"] = 2 * n ** 3 / timed(device, spec, lambda: torch.mm(a, b)) / 1e9
    elif kind in ("infer", "train"):
        train = kind == "train"
        model = py_model(spec["classes"], precision, cl, train, device)
        x = torch.randn(spec["batch"], 3, spec["size"], spec["size"])
        if train:
            x = py_input(x, "fp32", cl, device)
            y = torch.randint(spec["classes"], (spec["batch"],)).to(device)
            step = PyStep(model, precision, device)
            seconds = timed(device, spec, lambda: step(x, y))
        else:
            x = py_input(x, precision, cl, device)
            with torch.inference_mode():
                seconds = timed(device, spec, lambda: model(x))
        out["img_per_s"] = spec["batch"] / seconds
    elif kind == "e2e-infer":
        import torchvision
        from torchvision import transforms
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                 transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
        ds = torchvision.datasets.ImageFolder(spec["folder"], tf)
        model = py_model(len(ds.classes), precision, cl, False, device)
        with torch.inference_mode():
            model(py_input(torch.zeros(spec["batch"], 3, 224, 224), precision, cl, device))  # warm-up
            start = time.perf_counter()
            loader = torch.utils.data.DataLoader(ds, batch_size=spec["batch"], shuffle=False,
                                                 num_workers=spec["workers"],
                                                 pin_memory=device.startswith("cuda"))
            n = 0
            for images, _ in loader:
                n += model(py_input(images, precision, cl, device)).argmax(1).cpu().shape[0]
        out["img_per_s"] = n / (time.perf_counter() - start)
    elif kind == "e2e-train":
        import torchvision
        from torchvision import transforms
        tf = transforms.Compose([
            transforms.RandomCrop(28, padding=2), transforms.Resize(64),
            transforms.RandomHorizontalFlip(), transforms.Grayscale(num_output_channels=3),
            transforms.ToTensor(), transforms.Normalize([FASHION_MEAN] * 3, [FASHION_STD] * 3)])
        # torchvision checks for the test files too; only the training files are read.
        torchvision.datasets.FashionMNIST._check_exists = lambda self: True
        ds = torchvision.datasets.FashionMNIST(spec["fashion_root"], train=True, transform=tf)
        ds = torch.utils.data.Subset(ds, range(spec["limit"]))
        model = py_model(10, precision, cl, True, device)
        step = PyStep(model, precision, device)
        step(py_input(torch.zeros(spec["batch"], 3, 64, 64), "fp32", cl, device),
             torch.zeros(spec["batch"], dtype=torch.int64, device=device))  # warm-up
        start = time.perf_counter()
        loader = torch.utils.data.DataLoader(ds, batch_size=spec["batch"], shuffle=True,
                                             drop_last=True, num_workers=spec["workers"],
                                             pin_memory=device.startswith("cuda"))
        n = 0
        for images, labels in loader:
            step(py_input(images, "fp32", cl, device), labels.to(device, non_blocking=True)).item()
            n += images.shape[0]
        out["img_per_s"] = n / (time.perf_counter() - start)
    out["peak_rss_mb"] = peak_rss_mb()
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        out["cuda_used_mb"] = (total - free) / 2 ** 20
    print(json.dumps(out))


# ----------------------------------------------------------------- driver

class RunFailed(Exception):
    pass


def run_json(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RunFailed(f"exit status {r.returncode}: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_python(spec, env):
    return run_json([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)], env)


def run_cpp(binary, spec, folder=None, fashion=None):
    cmd = [binary, "bench", "--json", "--threads", str(spec["threads"]), "--device", spec["device"]]
    cfg = spec.get("cpp", {})
    if "precision" in cfg:
        cmd += ["--precision", cfg["precision"], f"--channels-last={cfg['channels_last']}"]
    kind = spec["kind"]
    if kind == "matmul":
        cmd += ["--mode", "matmul", "--matrix-size", str(spec["n"]), "--precision", "fp32"]
    if kind in ("matmul", "infer", "train"):
        cmd += ["--warmup", str(spec["warmup"]), "--iters", str(spec["iters"])]
    if kind in ("infer", "train"):
        cmd += ["--mode", kind, "--batch-size", str(spec["batch"]), "--image-size", str(spec["size"]),
                "--num-classes", str(spec["classes"])]
    if kind == "e2e-infer":
        cmd += ["--mode", "infer", "--data", spec["folder"], "--batch-size", str(spec["batch"]),
                "--workers", str(spec["workers"]), "--repeat", "1"]
    if kind == "e2e-train":
        cmd += ["--mode", "train", "--data", "fashion-mnist", "--split", "train",
                "--limit", str(spec["limit"]), "--batch-size", str(spec["batch"]),
                "--workers", str(spec["workers"]), "--repeat", "1"]
    return run_json(cmd)


def make_jpeg_folder(root, count):
    sys.path.insert(0, HERE)
    from bench_data import make_folder  # the ImageNet-like photos scripts/bench_data.py uses
    make_folder(root, count)


def link_copies(src, dst, count):
    """An ImageFolder of `count` JPEGs made of hard links to src's files (decoding cost alike)."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)
    for i in range(count):
        f = files[i % len(files)]
        d = os.path.join(dst, os.path.basename(os.path.dirname(f)))
        os.makedirs(d, exist_ok=True)
        os.link(f, os.path.join(d, f"{i:06d}.jpg"))


def fashion_root(tmp):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
    from fixture import unpack_fashion_mnist  # the layout tests/make_data_reference.py makes too
    return unpack_fashion_mnist(os.path.join(tmp, "fashion"), "train")


def machine_description():
    import torch
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    bf16 = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f") if f in flags]
    return (f"{model}, {len(os.sched_getaffinity(0))} CPUs available, flags: "
            f"{' '.join(bf16) or 'no AVX-512/bf16'}; {platform.platform()}; "
            f"Python torch {torch.__version__} (threads {torch.get_num_threads()} by default)")


def fmt_rate(x):
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def describe_py(cfg):
    return f"eager {cfg['precision']} {'channels-last' if cfg['channels_last'] else 'NCHW'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default="build/app/alexnet")
    parser.add_argument("--workloads", help="comma-separated names (default: --quick's set)")
    parser.add_argument("--quick", action="store_true", help="a set that runs in a few minutes")
    parser.add_argument("--full", action="store_true", help="every workload")
    parser.add_argument("--repeat", type=int, default=3, help="alternating pairs per workload")
    parser.add_argument("--iters", type=int, default=0,
                        help="timed iterations per run (0: 5, or 3 with --quick; matmul 10)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both sides)")
    parser.add_argument("--images", type=int, default=0, help="JPEGs for e2e-eval (0: 300, 200 with --quick)")
    parser.add_argument("--train-images", type=int, default=0,
                        help="Fashion-MNIST images for e2e-train (0: 2560, 1280 with --quick)")
    parser.add_argument("--weights", help="agreement: trained 10-class weights (default: train briefly)")
    parser.add_argument("--python-env", action="append", default=[], metavar="VAR=VALUE",
                        help="environment for the Python side only (e.g. OPENBLAS_CORETYPE=CooperLake)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        py_worker(json.loads(args.worker))
        return

    args.iters = args.iters or (3 if args.quick else 5)
    args.images = args.images or (200 if args.quick else 300)
    args.train_images = args.train_images or (1280 if args.quick else 2560)
    default = GPU if args.device.startswith("cuda") else QUICK
    names = (FULL if args.full else args.workloads.split(",") if args.workloads else default)
    for n in names:
        if n not in WORKLOADS:
            sys.exit(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)}")
    py_env = dict(os.environ)
    for kv in args.python_env:
        k, _, v = kv.partition("=")
        py_env[k] = v
    started = time.time()
    load_start = os.getloadavg()[0]
    print(f"machine: {machine_description()}")
    if args.device.startswith("cuda"):
        import torch
        print(f"GPU: {torch.cuda.get_device_name(args.device)} (PyTorch CUDA {torch.version.cuda})")
    print(f"threads {args.threads} on both sides; {args.repeat} alternating pairs per workload; "
          f"Python environment additions: {' '.join(args.python_env) or 'none'}")

    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "jpegs")
        if any(WORKLOADS[n]["kind"] in ("e2e-infer", "scaling") for n in names):
            make_jpeg_folder(folder, args.images)
        fashion = fashion_root(tmp) if any(WORKLOADS[n]["kind"] == "e2e-train" for n in names) else None
        matmul = {}
        infer_fp32_gflops = None
        for name in names:
            w = dict(WORKLOADS[name], threads=args.threads, device=args.device)
            kind = w["kind"]
            w.setdefault("warmup", 1 if kind != "matmul" else 2)
            w.setdefault("iters", 10 if kind == "matmul" else args.iters)
            if kind == "e2e-infer":
                w["folder"] = folder
            if kind == "e2e-train":
                w["fashion_root"], w["limit"] = fashion, args.train_images
            try:
                infer_fp32_gflops = measure(args, name, w, py_env, folder, tmp, rows, notes,
                                            matmul) or infer_fp32_gflops
            except (RunFailed, subprocess.CalledProcessError) as e:
                print(f"  {name} failed: {e}", flush=True)
                notes.append(f"{name}: failed ({str(e).splitlines()[0]})")

    print()
    print()
    print("| workload | shape | PyTorch | alexnet | PyTorch img/s | alexnet img/s | ratio | alexnet GFLOP/s | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    if matmul:
        print()
        print(f"2048x2048 fp32 matmul: PyTorch {matmul['py']:.1f} GFLOP/s, alexnet bench --mode matmul "
              f"{matmul['cpp']:.1f} GFLOP/s (OpenBLAS kernels: {matmul['blas'] or 'n/a'})")
        if infer_fp32_gflops:
            best = max(matmul["py"], matmul["cpp"])
            share = infer_fp32_gflops / best
            print(f"fp32 inference achieves {infer_fp32_gflops:.0f} GFLOP/s = {100 * share:.0f}% of the "
                  f"faster matmul rate (target >= 85%: {'met' if share >= 0.85 else 'missed'})")
    for note in notes:
        print(note)
    print(f"\nload average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
          f"{time.time() - started:.0f} s in all")


def measure(args, name, w, py_env, folder, tmp, rows, notes, matmul):
    """Runs one workload's alternating pairs; appends its table row or notes. Returns the
    achieved GFLOP/s of infer-fp32 (for the matmul comparison), else None."""
    kind = w["kind"]
    if kind == "scaling":
        scaling(args, w, folder, tmp, notes)
        return None
    if kind == "agreement":
        agreement(args, tmp, notes)
        return None
    py_runs, cpp_runs, ratios = [], [], []
    key = "gflops" if kind == "matmul" else "img_per_s"
    for r in range(args.repeat):
        pair = {}
        for side in (("py", "cpp") if r % 2 == 0 else ("cpp", "py")):
            pair[side] = run_python(w, py_env) if side == "py" else run_cpp(args.binary, w)
        py_runs.append(pair["py"])
        cpp_runs.append(pair["cpp"])
        ratios.append(pair["cpp"][key] / pair["py"][key])
        print(f"  {name} run {r + 1}: PyTorch {pair['py'][key]:.1f}, alexnet {pair['cpp'][key]:.1f}"
              f" {'GFLOP/s' if kind == 'matmul' else 'img/s'}", flush=True)
    py_med = statistics.median(x[key] for x in py_runs)
    cpp_med = statistics.median(x[key] for x in cpp_runs)
    ratio = statistics.median(ratios)
    last = cpp_runs[-1]
    if kind == "matmul":
        matmul.update(py=py_med, cpp=cpp_med, blas=last.get("blas", ""))
        return None
    gflops = statistics.median(x["gflops"] for x in cpp_runs)
    target = w.get("target")
    verdict = "" if target is None else ("met" if ratio >= target else "**missed**")
    py_cfg = describe_py(w["py"])
    if kind.startswith("e2e"):
        py_cfg = ("ImageFolder + DataLoader, " if kind == "e2e-infer" else
                  "FashionMNIST + DataLoader, ") + py_cfg
    shape = (f"batch {w['batch']}, {w['size']}x{w['size']}" if "size" in w else
             f"batch {w['batch']}, {w['workers']} workers")
    rows.append(f"| {name} | {shape} | {py_cfg} | {last['compute']} | {fmt_rate(py_med)} | "
                f"{fmt_rate(cpp_med)} | {ratio:.2f}x | {gflops:.0f} | "
                f"{'' if target is None else f'>= {target}x'} {verdict} |")
    if kind == "infer" and w["batch"] == 1:
        py_rss = statistics.median(x["peak_rss_mb"] for x in py_runs)
        cpp_rss = statistics.median(x["peak_rss_mb"] for x in cpp_runs)
        weights_mb = 61100840 * 4 / 2 ** 20
        notes.append(f"batch 1 peak resident memory: alexnet {cpp_rss:.0f} MiB "
                     f"(target <= 2 x {weights_mb:.0f} MiB = {2 * weights_mb:.0f} MiB: "
                     f"{'met' if cpp_rss <= 2 * weights_mb else 'missed'}), "
                     f"PyTorch process {py_rss:.0f} MiB")
        if args.device.startswith("cuda"):
            notes.append(f"batch 1 GPU memory in use (context + cache): alexnet "
                         f"{last.get('cuda_used_mb') or 0:.0f} MiB, PyTorch "
                         f"{py_runs[-1].get('cuda_used_mb', 0):.0f} MiB")
    return gflops if name == "infer-fp32" else None


def scaling(args, w, folder, tmp, notes):
    """alexnet only: end-to-end evaluation img/s at 1,000 and 10,000 images."""
    for count in (1000, 10000):
        d = os.path.join(tmp, f"scaling{count}")
        link_copies(folder, d, count)
        r = run_cpp(args.binary, dict(w, kind="e2e-infer", folder=d))
        notes.append(f"end-to-end evaluation of {count} JPEGs: alexnet {r['img_per_s']:.1f} img/s "
                     f"({r['compute']}, {r['median_s']:.1f} s)")


def agreement(args, tmp, notes):
    """alexnet only: top-1 agreement of bf16 with fp32 on the Fashion-MNIST test set."""
    weights = args.weights
    if not weights:
        out = os.path.join(tmp, "trained")
        subprocess.run([args.binary, "train", "--epochs", "1", "--max-steps", "150", "--print-freq", "0",
                        "--output", out, "--threads", str(args.threads)],
                       check=True, capture_output=True, text=True)
        weights = os.path.join(out, "model.pth")
    preds, top1 = {}, {}
    for precision in ("fp32", "bf16"):
        path = os.path.join(tmp, f"pred_{precision}.txt")
        r = run_json([args.binary, "bench", "--json", "--mode", "infer", "--data", "fashion-mnist",
                      "--split", "val", "--weights", weights, "--precision", precision,
                      "--repeat", "1", "--batch-size", "256", "--predictions", path,
                      "--threads", str(args.threads)])
        with open(path) as f:
            preds[precision] = [int(line) for line in f]
        top1[precision] = r["top1"]
    same = sum(a == b for a, b in zip(preds["fp32"], preds["bf16"]))
    share = same / len(preds["fp32"])
    notes.append(f"bf16 vs fp32 top-1 agreement on the {len(preds['fp32'])} Fashion-MNIST test images: "
                 f"{100 * share:.2f}% (target >= 99%: {'met' if share >= 0.99 else 'missed'}); "
                 f"top-1 fp32 {100 * top1['fp32']:.2f}%, bf16 {100 * top1['bf16']:.2f}%")


if __name__ == "__main__":
    main()
