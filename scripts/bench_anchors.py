"""The Python side of scripts/bench_vs_pytorch.py: one measurement of one anchor per process.

    PYTHON scripts/bench_anchors.py SPEC_JSON

prints one JSON object on its last stdout line (exit status 0), or {"error": "..."} with exit
status 3 when the anchor cannot run here (a torch.compile without a C++ compiler, an ONNX
Runtime or OpenVINO that is not installed, ...). The driver runs this file with each anchor's
own interpreter: Debian's /usr/bin/python3 (PyTorch 1.13) for the `torch113` anchor, the PyPI
virtual environment (PyTorch 2.x, ONNX Runtime, OpenVINO) for the others, so this file imports
nothing beyond the standard library at the top and keeps to what PyTorch 1.13 has outside the
anchors that need 2.x.

SPEC_JSON fields: anchor (eager, eager-cl, compile, ort, ort-int8, ov-f32, ov-default, ov-int8;
torch113 is eager under another interpreter), kind (matmul, infer, train, e2e-infer, e2e-train;
versions, jpegs and prepare-onnx for the driver's set-up), batch, size, classes, precision
(fp32, bf16, fp16, int8: the row's), threads, device, warmup, iters, recipe (training), folder
and workers (end to end), cache (a folder for the exported ONNX models), int8 (prepare-onnx:
also make the int8 QDQ model), calibration_images (its calibration).

Every measurement's JSON says the precision it actually ran ("precision"), so that the driver
compares each row within one precision: OpenVINO's default, for one, is its own choice.
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
    """Exports (and, with spec's int8, quantises) the model once per driver run, in a process of
    its own: the measured ONNX Runtime and OpenVINO processes then import neither torch nor the
    exporter, so their time and memory are their runtime's. The int8 QDQ model, made with ONNX
    Runtime's quantisation tools, serves ort-int8 and ov-int8 alike. Files are written under a
    temporary name, then renamed."""
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
    if spec.get("int8") and not os.path.exists(int8):
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


def onnx_model(spec, runtime):
    """The exported model file the anchor runs: the int8 QDQ one for the *-int8 anchors."""
    int8_anchor = spec["anchor"].endswith("-int8")
    if spec["kind"] != "infer" or spec["device"] != "cpu":
        raise Unavailable(f"{runtime} anchors measure CPU model-only inference only")
    if int8_anchor != (spec["precision"] == "int8"):
        raise Unavailable(f"{spec['anchor']} runs in {'int8' if int8_anchor else 'float'} rows only")
    fp32, int8 = onnx_paths(spec)
    path = int8 if int8_anchor else fp32
    if not os.path.exists(path):
        raise Unavailable(f"{path} missing: the driver makes it first (kind prepare-onnx)")
    return path


def benchmark_input(spec):
    """The random-normal batch (seed 1) both ONNX runtimes time: (B, 3, S, S) float32."""
    import numpy as np
    return np.random.default_rng(1).standard_normal((spec["batch"], 3, spec["size"], spec["size"]),
                                                    dtype=np.float32)


def onnx_runtime(spec, out):
    if spec["precision"] not in ("fp32", "int8"):
        raise Unavailable(f"ONNX Runtime anchors run fp32 (ort) and int8 (ort-int8), not {spec['precision']}")
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise Unavailable(f"no ONNX Runtime for {sys.executable}: {e}")
    path = onnx_model(spec, "ONNX Runtime")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = spec["threads"]
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = benchmark_input(spec)  # (B, 3, S, S)
    seconds = timed("cpu", spec, lambda: session.run(None, {"input": x}))
    out["img_per_s"] = spec["batch"] / seconds
    out["ms_per_batch"] = 1000 * seconds
    out["ort"] = ort.__version__
    out["precision"] = "int8" if spec["anchor"] == "ort-int8" else "fp32"


# ----------------------------------------------------------------- OpenVINO anchors

# OpenVINO's element type names -> the driver's precision names.
OV_PRECISION = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8"}


def layer_precisions(compiled_model):
    """{layer type: sorted runtime precisions} of the compiled model's compute layers, as the
    CPU plugin reports them (its runtime model's rt_info): what actually ran in each."""
    seen = {}
    for op in compiled_model.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        kind = info["layerType"].astype(str)
        if kind in ("Convolution", "FullyConnected", "MatMul", "Pooling"):
            seen.setdefault(kind, set()).add(info["runtimePrecision"].astype(str))
    return {kind: sorted(p) for kind, p in seen.items()}


def openvino(spec, out):
    """The ONNX model the ort anchors run (the QDQ one for ov-int8), read by OpenVINO, given a
    static batch (as torch.compile's static shapes) and compiled for its CPU plugin with one
    stream, spec's threads and the latency hint at batch 1, the throughput hint above. ov-f32
    asks for f32; ov-default leaves the precision to OpenVINO (bf16 on CPUs with AMX or
    AVX512-BF16) and reports what it chose; ov-int8 asks for f32 where the QDQ model leaves a
    layer unquantised, as ONNX Runtime and alexnet's int8 keep fp32 there."""
    if spec["anchor"] == "ov-f32" and spec["precision"] != "fp32":
        raise Unavailable(f"ov-f32 runs fp32, not {spec['precision']}")
    try:
        import openvino as ov
    except ImportError as e:
        raise Unavailable(f"no OpenVINO for {sys.executable}: {e}")
    path = onnx_model(spec, "OpenVINO")
    core = ov.Core()
    model = core.read_model(path)
    model.reshape([spec["batch"], 3, spec["size"], spec["size"]])
    config = {"NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": spec["threads"],
              "PERFORMANCE_HINT": "LATENCY" if spec["batch"] == 1 else "THROUGHPUT"}
    if spec["anchor"] != "ov-default":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    try:
        compiled_model = core.compile_model(model, "CPU", config)
    except RuntimeError as e:
        # OpenVINO's message opens with the call stack's files; its last line says what failed.
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise RuntimeError(f"OpenVINO could not compile the model: {lines[-1] if lines else e}") from e
    request = compiled_model.create_infer_request()
    x = benchmark_input(spec)  # (B, 3, S, S)
    seconds = timed("cpu", spec, lambda: request.infer({0: x}))
    out["img_per_s"] = spec["batch"] / seconds
    out["ms_per_batch"] = 1000 * seconds
    out["openvino"] = ov.__version__.split("-")[0]
    chosen = compiled_model.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16"
    layers = layer_precisions(compiled_model)
    out["ov_inference_precision"] = chosen
    out["ov_performance_hint"] = str(compiled_model.get_property("PERFORMANCE_HINT"))
    out["ov_num_streams"] = int(compiled_model.get_property("NUM_STREAMS"))
    out["ov_threads"] = int(compiled_model.get_property("INFERENCE_NUM_THREADS"))
    out["ov_layers"] = layers
    if spec["anchor"] == "ov-int8":
        # int8 when its convolutions ran on 8-bit integers; else what they ran instead.
        conv = layers.get("Convolution", ["?"])
        out["precision"] = "int8" if all(p in ("u8", "i8") for p in conv) else OV_PRECISION.get(
            conv[0], conv[0])
    else:
        out["precision"] = OV_PRECISION.get(chosen, chosen)


# ----------------------------------------------------------------- driver helpers

def versions(spec, out):
    """What this interpreter brings: torch, torchvision, ONNX Runtime, OpenVINO, the GPU."""
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
    try:
        import openvino
        out["openvino"] = openvino.__version__.split("-")[0]
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
        elif spec["anchor"] in ("ort", "ort-int8", "ov-f32", "ov-default", "ov-int8"):
            (onnx_runtime if spec["anchor"].startswith("ort") else openvino)(spec, out)
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
            out.setdefault("precision", spec.get("precision", "fp32"))
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
