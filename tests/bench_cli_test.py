#!/usr/bin/python3
"""`alexnet bench`, and --precision / --channels-last / --onednn-plan of predict and eval, end to
end: bad flags give exit status 2 naming the flag; tiny runs print the JSON fields the benchmark
script reads; FLOP counts agree with torchvision's layer shapes; precision resolves as
tests/fixture.py expects of this CPU; fp32 logits match PyTorch's, and bf16 ones stay close to them.
Nothing here is timed.

The CPU decides some of this, so each class holds tests that run together or skip together (a
ctest entry is one class, and counts as skipped only when all of it is): Bf16Logits needs bf16
instructions, OnednnPlan and OnednnPlanBf16 a build with oneDNN's headers (Debian's LibTorch
flavour; PyPI's has none). The rest pin every flag the result depends on and run everywhere.

Run by ctest; needs ALEXNET_BINARY (default build/app/alexnet).
"""
import json
import math
import os
import re
import struct
import subprocess
import tempfile
import unittest
from unittest import mock

import torch
import torchvision

from fixture import (auto_precision, cpu_description, cpu_has, cpu_has_bf16, cpu_has_plan_winograd, isa_cap,
                     main as fixture_main, once)
BINARY = os.environ.get("ALEXNET_BINARY", "build/app/alexnet")
PHOTOS = "/usr/share/doc/opencv-doc/examples/data"
TINY = ["--image-size", "64", "--batch-size", "2", "--iters", "1", "--warmup", "0", "--threads", "1"]
FIELDS = ["mode", "device", "threads", "precision", "channels_last", "compute", "blas", "batch_size",
          "image_size", "num_classes", "img_per_s", "ms_per_batch", "gflop_per_image", "gflops",
          "peak_rss_mb", "cuda_used_mb"]
# bf16 keeps 8 significant bits: each logit within 3% of the largest one (measured 0.5%).
BF16_OF_LARGEST = 0.03
# The flags the binary's CPU class is made of (its `cpu:` log line lists them).
CLASS_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
NO_BF16 = f"no bf16 instructions on this CPU ({cpu_description()})"


def run(*args, timeout=300):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=timeout)


def capped_flags():
    """The flags of CLASS_FLAGS that the CPU has and oneDNN's cap withholds: the binary logs
    'capped at CAP' exactly when there is one."""
    with mock.patch.dict(os.environ):
        for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
            os.environ.pop(name, None)
        hardware = [f for f in CLASS_FLAGS if cpu_has(f)]
    return [f for f in hardware if not cpu_has(f)]


def skip_without_onednn_plan():
    """Raises SkipTest (the whole class) where the binary was built without oneDNN's headers."""
    r = run("bench", "--device", "cpu", "--mode", "infer", "--precision", "fp32", "--onednn-plan", "auto", *TINY)
    if r.returncode != 0:
        raise AssertionError(f"bench probing the oneDNN plan: exit {r.returncode}\n{r.stderr}")
    if "this build has no oneDNN plan" in r.stderr:
        raise unittest.SkipTest("this build has no oneDNN plan (built without oneDNN's headers, as with "
                                "PyPI's LibTorch)")


def photos():
    """The first four photographs of Debian's opencv-doc, which scripts/test.sh installs."""
    if not os.path.isdir(PHOTOS):
        raise AssertionError(f"{PHOTOS} is missing: install Debian's opencv-doc (scripts/test.sh does)")
    paths = sorted(os.path.join(PHOTOS, f) for f in os.listdir(PHOTOS) if f.endswith(".jpg"))[:4]
    if len(paths) != 4:
        raise AssertionError(f"{PHOTOS}: {len(paths)} .jpg files, want 4 or more")
    return paths


def torchvision_photo_logits(model, paths):
    """torchvision's logits for `paths` fed as predict feeds a weights file without a transform."""
    from PIL import Image
    from torchvision import transforms
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        return model(torch.stack([tf(Image.open(p).convert("RGB")) for p in paths]))  # (N, 1000)


def predict_logits(test, weights, paths, *flags):
    """predict's logits of every class, (len(paths), 1000), and its log."""
    r = run("predict", "--weights", weights, "--json", "--topk", "0", "--threads", "1", *flags, *paths)
    test.assertEqual(r.returncode, 0, r.stderr)
    got = torch.zeros(len(paths), 1000)
    for i, line in enumerate(r.stdout.splitlines()):
        for t in json.loads(line)["top"]:
            got[i, t["index"]] = t["logit"]
    return got, r.stderr


def torchvision_macs(size, classes=1000):
    """Multiply-accumulates of torchvision's AlexNet on one size x size image, from forward hooks."""
    model = torchvision.models.alexnet(num_classes=classes).eval()
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs.append(output[0].numel() * k)
        else:
            macs.append(module.in_features * module.out_features)

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return sum(macs)


def reference_logits():
    """torchvision's logits for what bench --mode infer draws after manual_seed(0) with TINY's
    shapes: the model, then a (2, 3, 64, 64) batch."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, 64, 64))


def read_logits(path, rows, classes):
    """bench --logits' file: raw float32, (rows, classes)."""
    return torch.from_file(path, size=rows * classes, dtype=torch.float32).view(rows, classes)


def assert_bf16_close(test, got, ref, what):
    """got within BF16_OF_LARGEST of ref's largest logit, where constant logits could not be."""
    bound = BF16_OF_LARGEST * ref.abs().max().item()
    # Constant logits are within the bound of every reference logit only if their spread is
    # at most twice the bound; this one is wider, so the comparison can fail.
    spread = (ref.max() - ref.min()).item()
    test.assertGreater(spread, 2 * bound, f"{what}: reference logits span {spread:.3g}: too narrow to test")
    diff = (got - ref).abs().max().item()
    test.assertLessEqual(diff, bound, f"{what}: max |bf16 - fp32| {diff:.3g}, bound {bound:.3g} "
                                      f"({BF16_OF_LARGEST} of the largest logit)")


def write_idx(path, array):
    """An uncompressed IDX file of uint8 data (the MNIST format)."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.dim()))
        for s in array.shape:
            f.write(struct.pack(">I", s))
        f.write(array.to(torch.uint8).numpy().tobytes())


def write_mnist(root):
    """40 random 28x28 images labelled i % 10, as both splits of an MNIST folder; its data spec."""
    raw = os.path.join(root, "raw")
    os.makedirs(raw)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 28, 28), generator=g)
    labels = torch.arange(40) % 10
    for prefix in ("train", "t10k"):
        write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), images)
        write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), labels)
    return "mnist:" + root


def write_spread_weights(path):
    """A 10-class TorchScript AlexNet (seed 0) whose last layer is scaled 100x. torchvision's
    initialisation makes near-tied logits (eval loss ln 10 to 5 digits, as constant logits give);
    scaled, they spread over about 4 (loss 3.06), so comparing losses or logits can fail."""
    torch.manual_seed(0)
    model = torchvision.models.alexnet(num_classes=10).eval()
    with torch.no_grad():
        model.classifier[6].weight.mul_(100)
        model.classifier[6].bias.mul_(100)
    torch.jit.script(model).save(path)
    return path


def eval_json(test, *args):
    r = run("eval", "--json", "--threads", "1", *args)
    test.assertEqual(r.returncode, 0, r.stderr)
    return json.loads(r.stdout), r.stderr


def assert_loss_spread(test, out):
    """Constant logits give a loss of ln(10) exactly: the loss compared must be far from it."""
    test.assertGreater(abs(out["loss"] - math.log(10)), 0.3,
                       f"fp32 loss {out['loss']} is within 0.3 of ln 10: the logits are near-tied")


class BenchFlags(unittest.TestCase):
    def assertUsage(self, args, needle):
        r = run("bench", *args)
        self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
        last = r.stderr.strip().splitlines()[-1]
        self.assertTrue(last.startswith("error: "), last)
        self.assertIn(needle, last)

    @once
    def test_bad_values_name_the_flag(self):
        self.assertUsage(["--mode", "fast"], "--mode fast")
        self.assertUsage(["--precision", "fp8"], "--precision fp8")
        self.assertUsage(["--channels-last=maybe"], "--channels-last maybe")
        self.assertUsage(["--batch-size", "0"], "--batch-size")
        self.assertUsage(["--iters", "0"], "--iters")
        self.assertUsage(["--warmup", "-1"], "--warmup")
        self.assertUsage(["--image-size", "32"], "--image-size")
        self.assertUsage(["--num-classes", "0"], "--num-classes")
        self.assertUsage(["--batch-size", "two"], "--batch-size")
        self.assertUsage(["--batch-size=two"], "--batch-size")
        self.assertUsage(["--iters=1.5"], "--iters")
        self.assertUsage(["--mode", "data"], "--data")
        self.assertUsage(["--predictions", "p.txt"], "--predictions")
        self.assertUsage(["--mode", "train", "--logits", "l.bin"], "--logits")
        self.assertUsage(["--onednn-plan", "fast"], "--onednn-plan fast")
        # An optional value goes after '=': the error says how.
        self.assertUsage(["--channels-last", "off"], "--channels-last=off")

    def test_fp16_on_cpu_is_an_error(self):
        r = run("bench", "--device", "cpu", "--precision", "fp16", *TINY)
        self.assertEqual(r.returncode, 1, r.stderr)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertIn("error: --precision fp16 needs CUDA", errors[0])


class BenchJson:
    """A TestCase mixin: bench's JSON result on the CPU, and its log."""

    def bench_json(self, *args):
        r = run("bench", "--device", "cpu", "--json", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


class BenchRuns(BenchJson, unittest.TestCase):
    def test_infer_prints_the_fields(self):
        out, log = self.bench_json("--mode", "infer", "--precision", "fp32", *TINY)
        for f in FIELDS:
            self.assertIn(f, out)
        self.assertEqual((out["mode"], out["batch_size"], out["image_size"]), ("infer", 2, 64))
        self.assertEqual((out["precision"], out["threads"], out["device"]), ("fp32", 1, "cpu"))
        self.assertIsNone(out["cuda_used_mb"])
        self.assertGreater(out["img_per_s"], 0)
        self.assertGreater(out["peak_rss_mb"], 0)
        # FLOPs from the layer shapes: 2 per multiply-accumulate, exactly torchvision's shapes.
        self.assertAlmostEqual(out["gflop_per_image"], 2 * torchvision_macs(64) / 1e9, delta=1e-5)
        self.assertIn("precision fp32 (as requested)", log)
        self.assertIn("device cpu threads 1", log)

    def test_weights_file_adds_little_to_peak_memory(self):
        # Loading a 1000-class weights file (244 MB: torch.save zip and legacy, TorchScript)
        # must not hold the file and the model at once: the peak resident memory of batch-1
        # inference with the file stays within a quarter of the file's size of the same run
        # on a model built in memory. (Holding both,
        # as a read-into-a-buffer loader does, adds the whole file.) Memory, not time.
        args = ["--mode", "infer", "--batch-size", "1", "--image-size", "224", "--iters", "1",
                "--warmup", "0", "--threads", "1", "--precision", "fp32"]
        base, _ = self.bench_json(*args)
        with tempfile.TemporaryDirectory() as tmp:
            model = torchvision.models.alexnet().eval()
            for name, kwargs in (("zip", {}), ("legacy", {"_use_new_zipfile_serialization": False}),
                                 ("torchscript", None)):
                path = os.path.join(tmp, name + ".pth")
                if kwargs is None:
                    torch.jit.save(torch.jit.script(model), path)
                else:
                    torch.save(model.state_dict(), path, **kwargs)
                size_mb = os.path.getsize(path) / 2**20
                out, _ = self.bench_json("--weights", path, *args)
                os.remove(path)
                extra = out["peak_rss_mb"] - base["peak_rss_mb"]
                self.assertLess(extra, size_mb / 4,
                                f"{name}: {out['peak_rss_mb']:.0f} MiB with the file against "
                                f"{base['peak_rss_mb']:.0f} MiB without ({size_mb:.0f} MiB file)")

    def test_train_counts_three_forward_passes(self):
        out, _ = self.bench_json("--mode", "train", "--num-classes", "10", "--channels-last=on", *TINY)
        self.assertEqual((out["mode"], out["num_classes"], out["channels_last"]), ("train", 10, True))
        self.assertAlmostEqual(out["gflop_per_image"], 3 * 2 * torchvision_macs(64, 10) / 1e9, delta=1e-5)

    def test_bf16_and_auto_resolve_and_log(self):
        # What each request resolves to, from tests/fixture.py's reading of the CPU and the cap.
        print(f"\nCPU: {cpu_description()}; bf16 {cpu_has_bf16()}, auto {auto_precision()}")
        capped = capped_flags()
        out, log = self.bench_json("--mode", "infer", "--precision", "bf16", *TINY)
        if cpu_has_bf16():
            self.assertEqual(out["precision"], "bf16", log)
            self.assertIn("precision bf16 (as requested", log)
            self.assertIn("bf16 weights", out["compute"])
        else:
            self.assertEqual(out["precision"], "fp32", log)
            self.assertIn("using fp32", log)  # the warning
        out, log = self.bench_json("--mode", "infer", "--precision", "auto", *TINY)
        self.assertEqual(out["precision"], auto_precision(), log)
        self.assertIn(f"precision {auto_precision()} (auto: ", log)
        if capped:
            self.assertIn(f"capped at {isa_cap()}", log, f"the cap withholds {' '.join(capped)}")
        else:
            self.assertNotIn("capped at", log, f"cap {isa_cap() or 'unset'} withholds nothing this CPU has")

    def test_logits_match_pytorch(self):
        # fp32 on LibTorch's layers (--onednn-plan off): PyTorch's results to rounding, both layouts.
        ref = reference_logits()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "logits.bin")
            for layout in ("off", "on"):
                out, _ = self.bench_json("--mode", "infer", "--precision", "fp32", f"--channels-last={layout}",
                                         "--onednn-plan", "off", "--logits", path, *TINY)
                self.assertNotIn("oneDNN plan", out["compute"])
                diff = (read_logits(path, 2, 1000) - ref).abs().max().item()
                self.assertLessEqual(diff, 1e-5, f"fp32 channels-last {layout}: max |diff| {diff:.3g} (bound 1e-5)")

    def test_matmul(self):
        out, _ = self.bench_json("--mode", "matmul", "--matrix-size", "64", "--iters", "2", "--threads", "1")
        self.assertEqual(out["mode"], "matmul")
        self.assertGreater(out["gflops"], 0)


class Layers(unittest.TestCase):
    """bench --layers: one row per layer or engine stage, with its time, rate and memory traffic,
    the pass's total, the peak of the precision and the machine's cache and DRAM read bandwidth."""

    def table(self, *flags):
        r = run("bench", "--device", "cpu", "--mode", "infer", "--layers", *TINY, *flags)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| ")]
        self.assertEqual([c.strip() for c in rows[0]],
                         ["layer", "what", "ms", "rate (% of peak)", "memory traffic (% of DRAM read)",
                          "share of the pass"])
        return {c[0].strip(): [x.strip() for x in c[1:]] for c in rows[1:]}, r.stdout, r.stderr

    def check(self, rows, out, peak):
        for name in ("features.0", "features.3", "features.6", "features.8", "features.10", "classifier.1",
                     "classifier.4", "classifier.6"):
            self.assertIn(name, rows, out)
            what, ms, rate, memory, _ = rows[name]
            self.assertRegex(rate, r"^\d+ GFLOP/s \(\d+%\)$", name)
            self.assertRegex(memory, r"^\d+\.\d GB/s \(\d+%\)$", name)
            self.assertGreater(float(ms), 0, name)
        self.assertIn(f"peak: {peak}", out)
        m = re.search(r"memory read: ([\d.]+) GB/s from cache \(a (\d+) MiB buffer\), ([\d.]+) GB/s from DRAM "
                      r"\((\d+) MiB\)", out)
        self.assertIsNotNone(m, out)
        self.assertGreater(float(m.group(1)), 0)
        self.assertGreater(float(m.group(3)), 0)
        self.assertGreaterEqual(int(m.group(4)), 512)

    def test_fp32(self):
        rows, out, _ = self.table("--precision", "fp32", "--onednn-plan", "off")
        self.check(rows, out, "fp32 2048x2048 torch::mm")
        self.assertIn("features.1", rows)  # ReLU timed on its own, layer by layer

    @unittest.skipUnless(cpu_has_bf16(), NO_BF16)
    def test_bf16(self):
        rows, out, log = self.table("--precision", "bf16")
        peak = re.search(r"peak: (bf16 4096x4096 torch::mm|bf16 3x3 convolution 256->256 at 28x28) ", out)
        self.assertIsNotNone(peak, out)
        self.check(rows, out, peak.group(1))
        if "fused oneDNN operators" in log:
            # The engine's stages: ReLU inside each convolution, a conversion first.
            self.assertNotIn("features.1", rows)
            self.assertIn("convert", rows)
            self.assertIn("+ ReLU, bf16", rows["features.0"][0])


class OnednnPlan(BenchJson, unittest.TestCase):
    """fp32 inference as one oneDNN pipeline (--onednn-plan), with its classifier at small batch
    sizes: chosen as the CPU says, logged, refused where it cannot run, and PyTorch's logits to
    1e-4 of the largest (TINY's batch of 2 runs the plan's classifier)."""

    @classmethod
    def setUpClass(cls):
        skip_without_onednn_plan()
        cls.tmp = tempfile.TemporaryDirectory()
        cls.spec = write_mnist(cls.tmp.name)
        cls.weights10 = write_spread_weights(os.path.join(cls.tmp.name, "alexnet10.pt"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_auto_resolves_as_the_cpu_says(self):
        # auto: for CPU fp32 inference, the classifier's inner products, and the features with
        # Winograd where the plan has it (oneDNN's on AVX-512, its own on AVX2; without it the
        # direct kernels are slower than LibTorch's); off: LibTorch's layers.
        out, log = self.bench_json("--mode", "infer", "--precision", "fp32", "--channels-last=on",
                                   "--onednn-plan", "auto", *TINY)
        if cpu_has_plan_winograd():
            self.assertIn("oneDNN plan (Winograd) with its classifier", out["compute"])
            self.assertIn("oneDNN plan: Winograd, and the classifier at batch sizes up to 4 "
                          "(auto: fp32 inference on the CPU)", log)
        else:
            self.assertIn("oneDNN plan (the classifier)", out["compute"])
            self.assertIn("oneDNN plan: the classifier only, at batch sizes up to 4 (auto: oneDNN has no "
                          "Winograd convolution", log)

    def test_off_direct_and_training(self):
        out, _ = self.bench_json("--mode", "infer", "--precision", "fp32", "--channels-last=on",
                                 "--onednn-plan", "off", *TINY)
        self.assertNotIn("oneDNN plan", out["compute"])
        out, _ = self.bench_json("--mode", "infer", "--precision", "fp32", "--channels-last=on",
                                 "--onednn-plan", "direct", *TINY)
        self.assertIn("oneDNN plan (direct) with its classifier", out["compute"])
        # Training never uses it (the plan has no backward pass).
        out, _ = self.bench_json("--mode", "train", "--precision", "fp32", "--channels-last=on",
                                 "--onednn-plan", "auto", *TINY)
        self.assertNotIn("oneDNN plan", out["compute"])

    def test_winograd_where_the_plan_has_it(self):
        r = run("bench", "--device", "cpu", "--json", "--mode", "infer", "--precision", "fp32",
                "--channels-last=on", "--onednn-plan", "winograd", *TINY)
        if cpu_has_plan_winograd():
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("oneDNN plan (Winograd)", json.loads(r.stdout)["compute"])
        else:
            # Asked for where it cannot run: an error naming the flag, not a silent fallback.
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("error: --onednn-plan winograd: the plan has no Winograd convolution for this CPU",
                          r.stderr.strip().splitlines()[-1])

    def test_logits_match_pytorch(self):
        # Against torchvision for the same seed, every algorithm this CPU has, both layouts.
        plans = ("winograd", "direct") if cpu_has_plan_winograd() else ("direct",)
        ref = reference_logits()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "logits.bin")
            for plan in plans:
                for layout in ("on", "off"):
                    self.bench_json("--mode", "infer", "--precision", "fp32", "--onednn-plan", plan,
                                    f"--channels-last={layout}", "--logits", path, *TINY)
                    got = read_logits(path, 2, 1000)
                    # Relative to the largest logit: measured 1e-6 for both algorithms.
                    err = ((got - ref).abs().max() / ref.abs().max()).item()
                    self.assertLess(err, 1e-4, f"{plan} {layout}: max |diff| / max |logit| = {err:.3g} (bound 1e-4)")

    def test_eval_matches_libtorch_layers(self):
        base = ["--weights", self.weights10, "--data", self.spec, "--precision", "fp32", "--channels-last=off"]
        a, log = eval_json(self, *base, "--onednn-plan", "off")
        self.assertNotIn("oneDNN plan", log)
        assert_loss_spread(self, a)
        c, log = eval_json(self, *base, "--onednn-plan", "auto")
        self.assertIn("oneDNN plan (Winograd) with its classifier" if cpu_has_plan_winograd()
                      else "oneDNN plan: the classifier only", log)
        self.assertEqual(a["images"], c["images"])
        # Within 1e-5 of the loss (eval prints 6 significant digits; measured equal).
        self.assertAlmostEqual(a["loss"], c["loss"], delta=1e-5 * a["loss"])


@unittest.skipUnless(cpu_has_bf16(), NO_BF16)
class OnednnPlanBf16(unittest.TestCase):
    """--onednn-plan where bf16 inference runs: whether the bf16 engine's conv3-5 run as its bf16
    Winograd (model/winograd_bf16.h), as asked, and auto's choice logged with its reason."""

    @classmethod
    def setUpClass(cls):
        skip_without_onednn_plan()

    def bench(self, plan):
        r = run("bench", "--device", "cpu", "--mode", "infer", "--precision", "bf16", "--channels-last=on",
                "--onednn-plan", plan, *TINY, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])["compute"], r.stderr

    def test_the_flag_chooses_winograd_for_bf16(self):
        for plan, winograd in (("winograd", True), ("direct", False), ("off", False)):
            compute, log = self.bench(plan)
            self.assertTrue(compute.startswith("bf16 weights, "), compute)
            self.assertEqual("as Winograd F(2x2,3x3)" in compute, winograd, f"--onednn-plan {plan}: {compute}")
        compute, log = self.bench("auto")
        line = next((l for l in log.splitlines() if "bf16 engine: " in l), "")
        self.assertRegex(line, r"bf16 engine: (conv3-5 as Winograd F\(2x2,3x3\)|direct convolutions) \(auto: ", log)
        self.assertEqual("as Winograd" in compute, "as Winograd" in line, f"{compute} / {line}")


class MnistAndWeights:
    """A TestCase mixin: a 40-image MNIST-format dataset (cls.spec), 10-class weights with spread
    logits (cls.weights10) and a seeded 1000-class torchvision model (cls.model, cls.weights)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.spec = write_mnist(cls.tmp.name)
        cls.weights10 = write_spread_weights(os.path.join(cls.tmp.name, "alexnet10.pt"))
        torch.manual_seed(0)
        cls.model = torchvision.models.alexnet().eval()
        cls.weights = os.path.join(cls.tmp.name, "alexnet.pt")
        torch.jit.script(cls.model).save(cls.weights)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()


class EndToEnd(MnistAndWeights, unittest.TestCase):
    """A 40-image MNIST-format dataset: bench on data, eval and predict precision flags."""

    def test_infer_on_data_writes_predictions(self):
        pred = os.path.join(self.tmp.name, "pred.txt")
        r = run("bench", "--mode", "infer", "--data", self.spec, "--weights", self.weights10,
                "--batch-size", "16", "--repeat", "1", "--threads", "1", "--predictions", pred, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual((out["images_per_run"], out["num_classes"], out["image_size"]), (40, 10, 64))
        with open(pred) as f:
            p = [int(line) for line in f]
        self.assertEqual(len(p), 40)
        self.assertTrue(all(0 <= c < 10 for c in p))
        # top1 is the share of predictions equal to the labels (i % 10), exactly.
        self.assertAlmostEqual(out["top1"], sum(c == i % 10 for i, c in enumerate(p)) / 40, delta=1e-9)

    def test_train_on_data(self):
        r = run("bench", "--mode", "train", "--data", self.spec, "--batch-size", "8", "--repeat", "1",
                "--threads", "1", "--workers", "1", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual((out["mode"], out["images_per_run"]), ("train", 40))

    @once
    def test_data_mode_keeps_its_text_output(self):
        # scripts/bench_data.py reads this line.
        r = run("bench", "--mode", "data", "--data", self.spec, "--repeat", "1", "--workers", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"median [0-9.]+ img/s")

    def test_eval_precision_flags(self):
        # eval's defaults, on every CPU: fp32, NCHW, LibTorch's layers (PyTorch's results bit for bit).
        base = ["eval", "--weights", self.weights10, "--data", self.spec, "--json", "--threads", "1"]
        r = run(*base)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("precision fp32 (as requested)", r.stderr)
        self.assertIn("fp32, NCHW", r.stderr)
        self.assertNotIn("oneDNN plan", r.stderr)
        self.assertEqual(json.loads(r.stdout)["images"], 40)
        r = run(*base, "--onednn-plan", "sometimes")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--onednn-plan sometimes", r.stderr.strip().splitlines()[-1])
        r = run(*base, "--precision", "half")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--precision half", r.stderr.strip().splitlines()[-1])

    def test_predict_fp32_logits_match_pytorch(self):
        paths = photos()
        ref = torchvision_photo_logits(self.model, paths)
        for layout in ("on", "off"):
            got, _ = predict_logits(self, self.weights, paths, "--precision", "fp32", f"--channels-last={layout}",
                                    "--onednn-plan", "off")
            # Relative to the largest logit: LibTorch's layers, rounding only.
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            self.assertLess(err, 1e-5, f"fp32 channels-last {layout}: max |diff| / max |logit| = {err:.3g} "
                                       "(bound 1e-5)")


@unittest.skipUnless(cpu_has_bf16(), NO_BF16)
class Bf16Logits(BenchJson, MnistAndWeights, unittest.TestCase):
    """--precision bf16 where the CPU has bf16 instructions: bench, eval and predict stay within
    bf16's 8 significant bits of PyTorch's fp32 (and of our own fp32 run)."""

    def test_bench_logits_close_to_pytorch(self):
        ref = reference_logits()
        path = os.path.join(self.tmp.name, "logits.bin")
        for layout in ("on", "off"):
            out, log = self.bench_json("--mode", "infer", "--precision", "bf16", f"--channels-last={layout}",
                                       "--onednn-plan", "off", "--logits", path, *TINY)
            self.assertEqual(out["precision"], "bf16", log)
            self.assertIn("bf16 weights", out["compute"])
            assert_bf16_close(self, read_logits(path, 2, 1000), ref, f"bench bf16 channels-last {layout}")

    def test_eval_close_to_fp32(self):
        base = ["--weights", self.weights10, "--data", self.spec, "--onednn-plan", "off"]
        a, _ = eval_json(self, *base, "--precision", "fp32", "--channels-last=off")
        b, log = eval_json(self, *base, "--precision", "bf16", "--channels-last=on")
        self.assertIn("precision bf16 (as requested", log)
        # LibTorch 2.x: the fused bf16 engine (fp32 batches converted on the way in); 1.13: autocast.
        self.assertRegex(log, r"bf16 (autocast|weights, (fused oneDNN operators|oneDNN plan[^,]*)[^\n]*), channels-last")
        self.assertEqual(a["images"], b["images"])
        # The mean loss: 5% of its distance from ln 10, where constant logits would put it
        # (measured 0.1%).
        assert_loss_spread(self, a)
        bound = 0.05 * abs(a["loss"] - math.log(10))
        self.assertAlmostEqual(a["loss"], b["loss"], delta=bound,
                               msg=f"eval loss fp32 {a['loss']} bf16 {b['loss']} (bound {bound:.3g})")
        # Per image: the same weights' logits on bench's seeded batch (eval prints no per-image
        # values), bf16 against our fp32 run on LibTorch's layers.
        logits = {}
        for precision, layout in (("fp32", "off"), ("bf16", "on")):
            path = os.path.join(self.tmp.name, f"logits_{precision}.bin")
            self.bench_json("--mode", "infer", "--weights", self.weights10, "--num-classes", "10",
                            "--image-size", "64", "--batch-size", "8", "--iters", "1", "--warmup", "0",
                            "--threads", "1", "--precision", precision, f"--channels-last={layout}",
                            "--onednn-plan", "off", "--logits", path)
            logits[precision] = read_logits(path, 8, 10)
        assert_bf16_close(self, logits["bf16"], logits["fp32"], "bench bf16 on the 10-class weights")

    def test_predict_close_to_pytorch_fp32(self):
        paths = photos()
        ref = torchvision_photo_logits(self.model, paths)
        for layout in ("on", "off"):
            got, log = predict_logits(self, self.weights, paths, "--precision", "bf16", f"--channels-last={layout}",
                                      "--onednn-plan", "off")
            self.assertIn("precision bf16 (as requested", log)
            assert_bf16_close(self, got, ref, f"predict bf16 channels-last {layout}")  # measured 0.45%


if __name__ == "__main__":
    fixture_main()
