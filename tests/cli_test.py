#!/usr/bin/python3
"""The `alexnet` command line, end to end: predict against torchvision, and every
bad input giving one `error: ...` line with exit status 1 (usage errors: 2).

Run by ctest after tests/make_reference.py; needs ALEXNET_BINARY and ALEXNET_REFERENCE_DIR.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import torch
import torchvision
from PIL import Image
from torchvision import transforms

from fixture import main as fixture_main, auto_precision, cpu_has, cpu_has_vnni, isa_cap, once
BINARY = os.environ.get("ALEXNET_BINARY", "build/app/alexnet")
REF = os.environ.get("ALEXNET_REFERENCE_DIR", "build/reference")
WEIGHTS = os.path.join(REF, "alexnet_seed0_script.pt")


def run(*args, timeout=120):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=timeout)


def photos():
    with open(os.path.join(REF, "photos.txt")) as f:
        return [line.strip() for line in f if line.strip()]


class PredictAgainstTorchvision(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.paths = photos()
        torch.manual_seed(0)
        model = torchvision.models.alexnet().eval()
        tf = transforms.Compose([
            transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
        with torch.no_grad():
            batch = torch.stack([tf(Image.open(p).convert("RGB")) for p in cls.paths])
            cls.logits = model(batch)
        cls.categories = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]

    def test_json_top5_matches_torchvision(self):
        r = run("predict", "--weights", WEIGHTS, "--json", "--batch-size", "3", *self.paths)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        self.assertEqual(len(lines), len(self.paths))
        for i, line in enumerate(lines):
            obj = json.loads(line)
            self.assertEqual(obj["image"], self.paths[i])
            probs = torch.softmax(self.logits[i], 0)
            want = torch.topk(probs, 5)
            got_idx = [t["index"] for t in obj["top"]]
            # Same classes in the same order; logits within 1e-4 (printed with 9
            # significant digits; the pixels and the network are bit-exact here).
            self.assertEqual(got_idx, want.indices.tolist(), self.paths[i])
            for t in obj["top"]:
                self.assertAlmostEqual(t["logit"], self.logits[i][t["index"]].item(), delta=1e-4)
                self.assertAlmostEqual(t["probability"], probs[t["index"]].item(), delta=1e-6)
                self.assertEqual(t["label"], self.categories[t["index"]])

    def test_topk_zero_lists_all_classes(self):
        r = run("predict", "--weights", WEIGHTS, "--json", "--topk", "0", self.paths[0])
        self.assertEqual(r.returncode, 0, r.stderr)
        top = json.loads(r.stdout)["top"]
        self.assertEqual(len(top), 1000)
        self.assertAlmostEqual(sum(t["probability"] for t in top), 1.0, delta=1e-4)

    def test_text_output_names_classes(self):
        r = run("predict", "--weights", WEIGHTS, "--topk", "3", self.paths[0])
        self.assertEqual(r.returncode, 0, r.stderr)
        best = int(torch.argmax(self.logits[0]))
        self.assertIn(f"{self.categories[best]} ({best})", r.stdout)
        self.assertIn("device cpu threads", r.stderr)

    def test_traced_archive_and_custom_labels(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("".join(f"thing {i}\n" for i in range(1000)))
        try:
            r = run("predict", "--weights", os.path.join(REF, "alexnet_seed0_trace.pt"),
                    "--labels", f.name, "--json", "--topk", "1", self.paths[0])
            self.assertEqual(r.returncode, 0, r.stderr)
            best = int(torch.argmax(self.logits[0]))
            self.assertEqual(json.loads(r.stdout)["top"][0]["label"], f"thing {best}")
        finally:
            os.unlink(f.name)


class BadInput(unittest.TestCase):
    """Each case: exit status 1, a single `error:` line naming the culprit, no backtrace."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.text = os.path.join(d, "notes.jpg")
        with open(cls.text, "w") as f:
            f.write("not an image\n")
        cls.empty = os.path.join(d, "empty.png")
        open(cls.empty, "wb").close()
        cls.truncated = os.path.join(d, "truncated.jpg")
        with open(photos()[0], "rb") as f:
            data = f.read()
        with open(cls.truncated, "wb") as f:
            f.write(data[: len(data) // 2])
        cls.labels = os.path.join(d, "labels.txt")
        with open(cls.labels, "w") as f:
            f.write("a\nb\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def assertError(self, args, must_name, status=1):
        r = run(*args)
        self.assertEqual(r.returncode, status, f"{args}: {r.stderr}")
        errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertIn(must_name, errors[0])
        for bad in ("Exception raised from", "terminate called", "Traceback", "frame #"):
            self.assertNotIn(bad, r.stderr)
        return r

    @once
    def test_bad_images(self):
        image = photos()[0]
        for path in ["/nonexistent/cat.jpg", self.tmp.name, self.text, self.empty, self.truncated]:
            with self.subTest(path=path):
                self.assertError(["predict", "--weights", WEIGHTS, image, path], path)

    def test_bad_weights(self):
        image = photos()[0]
        for name in ["not_an_archive.pt", "other_model.pt", "wrong_shape.pt", "wrong_name.pt"]:
            path = os.path.join(REF, name)
            with self.subTest(weights=name):
                self.assertError(["predict", "--weights", path, image], path)
        self.assertError(["predict", "--weights", "/nonexistent.pt", image], "/nonexistent.pt")
        self.assertError(["predict", "--weights", self.tmp.name, image], self.tmp.name)

    @once
    def test_labels_that_do_not_fit(self):
        self.assertError(["predict", "--weights", WEIGHTS, "--labels", self.labels, photos()[0]],
                         self.labels)

    @once
    def test_cuda_without_cuda(self):
        if torch.cuda.is_available():
            self.skipTest("a GPU is visible: --device cuda is valid here")
        self.assertError(["predict", "--weights", WEIGHTS, "--device", "cuda", photos()[0]],
                         "CUDA is not available")

    @once
    def test_usage_errors_exit_2_with_usage(self):
        cases = [["predict", "--weights", WEIGHTS, "--bogus", photos()[0]],
                 ["predict", photos()[0]],
                 ["predict", "--weights", WEIGHTS],
                 ["predict", "--weights", WEIGHTS, "--topk", "-1", photos()[0]],
                 ["predict", "--weights", WEIGHTS, "--topk", "many", photos()[0]],
                 ["frobnicate"], []]
        for args in cases:
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("usage", r.stderr.lower())
                self.assertIn("error: ", r.stderr)

    @once
    def test_help_exits_0(self):
        for args in (["--help"], ["predict", "--help"]):
            r = run(*args)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("usage", r.stdout.lower())


class PredictInputs(unittest.TestCase):
    """Folders, globs, stdin; bad files among good ones; the output formats."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.dir = os.path.join(cls.tmp.name, "pics")
        os.makedirs(os.path.join(d, "sub"))
        a, b = photos()[:2]
        cls.a, cls.b = os.path.join(d, "a.jpg"), os.path.join(d, "sub", "b.JPG")
        for src, dst in ((a, cls.a), (b, cls.b)):
            with open(src, "rb") as f, open(dst, "wb") as g:
                g.write(f.read())
        cls.bad = os.path.join(d, "bad.png")
        with open(cls.bad, "w") as f:
            f.write("not an image\n")
        with open(os.path.join(d, "notes.txt"), "w") as f:  # not an image name: never read
            f.write("x\n")
        # The reference: each good image on its own.
        cls.one = {p: json.loads(run("predict", "--weights", WEIGHTS, "--json", "-k", "3", p).stdout)
                   for p in (cls.a, cls.b)}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def lines(self, r):
        return [json.loads(l) for l in r.stdout.splitlines()]

    def assertSameResult(self, got, ref):
        # Classes exactly; numbers within 1e-5: a batch of 2 and a batch of 1 sum in
        # another order.
        self.assertEqual(got["image"], ref["image"])
        self.assertEqual([(t["index"], t["label"]) for t in got["top"]],
                         [(t["index"], t["label"]) for t in ref["top"]])
        for g, e in zip(got["top"], ref["top"]):
            self.assertAlmostEqual(g["probability"], e["probability"], delta=1e-5)
            self.assertAlmostEqual(g["logit"], e["logit"], delta=1e-5)

    @once
    def test_folder_recursively_with_a_bad_file(self):
        r = run("predict", "--weights", WEIGHTS, "--json", "-k", "3", self.dir, "/nonexistent/c.jpg")
        self.assertEqual(r.returncode, 1, r.stderr)
        got = {x["image"]: x for x in self.lines(r)}
        self.assertEqual(set(got), {self.a, self.b})  # sorted walk, extensions of any case
        for p in got:
            self.assertSameResult(got[p], self.one[p])  # as one by one
        errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertIn("2 of 4 image(s)", errors[0])
        self.assertIn(self.bad, errors[0])
        self.assertIn("/nonexistent/c.jpg", errors[0])
        self.assertNotIn("notes.txt", r.stderr)

    @once
    def test_skip_bad_exits_0(self):
        r = run("predict", "--weights", WEIGHTS, "--json", "-k", "3", "--skip-bad", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.lines(r)), 2)
        self.assertIn("skipped " + self.bad, r.stderr)
        self.assertNotIn("error:", r.stderr)

    @once
    def test_glob_and_stdin(self):
        r = run("predict", "--weights", WEIGHTS, "--json", "-k", "3", os.path.join(self.dir, "*.jpg"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([x["image"] for x in self.lines(r)], [self.a])
        r = subprocess.run([BINARY, "predict", "--weights", WEIGHTS, "--json", "-k", "3", "-"],
                           input=f"{self.b}\n\n{self.a}\n", capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = self.lines(r)
        self.assertEqual(len(got), 2)
        self.assertSameResult(got[0], self.one[self.b])
        self.assertSameResult(got[1], self.one[self.a])
        r = run("predict", "--weights", WEIGHTS, os.path.join(self.dir, "*.gif"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("matches no file", r.stderr)

    @once
    def test_csv(self):
        import csv
        import io
        r = run("predict", "--weights", WEIGHTS, "--format", "csv", "-k", "3", self.a, self.b)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        self.assertEqual(len(rows), 6)
        for row in rows:
            ref = self.one[row["image"]]["top"][int(row["rank"]) - 1]
            self.assertEqual((int(row["index"]), row["label"]), (ref["index"], ref["label"]))
            self.assertAlmostEqual(float(row["probability"]), ref["probability"], delta=1e-6)
        self.assertEqual(run("predict", "--weights", WEIGHTS, "--format", "xml", self.a).returncode, 2)


class Install(unittest.TestCase):
    def test_cmake_install_gives_a_working_prefix(self):
        # The build folder is the one ctest runs in: BINARY is BUILD/app/alexnet.
        build = os.path.dirname(os.path.dirname(os.path.abspath(BINARY)))
        with tempfile.TemporaryDirectory() as prefix:
            r = subprocess.run(["cmake", "--install", build, "--prefix", prefix],
                               capture_output=True, text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            installed = os.path.join(prefix, "bin", "alexnet")
            # With a bare environment: LibTorch is found through the installed RPATH.
            env = {"PATH": os.path.join(prefix, "bin") + ":/usr/bin:/bin"}
            r = subprocess.run(["alexnet", "--version"], capture_output=True, text=True, env=env,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("LibTorch", r.stdout + r.stderr)
            with open(os.path.join(prefix, "share", "alexnet", "imagenet_classes.txt")) as f:
                self.assertEqual(sum(1 for line in f if line.strip()), 1000)
            # The installed launch.sh finds the installed binary (it rejects a bad N
            # only after finding it would be too early: ask it for the binary's help).
            launch = os.path.join(prefix, "share", "alexnet", "scripts", "launch.sh")
            r = subprocess.run([launch, "1", "--help"], capture_output=True, text=True,
                               env=dict(env, MASTER_ADDR="127.0.0.1"), timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("alexnet train", r.stdout)
            for script in ("plot_metrics.py", "export_torchvision.py"):
                self.assertTrue(os.access(os.path.join(prefix, "share", "alexnet", "scripts", script),
                                          os.X_OK), script)


class CpuClass(unittest.TestCase):
    """--version names the CPU class, its flags and what auto resolves to, as this test reads them
    from /proc/cpuinfo and ONEDNN_MAX_CPU_ISA (tests/fixture.py), apart from app/runtime/cpu."""

    def expected_class(self):
        if cpu_has("amx_bf16") and cpu_has("amx_int8"):
            return "AMX"
        if cpu_has("avx512f"):
            return "AVX-512 VNNI" if cpu_has_vnni() else "AVX-512"
        return "AVX2" if cpu_has("avx2") else "pre-AVX2"

    def test_version_names_the_class_and_auto(self):
        r = run("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.strip().splitlines()
        self.assertEqual(len(lines), 2, r.stdout)
        self.assertRegex(lines[0], r"^alexnet \S+: LibTorch ")
        cpu = lines[1]
        print(f"\n{cpu}", flush=True)
        self.assertIn(f": class {self.expected_class()} (", cpu)
        names = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
                 "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8"}
        listed = re.search(r": class [^(]+ \(([^)]*)\)", cpu)
        self.assertIsNotNone(listed, cpu)
        expected = [name for flag, name in names.items() if cpu_has(flag)]
        self.assertEqual(listed.group(1).split() if expected else [], expected, cpu)
        auto = auto_precision()
        self.assertIn(f"auto: training {auto}, inference {auto} (", cpu)
        self.assertIn(f"int8 activations {8 if cpu_has_vnni() else 7}-bit", cpu)
        # "capped at" exactly where the cap takes away a flag this CPU has.
        with open("/proc/cpuinfo") as f:
            hardware = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        removed = [flag for flag in names if flag in hardware and not cpu_has(flag)]
        self.assertEqual("capped at " + isa_cap() in cpu, bool(removed), f"{cpu}; the cap removes {removed}")

    def test_every_computing_command_logs_the_class(self):
        r = run("bench", "--mode", "infer", "--precision", "fp32", "--batch-size", "1", "--image-size", "64",
                "--iters", "1", "--warmup", "0", "--threads", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f": class {self.expected_class()} (", r.stderr)

    def test_unknown_cap_is_named_and_ignored(self):
        r = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX3"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ONEDNN_MAX_CPU_ISA=AVX3 is not one of oneDNN's ISA names", r.stderr)
        self.assertNotIn("capped at", r.stdout)


if __name__ == "__main__":
    fixture_main()
