#!/usr/bin/python3
"""`alexnet bench`, and --precision / --channels-last of predict and eval, end to end:
bad flags give exit status 2 naming the flag; tiny runs print the JSON fields the
benchmark script reads; FLOP counts agree with torchvision's layer shapes; bf16
logits stay close to PyTorch's fp32 ones. Nothing here is timed.

Run by ctest; needs ALEXNET_BINARY (default build/app/alexnet).
"""
import gzip
import json
import os
import struct
import subprocess
import tempfile
import unittest

import torch
import torchvision

from fixture import main as fixture_main, once
BINARY = os.environ.get("ALEXNET_BINARY", "build/app/alexnet")
PHOTOS = "/usr/share/doc/opencv-doc/examples/data"
TINY = ["--image-size", "64", "--batch-size", "2", "--iters", "1", "--warmup", "0", "--threads", "1"]
FIELDS = ["mode", "device", "threads", "precision", "channels_last", "compute", "blas", "batch_size",
          "image_size", "num_classes", "img_per_s", "ms_per_batch", "gflop_per_image", "gflops",
          "peak_rss_mb", "cuda_used_mb"]


def cpu_has_avx512_core():
    """AVX-512 F/BW/VL/DQ in /proc/cpuinfo: where oneDNN has its Winograd convolution."""
    with open("/proc/cpuinfo") as f:
        flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    return all(f in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq"))


def run(*args, timeout=300):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=timeout)


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


def write_idx(path, array):
    """An uncompressed IDX file of uint8 data (the MNIST format)."""
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, array.dim()))
        for s in array.shape:
            f.write(struct.pack(">I", s))
        f.write(array.to(torch.uint8).numpy().tobytes())


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


class BenchRuns(unittest.TestCase):
    def bench_json(self, *args):
        r = run("bench", "--device", "cpu", "--json", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr

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
        out, log = self.bench_json("--mode", "infer", "--precision", "bf16", *TINY)
        self.assertIn(out["precision"], ("bf16", "fp32"))  # fp32: a CPU without bf16 (warned)
        if out["precision"] == "bf16":
            self.assertIn("bf16 weights", out["compute"])
        else:
            self.assertIn("using fp32", log)
        out, log = self.bench_json("--mode", "infer", "--precision", "auto", *TINY)
        self.assertIn(f"precision {out['precision']} (auto: ", log)

    def test_logits_match_pytorch(self):
        ref = reference_logits()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "logits.bin")
            for precision, layout, bound in (("fp32", "off", 1e-5), ("fp32", "on", 1e-5), ("bf16", "on", 0.03)):
                out, _ = self.bench_json("--mode", "infer", "--precision", precision,
                                         f"--channels-last={layout}", "--logits", path, *TINY)
                got = torch.from_file(path, size=2 * 1000, dtype=torch.float32).view(2, 1000)
                if precision == "bf16":
                    if out["precision"] != "bf16":
                        continue  # a CPU without bf16: fp32 was used (and warned about)
                    bound *= ref.abs().max().item()  # 8 significant bits: relative to the largest logit
                diff = (got - ref).abs().max().item()
                self.assertLessEqual(diff, bound, f"{precision} {layout}: max |diff| {diff:.3g}")

    def test_onednn_plan_resolves_logs_and_matches_pytorch(self):
        out, err = self.bench_json("--mode", "infer", "--precision", "fp32", *TINY)
        if "this build has no oneDNN plan" in err:
            self.skipTest("built without oneDNN's headers: no plan (" + out["compute"] + ")")
        # auto: Winograd for CPU fp32 inference where oneDNN has a Winograd kernel (AVX-512),
        # else off (the plan's direct kernels are slower than LibTorch's); off: LibTorch's layers.
        if cpu_has_avx512_core():
            self.assertIn("oneDNN plan (Winograd)", out["compute"])
        else:
            self.assertNotIn("oneDNN plan", out["compute"])
            self.assertIn("oneDNN plan: off (auto: oneDNN has no Winograd convolution", err)
        out, _ = self.bench_json("--mode", "infer", "--precision", "fp32", "--onednn-plan", "off", *TINY)
        self.assertNotIn("oneDNN plan", out["compute"])
        out, _ = self.bench_json("--mode", "infer", "--precision", "fp32", "--onednn-plan", "direct", *TINY)
        self.assertIn("oneDNN plan (direct)", out["compute"])
        # Training never uses it (the plan has no backward pass).
        out, _ = self.bench_json("--mode", "train", "--precision", "fp32", *TINY)
        self.assertNotIn("oneDNN plan", out["compute"])
        # Asked for where it cannot run: an error naming the flag, not a silent fallback.
        r = run("bench", "--device", "cpu", "--mode", "infer", "--precision", "bf16",
                "--onednn-plan", "winograd", *TINY)
        if "using fp32" not in r.stderr:  # a CPU with bf16: bf16 inference, no plan
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("error: --onednn-plan winograd: the plan runs fp32 inference on the CPU",
                          r.stderr.strip().splitlines()[-1])
        # Without AVX-512 oneDNN has no Winograd kernel: asking for it is an error naming the flag.
        plans = ("winograd", "direct") if cpu_has_avx512_core() else ("direct",)
        if not cpu_has_avx512_core():
            r = run("bench", "--device", "cpu", "--mode", "infer", "--precision", "fp32",
                    "--onednn-plan", "winograd", *TINY)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("error: --onednn-plan winograd: oneDNN has no Winograd convolution for this CPU",
                          r.stderr.strip().splitlines()[-1])
        # Logits against torchvision for the same seed, every algorithm this CPU has, both layouts.
        ref = reference_logits()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "logits.bin")
            for plan in plans:
                for layout in ("on", "off"):
                    self.bench_json("--mode", "infer", "--precision", "fp32", "--onednn-plan", plan,
                                    f"--channels-last={layout}", "--logits", path, *TINY)
                    got = torch.from_file(path, size=2 * 1000, dtype=torch.float32).view(2, 1000)
                    # Relative to the largest logit: measured 1e-6 for both algorithms.
                    err = ((got - ref).abs().max() / ref.abs().max()).item()
                    self.assertLess(err, 1e-4, f"{plan} {layout}: max |diff| / max |logit| = {err:.3g}")

    def test_matmul(self):
        out, _ = self.bench_json("--mode", "matmul", "--matrix-size", "64", "--iters", "2", "--threads", "1")
        self.assertEqual(out["mode"], "matmul")
        self.assertGreater(out["gflops"], 0)


class EndToEnd(unittest.TestCase):
    """A 40-image MNIST-format dataset: bench on data, eval and predict precision flags."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        raw = os.path.join(cls.tmp.name, "raw")
        os.makedirs(raw)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (40, 28, 28), generator=g)
        labels = torch.arange(40) % 10
        for prefix in ("train", "t10k"):
            write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), images)
            write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), labels)
        cls.spec = "mnist:" + cls.tmp.name
        torch.manual_seed(0)
        cls.weights10 = os.path.join(cls.tmp.name, "alexnet10.pt")
        torch.jit.script(torchvision.models.alexnet(num_classes=10).eval()).save(cls.weights10)
        torch.manual_seed(0)
        cls.model = torchvision.models.alexnet().eval()
        cls.weights = os.path.join(cls.tmp.name, "alexnet.pt")
        torch.jit.script(cls.model).save(cls.weights)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

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
        base = ["eval", "--weights", self.weights10, "--data", self.spec, "--json", "--threads", "1"]
        r32 = run(*base)
        self.assertEqual(r32.returncode, 0, r32.stderr)
        self.assertIn("precision fp32 (as requested)", r32.stderr)
        self.assertIn("fp32, NCHW", r32.stderr)
        r16 = run(*base, "--precision", "bf16", "--channels-last")
        self.assertEqual(r16.returncode, 0, r16.stderr)
        a, b = json.loads(r32.stdout), json.loads(r16.stdout)
        self.assertEqual(a["images"], b["images"])
        # Random weights: near-tied logits, so only the loss is compared (bf16: ~3 digits).
        self.assertAlmostEqual(a["loss"], b["loss"], delta=0.02 * a["loss"])
        # The default runs LibTorch's layers (PyTorch's results bit for bit); the
        # oneDNN plan on request, within 1e-5 of the loss.
        self.assertNotIn("oneDNN plan", r32.stderr)
        rplan = run(*base, "--onednn-plan", "auto")
        self.assertEqual(rplan.returncode, 0, rplan.stderr)
        if "no oneDNN plan" not in rplan.stderr:
            self.assertIn("oneDNN plan (Winograd)" if cpu_has_avx512_core() else "oneDNN plan: off (auto",
                          rplan.stderr)
        c = json.loads(rplan.stdout)
        self.assertAlmostEqual(a["loss"], c["loss"], delta=1e-5 * a["loss"])
        r = run(*base, "--onednn-plan", "sometimes")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--onednn-plan sometimes", r.stderr.strip().splitlines()[-1])
        r = run(*base, "--precision", "half")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--precision half", r.stderr.strip().splitlines()[-1])

    @unittest.skipUnless(os.path.isdir(PHOTOS), "needs Debian's opencv-doc photographs")
    def test_predict_bf16_logits_close_to_pytorch_fp32(self):
        from PIL import Image
        from torchvision import transforms
        paths = sorted(os.path.join(PHOTOS, f) for f in os.listdir(PHOTOS) if f.endswith(".jpg"))[:4]
        tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                 transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        with torch.no_grad():
            ref = self.model(torch.stack([tf(Image.open(p).convert("RGB")) for p in paths]))
        for precision, layout, plan, bound in (("fp32", "on", "auto", 1e-5), ("fp32", "off", "off", 1e-5),
                                               ("bf16", "on", "auto", 0.03), ("bf16", "off", "auto", 0.03)):
            r = run("predict", "--weights", self.weights, "--json", "--topk", "0", "--threads", "1",
                    "--precision", precision, f"--channels-last={layout}", "--onednn-plan", plan, *paths)
            self.assertEqual(r.returncode, 0, r.stderr)
            if precision == "bf16" and "using fp32" in r.stderr:
                continue  # a CPU without bf16: fp32 was used (and warned about)
            got = torch.zeros_like(ref)
            for i, line in enumerate(r.stdout.splitlines()):
                for t in json.loads(line)["top"]:
                    got[i, t["index"]] = t["logit"]
            # Bound relative to the largest logit: bf16 keeps 8 significant bits (measured 0.45%).
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            self.assertLess(err, bound, f"{precision} {layout} plan {plan}: max |diff| / max |logit| = {err:.3g}")


if __name__ == "__main__":
    fixture_main()
