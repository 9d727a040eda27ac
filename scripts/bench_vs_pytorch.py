#!/usr/bin/env python3
"""Model speed against what a user would pick today: every workload is measured for several
anchors (PyTorch 2.x eager, channels-last and torch.compile, ONNX Runtime fp32 and int8,
OpenVINO fp32, bf16 and int8, and Debian's PyTorch 1.13 as history) and for our
`alexnet bench --json` binaries, alternating, several repetitions, on the same machine with
the same thread count and batch size. Prints the machine and its CPU class, the versions, a
markdown table of medians with, for each of our binaries, its ratio against the best anchor
in the row's precision and the issue's target, then notes.

    ~/.cache/alexnet/venv-pypi/bin/python scripts/bench_vs_pytorch.py [--quick | --full]

The anchors' runtimes are not the project's dependencies: install them into the PyPI virtual
environment with

    ~/.cache/alexnet/venv-pypi/bin/pip install -r scripts/requirements-bench.txt

(onnx, onnxruntime and openvino, at the versions last measured with; `pip install onnx
onnxruntime openvino` takes today's). scripts/test.sh does not install them. An anchor whose
package is missing is reported unavailable and the run goes on without it.

Every measurement runs in a fresh process on every side (each anchor runs
scripts/bench_anchors.py under its own interpreter), so start-up costs and memory are
comparable. Within a repetition every side runs once, back to back, in an order reversed
every other repetition. The best anchor of a row is the one with the best median; a ratio is
the median of the per-repetition ratios ours / best anchor (a noisy shared machine hits both
sides of a pair alike), > 1 meaning ours is faster (for latency: best ms / ours ms).

Every row compares one precision (its "precision" column): ours runs `alexnet bench --precision
P` and every anchor of the row computes in P (fp32 rows: PyTorch fp32, ort, ov-f32; bf16 rows:
PyTorch with bf16 weights, ov-default; int8 rows: ort-int8, ov-int8). Each side's JSON says
what it ran; one that ran another precision (OpenVINO's default on a CPU without bf16, ours'
bf16 where it falls back to fp32) shows "ran fp32" in its cell and is left out of the ratios.

Anchors (--anchors, comma separated, restricts them):
  torch113  Debian's PyTorch 1.13 eager, NCHW fp32 (interpreter /usr/bin/python3, --python-113):
            history, usually the slowest, but it competes for the best anchor like the others
  eager     PyTorch 2.x eager fp32 NCHW, interpreter of the PyPI virtual environment
            ${ALEXNET_VENV:-${XDG_CACHE_HOME:-~/.cache}/alexnet/venv-pypi}/bin/python (--python;
            without it, the interpreter running this script)
  eager-cl  the same, model and input channels-last
  compile   torch.compile(model), default mode (inductor; static shapes). Its first call(s)
            compile and are not timed: the notes give their seconds (inductor's on-disk cache
            makes later processes faster). Training compiles forward and backward (AOTAutograd).
            If it cannot compile here (no C++ compiler, ...) the row says failed, the notes say
            why, and the run goes on.
  ort       ONNX Runtime fp32: torchvision's AlexNet through torch.onnx.export (TorchScript
            exporter, dynamic batch), ORT_ENABLE_ALL, intra-op threads = --threads, inter-op 1,
            CPU provider. Export happens once, untimed. Model-only inference rows only.
  ort-int8  ONNX Runtime static int8: quant_pre_process, then quantize_static (QDQ, per channel,
            QUInt8 activations, QInt8 weights), calibrated on 32 random-normal images (seed 0,
            the benchmark input's kind: the model-only rows have no real images). int8 rows only.
  ov-f32    OpenVINO (package openvino) on the ONNX model ort runs, read with the row's static
            batch and compiled for "CPU" with NUM_STREAMS 1, INFERENCE_NUM_THREADS = --threads,
            PERFORMANCE_HINT LATENCY at batch 1 and THROUGHPUT above, INFERENCE_PRECISION_HINT
            f32. fp32 model-only inference rows.
  ov-default  the same without a precision hint: OpenVINO's own choice, bf16 on CPUs with AMX
            or AVX512-BF16. The notes say what it chose and what each kind of layer ran; it
            takes part in bf16 rows (infer-bf16-bf16) when it chose bf16. It chooses from the
            CPU's flags even under --python-env ONEDNN_MAX_CPU_ISA=..., a cap its kernels obey:
            capped at AVX-512, bf16 then runs emulated (tens of times slower), at AVX2 the
            model does not compile.
  ov-int8   the same on ort-int8's QDQ model, INFERENCE_PRECISION_HINT f32 for whatever the
            model leaves unquantised (as ONNX Runtime and ours keep fp32). int8 rows only.
Ours: --binary PATH, repeatable (default: build-pypi/app/alexnet and build/app/alexnet, those
that exist), each a column labelled by the LibTorch version its --version reports, run as
`alexnet bench --json --mode infer|train --precision fp32|bf16|int8 --channels-last=auto ...`
(the row's mode and precision; channels-last on in bf16; int8 without weights calibrates on
its own random batch). The CPU class printed (AVX2, AVX-512, AVX-512 VNNI, AMX) is the one the first binary's
--version names.

Workloads (--workloads, comma separated), img/s unless stated. Training rows run alexnet's
`main` recipe on every side (RECIPE below: SGD lr 0.06, momentum 0.9, Nesterov, weight decay
5e-4, label smoothing 0.1, gradients clipped to total norm 2, dropout 0.1), given to ours as
explicit flags so that a change of its defaults cannot desynchronise the sides.
  matmul      2048x2048 fp32 matrix product, GFLOP/s (the machine's reference rate)
  infer-b64   model-only inference, batch 64, 224x224, 1000 classes, fp32       target >= 1.15x
  infer-b1    the same at batch 1, plus a latency row (ms per image, median)    >= 1.15x both
  train224    one training step, batch 64, 224x224, 1000 classes               >= 1.10x
  train-main  the main job's step: batch 128, 64x64, 10 classes                 >= 1.10x
  e2e-eval    a JPEG folder (ImageNet-like 500x375 photos, --images) -> Resize 256 + CenterCrop
              224 -> model -> argmax, batch 64, 2 loader workers; torchvision's ImageFolder +
              DataLoader feeding torch113, eager and compile                   >= 2x
  e2e-train   a JPEG folder (--train-images) -> RandomResizedCrop 224 + flip -> training steps,
              batch 64, 2 workers, the same anchors                            >= 1.5x
  int8-b64    inference, batch 64, 224x224: ours --precision int8 against the best of ort-int8
              and ov-int8 (>= 1.15x), and against ours in fp32 (>= 2x); a binary without int8
              shows "n/a"
  int8-b1     the same at batch 1, against ort-int8 and ov-int8                 >= 1.15x
  main-job    ours only, opt-in (--main-job; about 10 minutes a binary): `alexnet train` with
              its defaults (Fashion-MNIST), the wall time until the test top-1 first reaches
              90% (<= 8 minutes); --main-job-args adds flags (a short check: '--epochs 1
              --max-steps 20')
  scaling     ours only: end-to-end evaluation of 1,000 and 10,000 JPEGs (--scaling-counts)
  agreement   ours only: top-1 agreement of bf16 and int8 with fp32 on the Fashion-MNIST test images
              (--agreement-images), weights from a short `alexnet train` (or --weights)
  infer-bf16-bf16, infer-fp16, train-bf16-amp, train-fp16   like for like in low precision:
              the PyTorch 2.x anchors with bf16/fp16 weights (autocast for training, loss
              scaling in fp16), ours the same; fp16 on CUDA only. On the CPU infer-bf16-bf16
              also has ov-default (when OpenVINO chose bf16), target >= 1.15x
  infer-bf16-b1   infer-bf16-bf16 at batch 1                                    >= 1.15x
Earlier names still work: infer-fp32 and infer-fp32-cl (infer-b64), infer-batch1 (infer-b1),
train-fp32 (train-main), train224-fp32 (train224), e2e-train-fp32 (e2e-train).

Sets: by default matmul to int8-b64 above, and infer-bf16-bf16. --quick: matmul, infer-b64,
infer-b1, train-main, int8-b64 and infer-bf16-bf16 with --iters 3 --repeat 2: 69 fresh processes
with one binary of ours (15 more for each further one), about 7 minutes on a 2-core machine where
importing PyPI's torch alone takes 6 s a process. --full: the default rows plus scaling and
agreement (main-job only with --main-job). On a CPU without bf16 instructions the sets leave
infer-bf16-bf16 out (PyTorch would emulate bf16, ours would run fp32). --device cuda: matmul,
infer-b64, infer-bf16-bf16, infer-fp16, infer-b1, train224, train-bf16-amp, train-fp16 and
e2e-eval, without the torch113, ONNX Runtime and OpenVINO anchors; every side runs fp32
without TF32 there (alexnet's fp32 is strict fp32).

Exit status 1 when a run of ours failed (a missing int8 is "n/a", not a failure); an anchor
that cannot run here and a missed target are findings, reported, with exit status 0.

Usage: PYTHON scripts/bench_vs_pytorch.py [--binary PATH]... [--quick | --full] [--main-job]
       [--workloads infer-b64,train-main] [--anchors eager,ort,ov-f32] [--repeat 3]
       [--iters N] [--threads N] [--device cpu|cuda] [--images N] [--train-images N]
       [--python PY] [--python-113 PY] [--python-env OPENBLAS_CORETYPE=CooperLake]
The script itself needs only Python's standard library; --python-env sets variables for the
anchors only.
"""
import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ANCHOR_WORKER = os.path.join(HERE, "bench_anchors.py")

# alexnet's `main` recipe (app/engine/train_config.h): the Python step uses these values and
# ours gets them as explicit flags, so a change of our defaults cannot desynchronise the sides.
RECIPE = dict(lr=0.06, momentum=0.9, nesterov=True, wd=5e-4, label_smoothing=0.1,
              clip_grad_norm=2.0, dropout=0.1)
# The QDQ model's calibration set (ort-int8, ov-int8): random-normal images (seed 0), the benchmark
# input's kind, since the model-only rows have no real images; ours calibrates on its own random
# benchmark batch.
CALIBRATION_IMAGES = 32

# Anchor: (interpreter, what it is). "113" runs under --python-113, "2" under --python.
ANCHORS = {
    "torch113": ("113", "eager NCHW (Debian's; history)"),
    "eager": ("2", "eager NCHW"),
    "eager-cl": ("2", "eager, model and input channels-last"),
    "compile": ("2", "torch.compile(model), default mode (inductor)"),
    "ort": ("2", "torch.onnx.export -> ONNX Runtime fp32, ORT_ENABLE_ALL"),
    "ort-int8": ("2", "ONNX Runtime static int8 (quantize_static QDQ, per channel)"),
    "ov-f32": ("2", "the ONNX model -> OpenVINO CPU, INFERENCE_PRECISION_HINT f32"),
    "ov-default": ("2", "the ONNX model -> OpenVINO CPU, its default precision"),
    "ov-int8": ("2", "ort-int8's QDQ model -> OpenVINO CPU (int8)"),
}
ONNX = ("ort", "ort-int8", "ov-f32", "ov-default", "ov-int8")  # run the exported ONNX models
OPENVINO = ("ov-f32", "ov-default", "ov-int8")
INFER = ("torch113", "eager", "eager-cl", "compile", "ort", "ov-f32")
TRAIN = ("torch113", "eager", "eager-cl", "compile")
E2E = ("torch113", "eager", "compile")  # each fed by torchvision's ImageFolder + DataLoader
LOW = ("eager", "eager-cl", "compile")  # low precision: PyTorch 2.x
CPU_ONLY = ("torch113",) + ONNX  # skipped on CUDA
IMAGENET = dict(size=224, classes=1000)

# kind, batch, shape; anchors; precision (every side's, fp32 unless given: each anchor listed
# computes in it);
# ours_cl (ours' --channels-last); iters (a row's own default); target: the issue's minimum
# ratio ours / best anchor; latency: also a latency row with that target; fp32_target: int8
# against our own fp32.
WORKLOADS = {
    "matmul": dict(kind="matmul", n=2048, anchors=("torch113", "eager"), iters=10),
    "infer-b64": dict(kind="infer", batch=64, **IMAGENET, anchors=INFER, target=1.15),
    "infer-b1": dict(kind="infer", batch=1, **IMAGENET, anchors=INFER, target=1.15, latency=1.15,
                     iters=20),
    "train224": dict(kind="train", batch=64, **IMAGENET, anchors=TRAIN, target=1.10),
    "train-main": dict(kind="train", batch=128, size=64, classes=10, anchors=TRAIN, target=1.10),
    "e2e-eval": dict(kind="e2e-infer", batch=64, workers=2, anchors=E2E, target=2.0),
    "e2e-train": dict(kind="e2e-train", batch=64, workers=2, anchors=E2E, target=1.5),
    "int8-b64": dict(kind="infer", batch=64, **IMAGENET, anchors=("ort-int8", "ov-int8"),
                     precision="int8", target=1.15, fp32_target=2.0),
    "int8-b1": dict(kind="infer", batch=1, **IMAGENET, anchors=("ort-int8", "ov-int8"),
                    precision="int8", target=1.15, fp32_target=2.0, iters=20),
    "infer-bf16-bf16": dict(kind="infer", batch=64, **IMAGENET, anchors=LOW + ("ov-default",),
                            precision="bf16", ours_cl="on", target=1.15),
    "infer-bf16-b1": dict(kind="infer", batch=1, **IMAGENET, anchors=LOW + ("ov-default",),
                          precision="bf16", ours_cl="on", target=1.15, iters=20),
    "infer-fp16": dict(kind="infer", batch=64, **IMAGENET, anchors=LOW, precision="fp16", ours_cl="on"),
    "train-bf16-amp": dict(kind="train", batch=128, **IMAGENET, anchors=LOW, precision="bf16",
                           ours_cl="on"),
    "train-fp16": dict(kind="train", batch=128, **IMAGENET, anchors=LOW, precision="fp16", ours_cl="on"),
    "main-job": dict(kind="main-job"),
    "scaling": dict(kind="scaling", batch=64, workers=2),
    "agreement": dict(kind="agreement"),
}
# Earlier names (scripts/gpu_check.sh, BENCHMARKS.md): infer-fp32-cl is now infer-b64's eager-cl
# anchor, e2e-train-fp32 (Fashion-MNIST) became e2e-train (JPEGs at 224 px).
ALIASES = {"infer-fp32": "infer-b64", "infer-fp32-cl": "infer-b64", "infer-batch1": "infer-b1",
           "train-fp32": "train-main", "train224-fp32": "train224", "e2e-train-fp32": "e2e-train"}
DEFAULT = ["matmul", "infer-b64", "infer-b1", "train224", "train-main", "e2e-eval", "e2e-train",
           "int8-b64", "int8-b1", "infer-bf16-bf16", "infer-bf16-b1"]
QUICK = ["matmul", "infer-b64", "infer-b1", "train-main", "int8-b64", "infer-bf16-bf16"]
FULL = DEFAULT + ["scaling", "agreement"]
GPU = ["matmul", "infer-b64", "infer-bf16-bf16", "infer-fp16", "infer-b1", "train224",
       "train-bf16-amp", "train-fp16", "e2e-eval"]
MAIN_JOB_TOP1 = 0.90  # the main job's accuracy target, reached within MAIN_JOB_MINUTES
MAIN_JOB_MINUTES = 8
WEIGHTS_MB = 61100840 * 4 / 2 ** 20  # AlexNet's fp32 parameters, for the batch-1 memory target
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16")  # and every amx_*


class RunFailed(Exception):
    pass


# ----------------------------------------------------------------- running one side

def run_json(cmd, env=None):
    """The JSON object on cmd's last stdout line; RunFailed with the reason otherwise."""
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode != 0:
        # An anchor worker says why on stdout ({"error": ...}); anything else: stderr's tail.
        try:
            reason = json.loads(last)["error"]
        except (ValueError, KeyError, TypeError):
            tail = [line for line in r.stderr.strip().splitlines() if line.strip()]
            reason = tail[-1] if tail else "no output"
        raise RunFailed(f"exit status {r.returncode}: {reason}")
    return json.loads(last)


def run_anchor(python, spec, env):
    if not python:
        raise RunFailed("no interpreter for this anchor")
    return run_json([python, ANCHOR_WORKER, json.dumps(spec)], env)


def recipe_flags(r):
    return ["--lr", str(r["lr"]), "--momentum", str(r["momentum"]), "--wd", str(r["wd"]),
            f"--nesterov={'true' if r['nesterov'] else 'false'}",
            "--label-smoothing", str(r["label_smoothing"]),
            "--clip-grad-norm", str(r["clip_grad_norm"]), "--dropout", str(r["dropout"])]


def run_cpp(binary, spec, precision):
    """`alexnet bench --json` for spec, with --precision precision."""
    cmd = [binary, "bench", "--json", "--threads", str(spec["threads"]), "--device", spec["device"]]
    kind = spec["kind"]
    if kind == "matmul":
        cmd += ["--mode", "matmul", "--matrix-size", str(spec["n"]), "--precision", "fp32"]
    else:
        cmd += ["--precision", precision, f"--channels-last={spec.get('ours_cl', 'auto')}"]
    if kind in ("matmul", "infer", "train"):
        cmd += ["--warmup", str(spec["warmup"]), "--iters", str(spec["iters"])]
    if kind in ("infer", "train"):
        cmd += ["--mode", kind, "--batch-size", str(spec["batch"]), "--image-size", str(spec["size"]),
                "--num-classes", str(spec["classes"])]
    if kind == "e2e-infer":
        cmd += ["--mode", "infer", "--data", spec["folder"], "--batch-size", str(spec["batch"]),
                "--workers", str(spec["workers"]), "--repeat", "1"]
    if kind == "e2e-train":
        # One folder for all splits (no train/ val/ inside): --split train reads all of it.
        cmd += ["--mode", "train", "--data", spec["folder"], "--split", "train",
                "--batch-size", str(spec["batch"]), "--workers", str(spec["workers"]), "--repeat", "1"]
    if kind in ("train", "e2e-train"):
        cmd += recipe_flags(spec["recipe"])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 2 and precision == "int8" and "int8" in r.stderr:
        raise RunFailed("n/a (binary has no int8)")  # a usage error: the flag is not there yet
    if r.returncode != 0:
        tail = [line for line in r.stderr.strip().splitlines() if line.strip()]
        raise RunFailed(f"exit status {r.returncode}: {tail[-1] if tail else 'no output'}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- the machine and the sides

def cpu_model_and_flags():
    model, flags = "?", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return model, flags


def cpu_has_bf16():
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_model_and_flags()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine_description():
    model, flags = cpu_model_and_flags()
    wanted = list(CPU_FLAGS) + sorted(f for f in flags if f.startswith("amx"))
    have = [f for f in wanted if f in flags]
    missing = [f for f in wanted if f not in flags] + ([] if any(f.startswith("amx") for f in flags)
                                                       else ["amx_*"])
    return (f"{model}, {len(os.sched_getaffinity(0))} CPUs available; flags: {' '.join(have) or 'none'}"
            f" (absent: {' '.join(missing) or 'none'}); {platform.platform()}")


def default_python2():
    """The PyPI virtual environment's interpreter (scripts/setup's), else this one."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    venv = os.environ.get("ALEXNET_VENV") or os.path.join(cache, "alexnet", "venv-pypi")
    python = os.path.join(venv, "bin", "python")
    return python if os.path.exists(python) else sys.executable


def probe_interpreters(args, chosen, env):
    """{"2": versions or None, "113": ...} from the interpreters of the chosen anchors (the "2"
    one always: it also makes the JPEG folders); prints failures."""
    found = {}
    for key, python in (("2", args.python), ("113", args.python_113)):
        if key != "2" and not any(ANCHORS[a][0] == key for a in chosen):
            found[key] = None
            continue
        try:
            found[key] = run_anchor(python, dict(kind="versions", device=args.device), env)
        except (RunFailed, OSError) as e:
            print(f"interpreter {python}: unusable for anchors ({str(e).splitlines()[0]})")
            found[key] = None
    return found


def label_binaries(paths):
    """[(label, path, version line, CPU class)]: labels from the LibTorch version `--version`
    reports, the class from its "cpu: MODEL: class AMX (...)" line (None if it has none)."""
    out, seen = [], set()
    for path in paths:
        r = subprocess.run([path, "--version"], capture_output=True, text=True)
        text = r.stdout.strip() or r.stderr.strip() or "?"
        line = text.splitlines()[0]
        cpu = re.search(r"^cpu: .*?: class (.+?) \(", text, re.MULTILINE)
        m = re.search(r"LibTorch (\d+)\.(\d+)", line)
        label = f"ours[{m.group(1)}.{m.group(2)}]" if m else f"ours[{os.path.basename(path)}]"
        while label in seen:  # two builds of one LibTorch: tell them apart by their folder
            label = f"{label[:-1]}@{os.path.basename(os.path.dirname(os.path.dirname(path)))}]"
        seen.add(label)
        out.append((label, path, line, cpu.group(1) if cpu else None))
    return out


# ----------------------------------------------------------------- one table row

def fmt_rate(x):
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def short(label):
    """ours[2.15] -> 2.15, for the verdicts."""
    return label[len("ours["):-1]


class Row:
    """One line of the table: medians per side, the best anchor, ratios per binary."""

    def __init__(self, name, shape, unit, higher_is_better=True, precision="fp32"):
        self.name, self.shape, self.unit, self.higher = name, shape, unit, higher_is_better
        self.precision = precision  # every side's: the ratios compare within it
        self.anchor_cells = {}  # anchor -> median or a string ("failed", "-")
        self.best = None        # anchor name
        self.ours_cells = {}    # label -> median or string
        self.ratios = {}        # label -> ratio (> 1: ours is better)
        self.target = ""


def summarise(row, values, anchors, ours, target=None):
    """Fills row from values[side] = per-repetition values (None where that run failed)."""
    for a in anchors:
        row.anchor_cells[a] = median_or_none(values.get(a, []))
    usable = [a for a in anchors if row.anchor_cells[a] is not None]
    pick = max if row.higher else min
    row.best = pick(usable, key=lambda a: row.anchor_cells[a]) if usable else None
    verdicts = []
    for label in ours:
        row.ours_cells[label] = median_or_none(values.get(label, []))
        if row.best is None or row.ours_cells[label] is None:
            continue
        pairs = [(o, b) for o, b in zip(values[label], values[row.best]) if o is not None and b is not None]
        if not pairs:
            continue
        row.ratios[label] = statistics.median(o / b if row.higher else b / o for o, b in pairs)
        if target is not None:
            ok = row.ratios[label] >= target
            verdicts.append(f"{short(label)} {'met' if ok else '**missed**'}")
    if target is not None:
        row.target = f">= {target}x" + (f": {', '.join(verdicts)}" if verdicts else "")


def measure(args, name, w, sides, env, rows, notes, state):
    """Runs a workload's repetitions over every side, alternating; appends its rows and notes."""
    kind = w["kind"]
    anchors = [a for a in w["anchors"] if a in sides["anchors"]]
    ours = [label for label, _ in sides["ours"]]
    precision = w.get("precision", "fp32")
    # (side, how to run it). int8 rows also run each binary in fp32, for int8 / fp32.
    runs = [(a, "anchor") for a in anchors] + [(label, precision) for label in ours]
    if precision == "int8":
        runs += [(label + " fp32", "fp32") for label in ours]
    dead = prepare_onnx(name, w, anchors, sides, env, notes)
    key, unit = ("gflops", "GFLOP/s") if kind == "matmul" else ("img_per_s", "img/s")
    results = repetitions(args, name, w, runs, sides, env, dead, key, unit)
    # A side that ran another precision than it was to (OpenVINO's own choice, ours' bf16
    # falling back to fp32) is left out of the ratios: each compares one precision.
    want = {side: ("fp32" if how == "fp32" else precision) for side, how in runs}
    other = {}
    for side, xs in results.items():
        ran = {x["precision"] for x in xs if x and "precision" in x} - {want[side]}
        if ran:
            other[side] = "/".join(sorted(ran))
    values = {side: [x[key] if x and side not in other else None for x in xs] for side, xs in results.items()}

    row = Row(name, shape_of(w), unit, precision=precision)
    summarise(row, values, anchors, ours, w.get("target"))
    mark_failures(row, dead, other, anchors, ours)
    rows.append(row)
    for side, why in dead.items():
        if not why.startswith("n/a"):
            notes.append(f"{name}: {'anchor ' if side in anchors else ''}{side} "
                         + (f"unavailable ({why.split('Unavailable: ', 1)[1]})" if unavailable(why)
                            else f"failed ({why})"))
            if side not in anchors:
                state.setdefault("ours_failed", []).append(f"{name} {side}")
    for side, ran in other.items():
        notes.append(f"{name}: {side} ran {ran}, not {want[side]}: left out of the comparison")
    if w.get("latency"):
        # Per-image latency: the median step time at batch 1 (lower is better).
        lat = {side: [x["ms_per_batch"] / w["batch"] if x and side not in other else None for x in xs]
               for side, xs in results.items()}
        lat_row = Row(f"{name} latency", shape_of(w), "ms", higher_is_better=False, precision=precision)
        summarise(lat_row, lat, anchors, ours, w["latency"])
        mark_failures(lat_row, dead, other, anchors, ours)
        rows.append(lat_row)

    # What each binary actually ran (its bench --json "compute": precision, layout, plan).
    computed = [f"{side}: {next(x['compute'] for x in results[side] if x)}" for side, how in runs
                if how != "anchor" and kind != "matmul" and any(results[side])]
    if computed:
        notes.append(f"{name}: ours computed: {'; '.join(computed)}")
    if precision == "int8":
        int8_notes(name, w, values, ours, row, notes)
    compile_notes(name, results, notes)
    openvino_notes(name, results, notes)
    if kind == "matmul":
        state["matmul"] = {side: m for side in values if (m := median_or_none(values[side])) is not None}
        state["blas"] = {label: next((x.get("blas") for x in results[label] if x), "") for label in ours}
    if name == "infer-b64":
        state["infer_gflops"] = {label: median_or_none([x["gflops"] if x else None for x in results[label]])
                                 for label in ours}
    if kind == "infer" and w["batch"] == 1:
        memory_note(args, results, anchors, ours, notes)


def prepare_onnx(name, w, anchors, sides, env, notes):
    """Exports (and, in an int8 row, quantises) the model for the row's ONNX Runtime and
    OpenVINO anchors once, untimed, in a process of its own. Returns {anchor: why} for the
    anchors that cannot run."""
    int8 = w.get("precision") == "int8"
    # Each runtime as the interpreter's versions probe found it; the int8 QDQ model is made with
    # ONNX Runtime's quantisation tools, whichever runtime then runs it.
    have = sides["found"].get("2") or {}
    dead = {}
    for a in [a for a in anchors if a in ONNX]:
        needs = ((["onnxruntime"] if a.startswith("ort") or int8 else [])
                 + (["openvino"] if a in OPENVINO else []))
        missing = [package for package in needs if package not in have]
        if missing:
            dead[a] = f"Unavailable: no {' or '.join(missing)} for {sides['python']['2']}"
    onnx = [a for a in anchors if a in ONNX and a not in dead]
    if not onnx:
        return dead
    try:
        prep = run_anchor(sides["python"]["2"], dict(w, kind="prepare-onnx", int8=int8), env)
    except (RunFailed, OSError) as e:
        return dict(dead, **{a: str(e).splitlines()[0] for a in onnx})
    if prep["prepare_s"] > 0.5:  # else an earlier row's files were reused
        notes.append(f"{name}: ONNX export{' and int8 quantisation' if int8 else ''} "
                     f"(untimed, once per command): {prep['prepare_s']:.1f} s")
    return dead


def repetitions(args, name, w, runs, sides, env, dead, key, unit):
    """{side: [result or None per repetition]}; every side once per repetition, the order reversed
    every other one. A side that fails is recorded in dead and not run again (a compile that
    cannot work here, a flag the binary lacks)."""
    binary_of = dict(sides["ours"])
    precision = w.get("precision", "fp32")
    results = {side: [] for side, _ in runs}
    for r in range(args.repeat):
        for side, how in (runs if r % 2 == 0 else runs[::-1]):
            result = None
            if side not in dead:
                try:
                    if how == "anchor":
                        spec = dict(w, anchor=side, precision=precision)
                        result = run_anchor(sides["python"][ANCHORS[side][0]], spec, env)
                    else:
                        result = run_cpp(binary_of[side.split(" ")[0]], w, how)
                except (RunFailed, OSError) as e:
                    dead[side] = str(e).splitlines()[0]
                    print(f"  {name} {side}: {dead[side]}", flush=True)
            results[side].append(result)
        shown = ", ".join(f"{side} {fmt_rate(results[side][-1][key])}" for side, _ in runs
                          if results[side][-1])
        print(f"  {name} run {r + 1}: {shown or 'nothing ran'} {unit}", flush=True)
    return results


def unavailable(why):
    """Whether a side's failure is the anchor's absence here (a package, a compiler), said by the
    driver (a package the versions probe did not find) or by the worker's Unavailable."""
    return "Unavailable: " in why


def mark_failures(row, dead, other, anchors, ours):
    """A side that never ran, or ran another precision (other: {side: precision}), shows why in
    its cell rather than a bare "-"."""
    for side, why in dead.items():
        if side in anchors and row.anchor_cells.get(side) is None:
            row.anchor_cells[side] = "unavailable" if unavailable(why) else "failed"
        elif side in ours and row.ours_cells.get(side) is None:
            row.ours_cells[side] = why if why.startswith("n/a") else "failed"
    for side, ran in other.items():
        if side in anchors:
            row.anchor_cells[side] = f"ran {ran}"
        elif side in ours:
            row.ours_cells[side] = f"ran {ran}"


def shape_of(w):
    kind = w["kind"]
    if kind == "matmul":
        return f"{w['n']}x{w['n']} fp32"
    if kind.startswith("e2e"):
        what = ("Resize 256 + CenterCrop 224" if kind == "e2e-infer" else "RandomResizedCrop 224 + flip")
        return f"JPEGs, {what}, batch {w['batch']}, {w['workers']} workers"
    return f"batch {w['batch']}, {w['size']}x{w['size']}, {w['classes']} classes"


def int8_notes(name, w, values, ours, row, notes):
    """ours int8 / ours fp32, the other half of the int8 target, into the row and the notes."""
    parts = []
    for label in ours:
        pairs = [(a, b) for a, b in zip(values[label], values[label + " fp32"])
                 if a is not None and b is not None]
        fp32 = median_or_none(values[label + " fp32"])
        if not pairs:
            parts.append(f"{short(label)} n/a")
            if fp32 is not None:
                notes.append(f"{name}: {label} fp32 {fmt_rate(fp32)} img/s (int8 did not run)")
            continue
        ratio = statistics.median(a / b for a, b in pairs)
        ok = ratio >= w["fp32_target"]
        parts.append(f"{short(label)} {ratio:.2f}x {'met' if ok else '**missed**'}")
        notes.append(f"{name}: {label} int8 / fp32 {ratio:.2f}x (fp32 {fmt_rate(fp32)} img/s)")
    row.target = f"vs the best int8 anchor {row.target}; >= {w['fp32_target']}x our fp32: {', '.join(parts)}"
    notes.append(f"{name}: ort-int8 and ov-int8 run one QDQ model, calibrated on {CALIBRATION_IMAGES} "
                 f"random-normal images (seed 0, as the benchmark input; the model-only rows have no real "
                 f"images), every Conv and Gemm quantised; ours calibrates on its own random benchmark "
                 f"batch and gives the last Linear layer's sums out in fp32, not requantized")


def compile_notes(name, results, notes):
    warm = [x["compile_s"] for x in results.get("compile", []) if x and "compile_s" in x]
    if warm:
        notes.append(f"{name}: torch.compile's first call(s), not timed: {warm[0]:.1f} s in the first "
                     f"run, median {statistics.median(warm):.1f} s (later runs reuse inductor's cache)")


def openvino_notes(name, results, notes):
    """What each OpenVINO anchor compiled to: the precision it ran (ov-default's is OpenVINO's
    choice), its hints as the compiled model reports them, and each kind of layer's precision."""
    for a in OPENVINO:
        x = next((x for x in results.get(a, []) if x), None)
        if x is None:
            continue
        how = "its own choice, no hint given" if a == "ov-default" else "INFERENCE_PRECISION_HINT f32"
        layers = ", ".join(f"{k} {'/'.join(v)}" for k, v in sorted(x["ov_layers"].items()))
        notes.append(f"{name}: {a} (OpenVINO {x['openvino']}): inference precision "
                     f"{x['ov_inference_precision']} ({how}), PERFORMANCE_HINT {x['ov_performance_hint']}, "
                     f"NUM_STREAMS {x['ov_num_streams']}, {x['ov_threads']} threads; layers ran {layers}")


def memory_note(args, results, anchors, ours, notes):
    rss = {side: median_or_none([x["peak_rss_mb"] if x else None for x in results[side]])
           for side in list(anchors) + ours}
    parts = []
    for label in ours:
        if rss[label] is not None:
            ok = rss[label] <= 2 * WEIGHTS_MB
            parts.append(f"{label} {rss[label]:.0f} MiB ({'met' if ok else 'missed'})")
    others = ", ".join(f"{a} {rss[a]:.0f} MiB" for a in anchors if rss[a] is not None)
    if parts or others:
        notes.append(f"batch 1 peak resident memory (target <= 2 x {WEIGHTS_MB:.0f} MiB = "
                     f"{2 * WEIGHTS_MB:.0f} MiB): {', '.join(parts) or 'n/a'}; anchors' processes: "
                     f"{others or 'n/a'}")
    if args.device.startswith("cuda"):
        used = {side: next((x.get("cuda_used_mb") for x in results[side] if x), None)
                for side in list(anchors) + ours}
        if any(v is not None for v in used.values()):
            notes.append("batch 1 GPU memory in use (context + cache): " +
                         ", ".join(f"{s} {used[s]:.0f} MiB" for s in used if used[s] is not None))


# ----------------------------------------------------------------- ours-only workloads

def main_job(args, sides, tmp, rows, notes, state):
    """`alexnet train` with its defaults: wall time until the per-epoch test top-1 first reaches
    MAIN_JOB_TOP1, from its "epoch N done: ... top1 X% ..." lines (app/engine/trainer_epoch.cpp)."""
    row = Row("main-job", "alexnet train defaults (Fashion-MNIST), wall time to 90% top-1", "min",
              higher_is_better=False, precision="auto")
    verdicts = []
    epoch_done = re.compile(r"epoch (\d+) done: .*\btop1 ([0-9.]+)%")
    for i, (label, binary) in enumerate(sides["ours"]):
        cmd = [binary, "train", "--output", os.path.join(tmp, f"main-job-{i}"), "--overwrite",
               "--threads", str(args.threads), "--progress", "lines"] + args.main_job_args.split()
        start = time.perf_counter()
        reached, best, last = None, 0.0, None
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
            tail = []
            for line in p.stdout:
                tail = (tail + [line.rstrip()])[-3:]
                m = epoch_done.search(line)
                if not m:
                    continue
                elapsed, top1 = time.perf_counter() - start, float(m.group(2)) / 100
                best, last = max(best, top1), top1
                print(f"  main-job {label} epoch {m.group(1)}: top-1 {100 * top1:.2f}% at "
                      f"{elapsed / 60:.1f} min", flush=True)
                if reached is None and top1 >= MAIN_JOB_TOP1:
                    reached = elapsed
        total = time.perf_counter() - start
        if p.returncode != 0 or last is None:
            row.ours_cells[label] = "failed"
            notes.append(f"main-job: {label} failed (exit status {p.returncode}, no epoch finished: "
                         f"{tail[-1] if tail else 'no output'})")
            state.setdefault("ours_failed", []).append(f"main-job {label}")
            continue
        if reached is None:
            row.ours_cells[label] = f"not reached (best {100 * best:.2f}%)"
            verdicts.append(f"{short(label)} **missed**")
        else:
            row.ours_cells[label] = reached / 60
            verdicts.append(f"{short(label)} {'met' if reached <= MAIN_JOB_MINUTES * 60 else '**missed**'}")
        notes.append(f"main-job: {label} ran {total / 60:.1f} min in all, top-1 {100 * last:.2f}% after the "
                     f"last epoch, {100 * best:.2f}% at best; {' '.join(cmd[1:])}")
    row.target = f"<= {MAIN_JOB_MINUTES} min" + (f": {', '.join(verdicts)}" if verdicts else "")
    rows.append(row)


def link_copies(src, dst, count):
    """An ImageFolder of `count` JPEGs made of hard links to src's files (decoding cost alike)."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)
    for i in range(count):
        f = files[i % len(files)]
        d = os.path.join(dst, os.path.basename(os.path.dirname(f)))
        os.makedirs(d, exist_ok=True)
        os.link(f, os.path.join(d, f"{i:06d}.jpg"))


def scaling(args, w, sides, folder, tmp, notes, state):
    """Ours only: end-to-end evaluation img/s as the folder grows."""
    for count in args.scaling_counts:
        d = os.path.join(tmp, f"scaling{count}")
        if not os.path.isdir(d):
            link_copies(folder, d, count)
        for label, binary in sides["ours"]:
            try:
                r = run_cpp(binary, dict(w, kind="e2e-infer", folder=d), "fp32")
                notes.append(f"end-to-end evaluation of {count} JPEGs: {label} {r['img_per_s']:.1f} img/s "
                             f"({r['compute']}, {r['median_s']:.1f} s)")
            except RunFailed as e:
                notes.append(f"scaling: {label} failed on {count} JPEGs ({e})")
                state.setdefault("ours_failed", []).append(f"scaling {label}")


def agreement(args, sides, tmp, notes, state):
    """Ours only: top-1 agreement of bf16 and int8 with fp32 on the Fashion-MNIST test set."""
    for i, (label, binary) in enumerate(sides["ours"]):
        try:
            agreement_of(args, label, binary, os.path.join(tmp, f"agreement{i}"), notes)
        except (RunFailed, subprocess.CalledProcessError) as e:
            notes.append(f"agreement: {label} failed ({str(e).splitlines()[0]})")
            state.setdefault("ours_failed", []).append(f"agreement {label}")


def agreement_of(args, label, binary, tmp, notes):
    os.makedirs(tmp, exist_ok=True)
    weights = args.weights
    if not weights:
        out = os.path.join(tmp, "trained")
        subprocess.run([binary, "train", "--epochs", "1", "--max-steps", "150", "--print-freq", "0",
                        "--output", out, "--threads", str(args.threads)],
                       check=True, capture_output=True, text=True)
        weights = os.path.join(out, "model.pth")
    preds, top1 = {}, {}
    for precision in ("fp32", "bf16", "int8"):
        path = os.path.join(tmp, f"pred_{precision}.txt")
        # int8 calibrates once on 512 training images (its scales go to a copy's side file).
        extra = ["--calibrate", "fashion-mnist", "--int8-scales", os.path.join(tmp, "scales.json")] \
            if precision == "int8" else []
        try:
            r = run_json([binary, "bench", "--json", "--mode", "infer", "--data", "fashion-mnist",
                          "--split", "val", "--weights", weights, "--precision", precision,
                          "--repeat", "1", "--batch-size", "256", "--predictions", path,
                          "--limit", str(args.agreement_images), "--threads", str(args.threads), *extra])
        except RunFailed as e:
            notes.append(f"{label} {precision}: failed ({e})")
            continue
        if r.get("precision") != precision:
            notes.append(f"{label} {precision}: ran {r.get('precision')} (no such kernels here)")
            continue
        with open(path) as f:
            preds[precision] = [int(line) for line in f]
        top1[precision] = r["top1"]
    for precision in ("bf16", "int8"):
        if precision not in preds:
            continue
        same = sum(a == b for a, b in zip(preds["fp32"], preds[precision]))
        share = same / len(preds["fp32"])
        notes.append(f"{label} {precision} vs fp32 top-1 agreement on {len(preds['fp32'])} Fashion-MNIST test "
                     f"images: {100 * share:.2f}% (target >= 99%: {'met' if share >= 0.99 else 'missed'}); "
                     f"top-1 fp32 {100 * top1['fp32']:.2f}%, {precision} {100 * top1[precision]:.2f}%")


# ----------------------------------------------------------------- output

def print_table(rows, anchors, ours):
    def cell(x, unit):
        if x is None:
            return "-"
        if isinstance(x, str):
            return x
        return f"{x:.2f}" if unit in ("ms", "min") else fmt_rate(x)

    head = ["workload", "shape", "precision", "unit"] + anchors + ["best anchor"]
    for label in ours:
        head += [label, f"{label} / best anchor in this precision"]
    head.append("target (ours / best)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        line = [row.name, row.shape, row.precision, row.unit + ("" if row.higher else ", lower is better")]
        line += [cell(row.anchor_cells.get(a), row.unit) for a in anchors]
        line.append(row.best or "-")
        for label in ours:
            line.append(cell(row.ours_cells.get(label), row.unit))
            ratio = row.ratios.get(label)
            line.append(f"{ratio:.2f}x" if ratio is not None else "-")
        line.append(row.target)
        print("| " + " | ".join(line) + " |")


def versions_lines(found, args, ours):
    lines = []
    for key, python in (("2", args.python), ("113", args.python_113)):
        v = found.get(key)
        if v:
            ort = f", onnxruntime {v['onnxruntime']}" if "onnxruntime" in v else ""
            ov = f", openvino {v['openvino']}" if "openvino" in v else ""
            cap = f", CPU capability {v['cpu_capability']}" if "cpu_capability" in v else ""
            lines.append(f"anchors {'torch113' if key == '113' else 'eager/eager-cl/compile/ort/ov'}: "
                         f"torch {v['torch']}, torchvision {v['torchvision']}{ort}{ov}{cap} ({python})")
    for label, path, line, _ in ours:
        lines.append(f"{label}: {path}: {line}")
    return lines


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", action="append", default=[],
                        help="an alexnet binary, repeatable (default: build-pypi/app/alexnet and "
                             "build/app/alexnet, those that exist)")
    parser.add_argument("--workloads", help="comma-separated names (default: matmul .. int8-b64)")
    parser.add_argument("--anchors", help=f"comma-separated anchors to run (default: {','.join(ANCHORS)})")
    parser.add_argument("--quick", action="store_true", help="the short set, --iters 3 --repeat 2")
    parser.add_argument("--full", action="store_true", help="every workload but main-job")
    parser.add_argument("--main-job", action="store_true", help="add main-job (about 10 minutes a binary)")
    parser.add_argument("--repeat", type=int, default=0,
                        help="repetitions per workload (0: 3, 2 with --quick)")
    parser.add_argument("--iters", type=int, default=0,
                        help="timed iterations per run, every row (0: 5, 3 with --quick; matmul 10, "
                             "infer-b1 20, 10 with --quick)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (every side)")
    parser.add_argument("--images", type=int, default=0, help="JPEGs for e2e-eval (0: 300, 200 with --quick)")
    parser.add_argument("--train-images", type=int, default=0, help="JPEGs for e2e-train (0: 320)")
    parser.add_argument("--scaling-counts", default="1000,10000", help="scaling: folder sizes")
    parser.add_argument("--weights", help="agreement: trained 10-class weights (default: train briefly)")
    parser.add_argument("--agreement-images", type=int, default=0,
                        help="agreement: first N test images (0: all 10,000)")
    parser.add_argument("--main-job-args", default="",
                        help="main-job: extra `alexnet train` flags (e.g. --main-job-args='--epochs 1 "
                             "--max-steps 20' to check the script)")
    parser.add_argument("--python", default=default_python2(),
                        help="interpreter of the PyTorch 2.x and ONNX Runtime anchors (default: the "
                             "PyPI virtual environment's, else this one)")
    parser.add_argument("--python-113", default="/usr/bin/python3",
                        help="interpreter of the torch113 anchor (Debian's PyTorch 1.13)")
    parser.add_argument("--python-env", action="append", default=[], metavar="VAR=VALUE",
                        help="environment for the anchors only (e.g. OPENBLAS_CORETYPE=CooperLake)")
    args = parser.parse_args()
    args.repeat = args.repeat or (2 if args.quick else 3)
    args.images = args.images or (200 if args.quick else 300)
    args.train_images = args.train_images or 320
    args.scaling_counts = [int(c) for c in args.scaling_counts.split(",")]
    return args


def selection(args):
    """(workload names, anchor names) from the flags, checked."""
    cuda = args.device.startswith("cuda")
    names = (args.workloads.split(",") if args.workloads else FULL if args.full else QUICK if args.quick
             else GPU if cuda else DEFAULT)
    names = list(dict.fromkeys(ALIASES.get(n, n) for n in names))  # in order, once each
    if args.main_job and "main-job" not in names:
        names.append("main-job")
    for n in names:
        if n not in WORKLOADS:
            sys.exit(f"unknown workload {n!r}; known: {', '.join(WORKLOADS)} (and {', '.join(ALIASES)})")
    if not args.workloads and not cuda and not cpu_has_bf16():
        # PyTorch's bf16 on such a CPU is emulated and ours runs fp32: nothing to compare.
        names = [n for n in names if n not in ("infer-bf16-bf16", "infer-bf16-b1")]
    chosen = list(ANCHORS) if not args.anchors else args.anchors.split(",")
    for a in chosen:
        if a not in ANCHORS:
            sys.exit(f"unknown anchor {a!r}; known: {', '.join(ANCHORS)}")
    if cuda:
        chosen = [a for a in chosen if a not in CPU_ONLY]  # CPU-only builds and providers
    return names, chosen


def make_folders(args, names, found, tmp, env, notes):
    """The JPEG folders the end-to-end rows read ({kind: path}); a row whose folder cannot be
    made (no opencv-doc photographs, no PIL) is left out with a note."""
    folders = {}
    python = args.python if found.get("2") else args.python_113
    for kind, count in (("e2e-infer", args.images), ("e2e-train", args.train_images)):
        users = [n for n in names if WORKLOADS[n]["kind"] == kind or (kind == "e2e-infer" and n == "scaling")]
        if not users:
            continue
        try:
            run_anchor(python, dict(kind="jpegs", folder=os.path.join(tmp, kind), count=count), env)
            folders[kind] = os.path.join(tmp, kind)
        except (RunFailed, OSError) as e:
            notes.append(f"{', '.join(users)}: left out, no JPEG folder ({str(e).splitlines()[0]})")
    return folders


def print_report(args, rows, notes, state, found, sides):
    labels = [label for label, _ in sides["ours"]]
    shown = [a for a in ANCHORS if any(a in row.anchor_cells for row in rows)]
    print()
    if rows:
        print()
        print(f"CPU class {sides['cpu_class']}, {args.threads} threads on every side; each ratio: ours / the "
              f"best anchor in the row's precision (> 1: ours faster)")
        print()
        print_table(rows, shown, labels)
        print()
    for a in shown:
        v = found[ANCHORS[a][0]]
        what = (f"onnxruntime {v.get('onnxruntime', '?')}, model exported by PyTorch {v['torch']}"
                if a.startswith("ort") else
                f"openvino {v.get('openvino', '?')}, model exported by PyTorch {v['torch']}"
                if a in OPENVINO else f"PyTorch {v['torch']}")
        print(f"{a}: {what}: {ANCHORS[a][1]}")
    matmul = state.get("matmul")
    if matmul:
        best = max(matmul.values())
        print(f"2048x2048 fp32 matmul GFLOP/s: {', '.join(f'{s} {v:.1f}' for s, v in matmul.items())} "
              f"(ours' BLAS kernels: "
              f"{', '.join(f'{k} {v}' for k, v in state['blas'].items() if v) or 'n/a'})")
        for label, g in state.get("infer_gflops", {}).items():
            if g:
                share = g / best
                print(f"{label} fp32 inference (infer-b64) achieves {g:.0f} GFLOP/s = {100 * share:.0f}% "
                      f"of the fastest matmul rate (target >= 85%: {'met' if share >= 0.85 else 'missed'})")
    for note in notes:
        print(note)


def main():
    args = parse_args()
    names, chosen = selection(args)
    binaries = args.binary or [p for p in (os.path.join(ROOT, "build-pypi/app/alexnet"),
                                           os.path.join(ROOT, "build/app/alexnet")) if os.path.exists(p)]
    if not binaries:
        sys.exit("no alexnet binary: build one (scripts/build*) or give --binary PATH")
    env = dict(os.environ)
    for kv in args.python_env:
        k, _, v = kv.partition("=")
        env[k] = v

    started = time.time()
    load_start = os.getloadavg()
    print(f"machine: {machine_description()}")
    found = probe_interpreters(args, chosen, env)
    ours = label_binaries(binaries)
    cpu_class = next((c for _, _, _, c in ours if c), "unknown (the binary's --version does not say)")
    print(f"CPU class: {cpu_class} (alexnet --version)")
    for line in versions_lines(found, args, ours):
        print(line)
    if args.device.startswith("cuda") and found.get("2") and found["2"].get("gpu"):
        print(f"GPU: {found['2']['gpu']}")
    # An anchor whose interpreter does not work is left out (said above), not failed per row.
    chosen = [a for a in chosen if found.get(ANCHORS[a][0])]
    print(f"threads {args.threads} on every side; {args.repeat} repetitions per workload, order "
          f"reversed every other one; anchors: {', '.join(chosen) or 'none'}; anchor environment "
          f"additions: {' '.join(args.python_env) or 'none'}")
    print(f"training recipe (every side): {', '.join(f'{k} {v}' for k, v in RECIPE.items())}")
    print(f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} at start")

    sides = dict(anchors=chosen, ours=[(label, path) for label, path, _, _ in ours],
                 python={"2": args.python, "113": args.python_113}, cpu_class=cpu_class, found=found)
    rows, notes, state = [], [], {}
    with tempfile.TemporaryDirectory(prefix="bench_vs_pytorch.") as tmp:
        folders = make_folders(args, names, found, tmp, env, notes)
        for name in names:
            w = dict(WORKLOADS[name], threads=args.threads, device=args.device, recipe=RECIPE,
                     cache=tmp, calibration_images=CALIBRATION_IMAGES)
            kind = w["kind"]
            needs = kind if kind.startswith("e2e") else "e2e-infer" if kind == "scaling" else None
            if needs and needs not in folders:
                continue  # its folder could not be made: said in the notes
            w["warmup"] = 2 if kind == "matmul" else 1
            w["iters"] = args.iters or w.get("iters", 3 if args.quick else 5)
            if args.quick and not args.iters and kind == "infer" and w["batch"] == 1:
                w["iters"] = 10
            w["folder"] = folders.get(kind)
            began = time.time()
            print(f"{name}:", flush=True)
            if kind == "main-job":
                main_job(args, sides, tmp, rows, notes, state)
            elif kind == "scaling":
                scaling(args, w, sides, folders["e2e-infer"], tmp, notes, state)
            elif kind == "agreement":
                agreement(args, sides, tmp, notes, state)
            else:
                w["anchors"] = [a for a in w["anchors"] if a in chosen]
                measure(args, name, w, sides, env, rows, notes, state)
            print(f"  {name}: {time.time() - began:.0f} s", flush=True)

    print_report(args, rows, notes, state, found, sides)
    print(f"\nload average {load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
          f"{time.time() - started:.0f} s in all")
    # A run of ours that failed is a bug to look at; an anchor that cannot run here, or a
    # missed target, is a finding, reported above.
    if state.get("ours_failed"):
        print(f"failed runs of ours: {', '.join(state['ours_failed'])} (see the notes)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
