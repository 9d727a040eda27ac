"""The Python side of scripts/bench_vs_pytorch.py: one measurement of one anchor per process.

    PYTHON scripts/bench_anchors.py SPEC_JSON

prints one JSON object on its last stdout line (exit status 0), or {"error": "..."} with exit
status 3 when the anchor cannot run here (a torch.compile without a C++ compiler, an ONNX
Runtime that is not installed, ...). The driver runs this file with each anchor's own
interpreter: Debian's /usr/bin/python3 (PyTorch 1.13) for the `torch113` anchor, the PyPI
virtual environment (PyTorch 2.x, ONNX Runtime) for the others, so this file imports nothing
beyond the standard library at the top and keeps to what PyTorch 1.13 has outside the
anchors that need 2.x.

SPEC_JSON fields: anchor (eager, eager-cl, compile, ort, ort-int8; torch113 is eager under
another interpreter), kind (matmul, infer, train, e2e-infer, e2e-train; versions, jpegs and
prepare-onnx for the driver's set-up), batch, size, classes, precision (fp32, bf16, fp16),
threads, device, warmup, iters, recipe (training), folder and workers (end to end), cache (a
folder for the exported ONNX models), calibration_images (ort-int8).
"""
import contextlib
import json
import os
import resource
import statistics
import sys
import time

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # ImageNet's, as torchvision's recipes


class Unavailable(Exception):
    """The anchor cannot run on this machine or interpreter; the driver reports and goes on."""


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dtype_of(precision):
    import torch
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def timed(device, spec, fn):
    """Median seconds of one call of fn after spec's untimed warm-up calls (CUDA synchronised)."""
    cuda = device.startswith("cuda")
    if cuda:
        import torch  # only then: the ONNX Runtime anchors run without importing torch
    times = []
    for i in range(spec["warmup"] + spec["iters"]):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if i >= spec["warmup"]:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------- PyTorch anchors

def make_model(spec, classes, train):
    """torchvision's AlexNet as the anchor runs it: seed 0, dropout from the recipe when training,
    low-precision weights for inference (training autocasts over fp32 weights), channels-last for
    eager-cl."""
    import torch
    import torchvision
    torch.manual_seed(0)
    kwargs = {"num_classes": classes}
    if train:
        kwargs["dropout"] = spec["recipe"]["dropout"]  # torchvision >= 0.13 takes it
    model = torchvision.models.alexnet(**kwargs).to(spec["device"])
    model.train(train)
    if not train:
        model = model.to(dtype_of(spec["precision"]))
    if spec["anchor"] == "eager-cl":
        model = model.to(memory_format=torch.channels_last)
    return model


def to_input(spec, x, train):
    """x on the anchor's device, in its precision (inference) and memory format."""
    import torch
    x = x.to(spec["device"], non_blocking=True)
    if not train:
        x = x.to(dtype_of(spec["precision"]))
    return x.contiguous(memory_format=torch.channels_last) if spec["anchor"] == "eager-cl" else x


def compiled(spec, model):
    """torch.compile's default mode (inductor), or the eager model for the other anchors.
    dynamic=False: every row has fixed shapes (an end-to-end evaluation's last, smaller batch is
    compiled before timing), and without it that second shape would recompile the model with
    dynamic shapes, a different program from the one the other rows time."""
    if spec["anchor"] != "compile":
        return model
    import torch
    if not hasattr(torch, "compile"):
        raise Unavailable(f"torch {torch.__version__} has no torch.compile")
    return torch.compile(model, dynamic=False)


class Step:
    """One training step of alexnet's recipe (the driver's RECIPE, also given to `alexnet bench`):
    SGD with momentum, Nesterov and weight decay, cross-entropy with label smoothing, gradients
    clipped to a total L2 norm; autocast over fp32 weights for bf16/fp16, loss scaling for fp16."""

    def __init__(self, model, forward, spec):
        import torch
        r = spec["recipe"]
        self.forward, self.recipe, self.spec = forward, r, spec
        self.params = list(model.parameters())
        self.opt = torch.optim.SGD(self.params, lr=r["lr"], momentum=r["momentum"],
                                   nesterov=r["nesterov"], weight_decay=r["wd"])
        self.scaler = None
        if spec["precision"] == "fp16":
            amp = getattr(torch, "amp", None)
            self.scaler = (amp.GradScaler("cuda") if hasattr(amp, "GradScaler")
                           else torch.cuda.amp.GradScaler())

    def __call__(self, x, y):
        import torch
        import torch.nn.functional as F
        self.opt.zero_grad(set_to_none=True)
        precision = self.spec["precision"]
        autocast = (torch.autocast(self.spec["device"].split(":")[0], dtype=dtype_of(precision))
                    if precision != "fp32" else contextlib.nullcontext())
        with autocast:
            logits = self.forward(x)  # (B, classes)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.recipe["label_smoothing"])
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)  # clip the true gradients, as alexnet's loss scaler does
        if self.recipe["clip_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.recipe["clip_grad_norm"])
        if self.scaler is None:
            self.opt.step()
        else:
            self.scaler.step(self.opt)
            self.scaler.update()
        return loss


def first_calls(device, fn, calls):
    """Seconds of the first calls (torch.compile's compilation happens in them)."""
    import torch
    start = time.perf_counter()
    for args in calls:
        fn(*args)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def model_only(spec, out):
    import torch
    train = spec["kind"] == "train"
    model = make_model(spec, spec["classes"], train)
    forward = compiled(spec, model)
    torch.manual_seed(0)
    x = to_input(spec, torch.randn(spec["batch"], 3, spec["size"], spec["size"]), train)  # (B, 3, S, S)
    if train:
        y = torch.randint(spec["classes"], (spec["batch"],)).to(spec["device"])  # (B,)
        step = Step(model, forward, spec)
        if spec["anchor"] == "compile":
            out["compile_s"] = first_calls(spec["device"], step, [(x, y)])
        seconds = timed(spec["device"], spec, lambda: step(x, y))
    else:
        with torch.inference_mode():
            if spec["anchor"] == "compile":
                out["compile_s"] = first_calls(spec["device"], forward, [(x,)])
            seconds = timed(spec["device"], spec, lambda: forward(x))
    out["img_per_s"] = spec["batch"] / seconds
    out["ms_per_batch"] = 1000 * seconds


def end_to_end(spec, out):
    """torchvision's ImageFolder + DataLoader (worker processes) feeding the anchor's model; the
    clock runs from the loader's creation (its workers' start-up included, as alexnet's) to the
    last batch's result."""
    import torch
    import torchvision
    from torchvision import transforms
    train = spec["kind"] == "e2e-train"
    if train:
        # alexnet's image-folder training transform (data/transforms.h, default_transform_options).
        tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                 transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    else:
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                 transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ds = torchvision.datasets.ImageFolder(spec["folder"], tf)
    model = make_model(spec, len(ds.classes), train)
    forward = compiled(spec, model)
    device, batch = spec["device"], spec["batch"]
    loader_args = dict(batch_size=batch, num_workers=spec["workers"],
                       pin_memory=device.startswith("cuda"))
    n = 0
    if train:
        step = Step(model, forward, spec)
        # Untimed first step, as alexnet's (memory and kernels set up, or compilation).
        x = to_input(spec, torch.zeros(batch, 3, 224, 224), True)  # (B, 3, 224, 224)
        warm = first_calls(device, step, [(x, torch.zeros(batch, dtype=torch.int64, device=device))])
        start = time.perf_counter()
        loader = torch.utils.data.DataLoader(ds, shuffle=True, drop_last=True, **loader_args)
        for images, labels in loader:
            step(to_input(spec, images, True), labels.to(device, non_blocking=True)).item()
            n += images.shape[0]
    else:
        with torch.inference_mode():
            # The full batch and the last, smaller one: each compiles once, before the clock.
            shapes = [batch] + ([len(ds) % batch] if len(ds) % batch else [])
            warm = first_calls(device, forward,
                               [(to_input(spec, torch.zeros(b, 3, 224, 224), False),) for b in shapes])
            start = time.perf_counter()
            loader = torch.utils.data.DataLoader(ds, shuffle=False, **loader_args)
            for images, _ in loader:
                n += forward(to_input(spec, images, False)).argmax(1).cpu().shape[0]
    out["img_per_s"] = n / (time.perf_counter() - start)
    out["images"] = n
    if spec["anchor"] == "compile":
        out["compile_s"] = warm


def matmul(spec, out):
    import torch
    n, device = spec["n"], spec["device"]
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out["gflops"] = 2 * n ** 3 / timed(device, spec, lambda: torch.mm(a, b)) / 1e9


# ----------------------------------------------------------------- ONNX Runtime anchors

def onnx_paths(spec):
    """(fp32, int8) model files for spec's classes and size in spec's cache folder."""
    tag = f"alexnet-c{spec['classes']}-s{spec['size']}"
    return (os.path.join(spec["cache"], tag + ".onnx"), os.path.join(spec["cache"], tag + "-int8.onnx"))


def prepare_onnx(spec, out):
    """Exports (and, for ort-int8, quantises) the model once per driver run, in a process of its
    own: the measured ONNX Runtime processes then import neither torch nor the exporter, so their
    time and memory are ONNX Runtime's. Files are written under a temporary name, then renamed."""
    import warnings
    import numpy as np
    import torch
    import torchvision
    start = time.perf_counter()
    fp32, int8 = onnx_paths(spec)
    if not os.path.exists(fp32):
        # dynamo=False: the TorchScript exporter, which 2.x warns is no longer the default.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.manual_seed(0)
        model = torchvision.models.alexnet(num_classes=spec["classes"]).eval()
        x = torch.randn(1, 3, spec["size"], spec["size"])
        tmp = fp32 + f".{os.getpid()}.tmp"
        torch.onnx.export(model, (x,), tmp, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        os.replace(tmp, fp32)
    if spec["anchor"] == "ort-int8" and not os.path.exists(int8):
        from onnxruntime import quantization as q

        class Calibration(q.CalibrationDataReader):
            """spec's calibration_images random-normal images (seed 0) in batches of up to 8: the
            model-only rows have no real images, and alexnet's int8 calibrates on its random
            batch too."""

            def __init__(self):
                count, size = spec["calibration_images"], spec["size"]
                images = np.random.default_rng(0).standard_normal((count, 3, size, size), dtype=np.float32)
                self.batches = iter(np.array_split(images, max(1, count // 8)))

            def get_next(self):
                x = next(self.batches, None)
                return None if x is None else {"input": x}

        pre = int8 + f".pre.{os.getpid()}.onnx"
        tmp = int8 + f".{os.getpid()}.tmp"
        q.quant_pre_process(fp32, pre)
        q.quantize_static(pre, tmp, Calibration(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
        os.remove(pre)
        os.replace(tmp, int8)
    out["prepare_s"] = time.perf_counter() - start


def onnx_runtime(spec, out):
    if spec["kind"] != "infer" or spec["precision"] != "fp32" or spec["device"] != "cpu":
        raise Unavailable("ONNX Runtime anchors measure CPU fp32/int8 model-only inference only")
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable(f"no ONNX Runtime for {sys.executable}: {e}")
    fp32, int8 = onnx_paths(spec)
    path = int8 if spec["anchor"] == "ort-int8" else fp32
    if not os.path.exists(path):
        raise Unavailable(f"{path} missing: the driver makes it first (kind prepare-onnx)")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = spec["threads"]
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((spec["batch"], 3, spec["size"], spec["size"]),
                                                 dtype=np.float32)  # (B, 3, S, S)
    seconds = timed("cpu", spec, lambda: session.run(None, {"input": x}))
    out["img_per_s"] = spec["batch"] / seconds
    out["ms_per_batch"] = 1000 * seconds
    out["ort"] = ort.__version__


# ----------------------------------------------------------------- driver helpers

def versions(spec, out):
    """What this interpreter brings: torch, torchvision, ONNX Runtime, the GPU."""
    import torch
    import torchvision
    out.update(torch=torch.__version__, torchvision=torchvision.__version__,
               default_threads=torch.get_num_threads(), python=sys.executable)
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if capability:
        out["cpu_capability"] = capability()
    try:
        import onnxruntime
        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if spec["device"].startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = f"{torch.cuda.get_device_name(spec['device'])} (CUDA {torch.version.cuda})"


def jpegs(spec, out):
    """The ImageNet-like JPEG folder scripts/bench_data.py makes (it needs PIL and torchvision)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_data import make_folder
    make_folder(spec["folder"], spec["count"])
    out["images"] = spec["count"]


def main():
    spec = json.loads(sys.argv[1])
    out = {}
    try:
        if spec["kind"] == "versions":
            versions(spec, out)
        elif spec["kind"] == "jpegs":
            jpegs(spec, out)
        elif spec["kind"] == "prepare-onnx":
            prepare_onnx(spec, out)
        elif spec["anchor"] in ("ort", "ort-int8"):
            onnx_runtime(spec, out)
            out["threads"] = spec["threads"]
            out["peak_rss_mb"] = peak_rss_mb()
        else:
            import torch
            torch.set_num_threads(spec["threads"])
            if spec["device"].startswith("cuda"):
                torch.backends.cudnn.benchmark = True
                # alexnet's fp32 on CUDA is strict fp32; so is every anchor's.
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
            if spec["kind"] == "matmul":
                matmul(spec, out)
            elif spec["kind"] in ("infer", "train"):
                model_only(spec, out)
            else:
                end_to_end(spec, out)
            out["threads"] = torch.get_num_threads()
            out["peak_rss_mb"] = peak_rss_mb()
            if spec["device"].startswith("cuda"):
                free, total = torch.cuda.mem_get_info()
                out["cuda_used_mb"] = (total - free) / 2 ** 20
    except Exception as e:  # any failure of the anchor: its first line, for the table's notes
        lines = [line for line in str(e).splitlines() if line.strip()]
        print(json.dumps({"error": f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]}))
        sys.stdout.flush()
        if not isinstance(e, Unavailable):
            import traceback
            traceback.print_exc()
        sys.exit(3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
