#!/usr/bin/python3
"""`alexnet train` and `alexnet eval` end to end on a small real dataset (a
Fashion-MNIST subset written at test time): learning, checkpoints that Python's
torch.load and torchvision read, exact resume after a kill, resuming from a
torchvision train.py checkpoint, metrics and plots, and bad input.

Needs ALEXNET_BINARY and Debian's dataset-fashion-mnist.
"""
import argparse
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import PIL.Image
import torch
import torchvision

from fixture import (main as fixture_main, RemovesWhatEachTestWrote, auto_precision, once, unpack_fashion_mnist,
                     write_fashion_mnist_subset)

BINARY = os.environ.get("ALEXNET_BINARY", "build/app/alexnet")
SOURCE = os.environ.get("ALEXNET_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_N, VAL_N = 1024, 256
# For every run whose numbers are compared (with another run, a resumed one, eval, torch, or a
# learning threshold): train's default, auto, is bf16 on AMX CPUs and AMD's with AVX512-BF16,
# fp32 elsewhere, and the bounds here are fp32's.
FP32 = ("--precision", "fp32")


def run(*args, timeout=900):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=timeout)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def load(path):
    return torch.load(path, map_location="cpu")


class TrainEval(RemovesWhatEachTestWrote, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.data_dir = write_fashion_mnist_subset(os.path.join(cls.tmp.name, "fmnist"), TRAIN_N, VAL_N)
        cls.spec = "fashion-mnist:" + cls.data_dir
        # The reference run (full_run) goes in a folder made here: the test that trains it first
        # must not delete it as its own output (RemovesWhatEachTestWrote).
        os.makedirs(os.path.join(cls.tmp.name, "shared"))
        cls.full = os.path.join(cls.tmp.name, "shared", "full")
        cls._full_run = None

    @classmethod
    def full_run(cls):
        """The reference run that many tests read and compare with (its weights, checkpoint, metrics
        and log): 3 epochs, deterministic, fp32. Trained on first use, not in setUpClass: ctest runs
        the @once tests as an entry of their own, which repeats setUpClass and should pay for this
        run only if one of its tests reads it."""
        if cls._full_run is None:
            # From scratch AlexNet needs a brisk lr to leave the 2.30 plateau within 96 steps.
            cls._full_run = run("train", "--data", cls.spec, "--epochs", "3", "--batch-size", "32",
                                "--lr", "0.05", "--deterministic", "--print-freq", "8", *FP32,
                                "--output", cls.full)
        return cls._full_run

    def trained(self):
        """The reference run's folder, once that run has succeeded."""
        r = self.full_run()
        self.assertEqual(r.returncode, 0, r.stderr)
        return self.full

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def out(self, name):
        return os.path.join(self.tmp.name, name)

    def test_training_learns_and_logs_progress(self):
        full = self.trained()
        r = self.full_run()
        records = read_jsonl(os.path.join(full, "metrics.jsonl"))
        epochs = [x for x in records if x["type"] == "epoch"]
        steps = [x for x in records if x["type"] == "step"]
        self.assertEqual([e["epoch"] for e in epochs], [1, 2, 3])
        self.assertGreater(len(steps), 4)
        # Learning, not luck: the epoch loss falls by a fifth and validation top-1
        # is well above chance (10%; this seed reaches about 40%).
        self.assertLess(epochs[-1]["train_loss"], 0.8 * epochs[0]["train_loss"])
        self.assertGreater(epochs[-1]["val_top1"], 0.25)
        self.assertRegex(r.stderr, r"epoch 2 step \d+/32: loss [\d.]+ lr [\d.e-]+ \d+ img/s ETA \S+ \(run \S+\)")
        # What is about to happen, before the first step; evaluation shows progress too.
        self.assertRegex(r.stderr, r"plan: 3 epoch\(s\) of 32 steps of 32 images, from the start on .*"
                                   r"writing " + full)
        self.assertLess(r.stderr.index("plan:"), r.stderr.index("epoch 1 step"))
        self.assertRegex(r.stderr, r"eval step 8/8: \d+ img/s")

    def test_checkpoint_and_weights_load_in_python(self):
        full = self.trained()
        ckpt = load(os.path.join(full, "checkpoint.pth"))
        self.assertEqual(set(ckpt) >= {"model", "optimizer", "lr_scheduler", "epoch", "args"}, True)
        self.assertEqual(ckpt["epoch"], 2)
        model = torchvision.models.alexnet(num_classes=10)
        model.load_state_dict(ckpt["model"])
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        opt.load_state_dict(ckpt["optimizer"])
        self.assertEqual(len(opt.state), 16)  # a momentum buffer per parameter
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
        sched.load_state_dict(ckpt["lr_scheduler"])
        weights = load(os.path.join(full, "model.pth"))
        for k, v in weights.items():
            self.assertTrue(torch.equal(v, ckpt["model"][k]), k)
        # weights_only loading (the default of PyTorch >= 2.6) accepts the weights;
        # PyTorch 1.13's weights_only unpickler lacks BINFLOAT, which any
        # checkpoint with a float in it needs (its own torch.save output too).
        torch.load(os.path.join(full, "model.pth"), weights_only=True)
        if int(torch.__version__.split(".")[0]) >= 2:
            torch.load(os.path.join(full, "checkpoint.pth"), weights_only=True)

    def test_kill_and_resume_is_bit_exact(self):
        full = self.trained()
        out = self.out("killed")
        args = ["train", "--data", self.spec, "--epochs", "3", "--batch-size", "32", "--lr", "0.05",
                "--deterministic", "--print-freq", "1", *FP32, "--output", out]
        proc = subprocess.Popen([BINARY, *args], stderr=subprocess.PIPE, text=True)
        killed = False
        log = ""
        for line in proc.stderr:
            log += line
            if "epoch 2 step 3/" in line and not killed:
                proc.send_signal(signal.SIGTERM)  # mid-epoch: must save and stop
                killed = True
        proc.wait(timeout=600)
        self.assertTrue(killed)
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM)
        ckpt = load(os.path.join(out, "checkpoint.pth"))
        self.assertEqual(ckpt["epoch"], 0)
        self.assertGreater(ckpt["epoch_step"], 0)
        # The hint, run as printed: the data, schedule and output come back from the
        # checkpoint's args (here the data is not the default Fashion-MNIST).
        hint = log.split("continue with ")[-1].split()
        self.assertEqual(hint, ["--resume", os.path.join(out, "checkpoint.pth")])
        r = run("train", *hint)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("resuming", r.stderr)
        self.assertIn("resume: from " + os.path.join(out, "checkpoint.pth") + "'s run: --data "
                      + self.spec, r.stderr)
        self.assertIn(" --epochs 3 --batch-size 32 --lr 0.05 ", r.stderr)
        self.assertIn(" --precision fp32", r.stderr)  # what makes the comparison below bit for bit
        # A flag given on the command line wins over the checkpoint's, and says so
        # (here: 2 epochs, which the finished run already did).
        r2 = run("train", *hint, "--epochs", "2")
        self.assertIn("resume: --epochs 2 given here (the checkpoint's run had 3)", r2.stderr)
        self.assertEqual(r2.returncode, 1, r2.stderr)
        self.assertIn("leaves nothing to do", r2.stderr)
        a = load(os.path.join(full, "model.pth"))
        b = load(os.path.join(out, "model.pth"))
        for k in a:
            self.assertTrue(torch.equal(a[k], b[k]), f"{k}: max diff {(a[k] - b[k]).abs().max()}")

    def test_resume_from_torchvision_train_py_checkpoint(self):
        # The layout references/classification/train.py writes, with an argparse Namespace.
        torch.manual_seed(0)
        model = torchvision.models.alexnet(num_classes=10)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        model(torch.randn(2, 3, 64, 64)).sum().backward()
        opt.step()
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
        path = self.out("trainpy.pth")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "lr_scheduler": sched.state_dict(), "epoch": 0,
                    "args": argparse.Namespace(model="alexnet", lr=0.01, epochs=2)}, path)
        r = run("train", "--data", self.spec, "--epochs", "2", "--batch-size", "32",
                "--max-steps", "2", "--print-freq", "1", "--resume", path,
                "--output", self.out("from_trainpy"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("at epoch 2", r.stderr)
        self.assertNotIn("epoch 1 step", r.stderr)

    def _step_lrs(self, name, *flags):
        out = self.out(name)
        r = run("train", "--data", self.spec, "--epochs", "3", "--batch-size", "32", "--max-steps", "4",
                "--print-freq", "1", "--lr", "0.1", *FP32, "--output", out, *flags)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [x["lr"] for x in map(json.loads, f) if x["type"] == "step"]

    def _torch_lrs(self, warmup_iters, total_iters, per_iteration, steps_per_epoch=4):
        # torchvision train.py's scheduler: LinearLR warmup, then CosineAnnealingLR.
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warmup_iters)
        main = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_iters - warmup_iters)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, main], milestones=[warmup_iters])
        lrs = []
        for i in range(total_iters if per_iteration else total_iters * steps_per_epoch):
            lrs.append(opt.param_groups[0]["lr"])
            if per_iteration or (i + 1) % steps_per_epoch == 0:
                sched.step()
        return lrs

    def test_lr_schedule_matches_torch_schedulers(self):
        # metrics.jsonl keeps 9 significant digits: equal to 1e-6 relative.
        # Per epoch (train.py's way): 1 warmup epoch, then cosine, each held for an epoch's 4 steps.
        ours = self._step_lrs("sched_epoch", "--lr-update", "epoch", "--lr-warmup-epochs", "1")
        theirs = self._torch_lrs(warmup_iters=1, total_iters=3, per_iteration=False)
        self.assertEqual(len(ours), 12)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            self.assertAlmostEqual(a, b, delta=1e-6 * abs(b), msg=f"step {i}")
        # Per step: the same schedulers stepped every iteration, with half an epoch (2 steps) of warmup.
        ours = self._step_lrs("sched_step", "--lr-update", "step", "--lr-warmup-epochs", "0.5")
        theirs = self._torch_lrs(warmup_iters=2, total_iters=12, per_iteration=True)
        self.assertEqual(len(ours), 12)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            self.assertAlmostEqual(a, b, delta=1e-6 * abs(b), msg=f"step {i}")
        self.assertEqual(len(set(ours)), 12)  # it moves every step

    def test_eval_json_agrees_across_weight_formats(self):
        full = self.trained()
        results = []
        for w in ("model.pth", "checkpoint.pth"):
            r = run("eval", "--weights", os.path.join(full, w), "--data", self.spec, "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            results.append(json.loads(r.stdout))
        exported = self.out("exported.pt")
        r = run("export", "--weights", os.path.join(full, "model.pth"), "--output", exported)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("eval", "--weights", exported, "--data", self.spec, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        results.append(json.loads(r.stdout))
        first = results[0]
        self.assertEqual(first["images"], VAL_N)
        conf = torch.tensor(first["confusion"])
        self.assertEqual(conf.shape, (10, 10))
        self.assertEqual(int(conf.sum()), VAL_N)
        self.assertAlmostEqual(first["top1"], float(conf.trace()) / VAL_N, delta=1e-6)
        self.assertEqual(len(first["per_class"]), 10)
        for other in results[1:]:
            self.assertEqual(other["confusion"], first["confusion"])
            self.assertAlmostEqual(other["loss"], first["loss"], delta=1e-6)
        # The last epoch's validation in metrics.jsonl is the same evaluation (both fp32).
        last = read_jsonl(os.path.join(full, "metrics.jsonl"))[-1]
        self.assertAlmostEqual(last["val_top1"], first["top1"], delta=1e-6)

    def test_class_names_and_transform_travel_with_the_weights(self):
        full = self.trained()
        names = torchvision.datasets.FashionMNIST.classes
        # The validation transform of Fashion-MNIST: 64 px, its own mean and std (tolerance:
        # float32's, the statistics are stored as float32 values).
        want_transform = {"resize_size": 64, "crop_size": 64, "mean": [0.286] * 3, "std": [0.353] * 3}

        def check_transform(text, where):
            t = json.loads(text)
            self.assertEqual((t["resize_size"], t["crop_size"]), (64, 64), where)
            for key in ("mean", "std"):
                for got, want in zip(t[key], want_transform[key]):
                    self.assertAlmostEqual(got, want, delta=1e-7, msg=where)
            return t
        # torch.save files: the state_dict's _metadata[""], which load_state_dict ignores.
        for f in ("model.pth", "checkpoint.pth", "model_best.pth"):
            weights = load(os.path.join(full, f))
            state = weights["model"] if f == "checkpoint.pth" else weights
            self.assertEqual(state._metadata[""]["classes"], names, f)
            transform = check_transform(state._metadata[""]["transform"], f)
            torchvision.models.alexnet(num_classes=10).load_state_dict(state)  # strict
        pt, st = self.out("names.pt"), self.out("names.safetensors")
        for out in (pt, st):
            r = run("export", "--weights", os.path.join(full, "model.pth"), "--output", out)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("with their names, with its input transform", r.stderr)
        extra = {"classes.json": "", "transform.json": ""}
        torch.jit.load(pt, _extra_files=extra)
        self.assertEqual(json.loads(extra["classes.json"]), names)
        check_transform(extra["transform.json"], "transform.json")
        with open(st, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        self.assertEqual(json.loads(header["__metadata__"]["classes"]), names)
        check_transform(header["__metadata__"]["transform"], "safetensors")
        # predict names the classes and prepares the image as the weights say, from any of the three
        # formats identically, as torchvision does with that transform (logits within 1e-4).
        image = self.out("shirt.png")
        PIL.Image.fromarray(torch.randint(0, 256, (40, 30, 3), generator=torch.Generator().manual_seed(1),
                                          dtype=torch.uint8).numpy()).save(image)
        model = torchvision.models.alexnet(num_classes=10).eval()
        model.load_state_dict(load(os.path.join(full, "model.pth")))
        tf = torchvision.transforms.Compose([
            torchvision.transforms.Resize(transform["resize_size"]),
            torchvision.transforms.CenterCrop(transform["crop_size"]), torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(transform["mean"], transform["std"])])
        with torch.no_grad():
            logits = model(tf(PIL.Image.open(image).convert("RGB")).unsqueeze(0))[0]
        outputs = []
        for w in (os.path.join(full, "model.pth"), pt, st):
            r = run("predict", "--weights", w, "--format", "json", "-k", "3", image)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("names the weights file", r.stderr)
            self.assertIn("input: resize 64, center crop 64, normalise mean (0.286, 0.286, 0.286) std (0.353, "
                          "0.353, 0.353), as the weights file says", r.stderr)
            top = json.loads(r.stdout)["top"]
            outputs.append([(x["label"], x["index"]) for x in top])
            self.assertEqual([x["index"] for x in top], logits.topk(3).indices.tolist())
            for x in top:
                self.assertAlmostEqual(x["logit"], logits[x["index"]].item(), delta=1e-4)
        self.assertEqual(outputs[1:], outputs[:1] * 2)
        self.assertTrue(all(label == names[i] for label, i in outputs[0]), outputs[0])
        # run.sh's demo: Fashion-MNIST test images as PNG files (each named after its true class,
        # pixels exactly the IDX file's), classified with the trained weights and no other flag.
        samples = self.out("samples")
        r = subprocess.run([sys.executable, os.path.join(SOURCE, "scripts", "fashion_mnist_pngs.py"), "--data",
                            self.data_dir, "--count", "5", "--output", samples], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        pngs = sorted(os.listdir(samples))
        for prefix in ("train", "t10k"):  # torchvision checks that all four files are there
            unpack_fashion_mnist(self.out("tv"), prefix, self.data_dir)
        test_set = torchvision.datasets.FashionMNIST(self.out("tv"), train=False)
        for i, name in enumerate(pngs):
            picture, label = test_set[i]
            self.assertEqual(name, "%05d-%s.png" % (i, names[label].lower().replace("/", "-").replace(" ", "-")))
            self.assertEqual(list(PIL.Image.open(os.path.join(samples, name)).getdata()), list(picture.getdata()))
        r = run("predict", "--weights", os.path.join(full, "model.pth"), "--format", "csv", "-k", "1", samples)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = r.stdout.splitlines()[1:]
        self.assertEqual(len(rows), 5)
        self.assertTrue(all(row.split(",")[3] in names for row in rows), rows)
        labels = self.out("labels.txt")
        with open(labels, "w") as f:
            f.write("".join(f"kind {i}\n" for i in range(10)))
        r = run("predict", "--weights", pt, "--labels", labels, "--format", "json", "-k", "1", image)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["top"][0]["label"], "kind %d" % outputs[0][0][1])
        r = run("info", os.path.join(full, "checkpoint.pth"))
        self.assertIn("class names (10): T-shirt/top, Trouser, Pullover", r.stdout)
        # eval warns when the data's classes are not the ones the weights were trained on.
        folder = self.out("folder")
        for i in range(10):
            os.makedirs(os.path.join(folder, "c%d" % i))
            PIL.Image.open(image).save(os.path.join(folder, "c%d" % i, "a.png"))
        r = run("eval", "--weights", pt, "--data", folder, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("the weights' class 0 is 'T-shirt/top' but the data's is 'c0'", r.stderr)
        self.assertEqual(json.loads(r.stdout)["per_class"][3]["label"], "c3")
        r = run("eval", "--weights", pt, "--data", folder, "--json", "--labels", labels)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["per_class"][3]["label"], "kind 3")

    @once
    def test_recipe_flags_move_train_and_bench_alike(self):
        # `train` and `bench --mode train` run one TrainStep: a recipe flag must change
        # both, and naming a flag at its default value must change neither (bit for bit).
        # bench shows each flag changing the step; train, that it hands every flag to it.
        def train_run(*flags):
            out = self.out("recipe-" + str(abs(hash(flags))))
            r = run("train", "--data", self.spec, "--epochs", "1", "--max-steps", "3", "--batch-size", "16",
                    "--print-freq", "1", "--image-size", "64", "--deterministic", "--threads", "2", *FP32,
                    "--overwrite", "--output", out, *flags)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(out, "metrics.jsonl")) as f:
                losses = [json.loads(l)["loss"] for l in f if '"step"' in l]
            shutil.rmtree(out)  # 0.9 GB of checkpoints each; only the losses are compared
            return losses, r.stderr

        def train_losses(*flags):
            return train_run(*flags)[0]

        def bench_loss(*flags):
            r = run("bench", "--mode", "train", "--json", "--batch-size", "8", "--image-size", "64",
                    "--num-classes", "10", "--warmup", "0", "--iters", "3", "--precision", "fp32",
                    "--threads", "2", *flags)
            self.assertEqual(r.returncode, 0, r.stderr)
            return json.loads(r.stdout)["loss"]

        recipe = (("--label-smoothing", "0.1", "0.4"), ("--clip-grad-norm", "2", "0.01"),
                  ("--nesterov", "true", "false"), ("--dropout", "0.1", "0.6"), ("--lr", "0.06", "0.01"),
                  ("--weight-decay", "0.0005", "0.05"), ("--momentum", "0.9", "0.5"))
        base_train, base_bench = train_losses(), bench_loss()
        self.assertEqual(len(base_train), 3)
        defaults = [f"{flag}={default}" for flag, default, _ in recipe]
        self.assertEqual(train_losses(*defaults), base_train)
        self.assertEqual(bench_loss(*defaults), base_bench)
        for flag, _, changed in recipe:
            with self.subTest(flag=flag):
                self.assertNotEqual(bench_loss(f"{flag}={changed}"), base_bench)
        # One training run with every flag changed: the losses move, and the recipe line (the
        # values the step is built with) shows each one.
        losses, log = train_run(*[f"{flag}={changed}" for flag, _, changed in recipe])
        self.assertNotEqual(losses, base_train)
        self.assertIn("lr 0.01 momentum 0.5 weight decay 0.05 label smoothing 0.4 clip 0.01 dropout 0.6;", log)

    @once
    def test_plot_metrics_writes_png(self):
        png = self.out("curves.png")
        r = subprocess.run(["/usr/bin/python3", os.path.join(SOURCE, "scripts", "plot_metrics.py"),
                            os.path.join(self.trained(), "metrics.jsonl"), "--output", png],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_fewer_than_five_classes_gives_top5_na_and_plots(self):
        # 3 classes: top-5 is meaningless. train logs "n/a" as eval does, metrics.jsonl
        # has null, and plot_metrics.py draws the rest instead of failing on None.
        from PIL import Image
        root = self.out("three")
        for split, n in (("train", 8), ("val", 4)):
            for c, color in enumerate(((200, 30, 30), (30, 200, 30), (30, 30, 200))):
                d = os.path.join(root, split, f"class{c}")
                os.makedirs(d)
                for i in range(n):
                    Image.new("RGB", (40, 40), tuple(min(255, v + 5 * i) for v in color)).save(
                        os.path.join(d, f"{i}.png"))
        out = self.out("three-out")
        r = run("train", "--data", root, "--epochs", "1", "--batch-size", "4", "--image-size", "64",
                "--output", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, r"epoch 1 done: .* top5 n/a")
        self.assertNotIn("nan%", r.stderr)
        epochs = read_jsonl(os.path.join(out, "metrics.jsonl"))
        self.assertIsNone([e for e in epochs if e["type"] == "epoch"][-1]["val_top5"])
        png = os.path.join(out, "curves.png")
        r = subprocess.run(["/usr/bin/python3", os.path.join(SOURCE, "scripts", "plot_metrics.py"),
                            os.path.join(out, "metrics.jsonl"), "--output", png],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    @once
    def test_info_shows_where_a_checkpoint_stands(self):
        ckpt = os.path.join(self.trained(), "checkpoint.pth")
        r = run("info", ckpt)  # the file as the argument, as well as --weights
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("epochs_completed: 3", r.stdout)
        self.assertIn("next: epoch 4", r.stdout)
        self.assertRegex(r.stdout, r"optimizer: SGD lr [\d.e-]+, momentum 0.9")
        self.assertIn("args.data_path: 'fashion-mnist:" + self.data_dir + "'", r.stdout)
        r = run("info", "--weights", ckpt, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        training = json.loads(r.stdout)["training"]
        self.assertEqual(training["epochs_completed"], "3")
        self.assertEqual(training["args.epochs"], "3")
        self.assertEqual(run("info", ckpt, ckpt).returncode, 2)

    @once
    def test_outputs_like_train_py(self):
        # --save-every 1: model_0.pth, model_1.pth as train.py names them (full checkpoints);
        # model_best.pth: the weights of the epoch with the best validation top-1.
        out = self.out("outputs")
        r = run("train", "--data", self.spec, "--epochs", "3", "--batch-size", "32", "--max-steps", "4",
                "--lr", "0.05", "--save-every", "1", "--output", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        epochs = read_jsonl(os.path.join(out, "metrics.jsonl"))
        top1 = [e["val_top1"] for e in epochs if e["type"] == "epoch"]
        best = max(range(len(top1)), key=lambda i: (top1[i], -i))  # the first of equals
        for e in range(3):
            ck = load(os.path.join(out, f"model_{e}.pth"))
            self.assertEqual(ck["epoch"], e)
            self.assertIn("optimizer", ck)
        best_weights = load(os.path.join(out, "model_best.pth"))
        at_best = load(os.path.join(out, f"model_{best}.pth"))["model"]
        self.assertEqual(best_weights.keys(), at_best.keys())
        for k in best_weights:
            self.assertTrue(torch.equal(best_weights[k], at_best[k]), k)
        self.assertIn(f"epoch {best + 1}: best validation top-1 so far", r.stderr)

    @once
    def test_train_py_flag_names(self):
        # references/classification/train.py's spellings work and mean the same.
        out = self.out("trainpy-names")
        r = run("train", "--data-path", self.spec, "--output-dir", out, "--model", "alexnet", "--opt", "sgd",
                "--lr-scheduler", "cosineannealinglr", "--amp", "--epochs", "1", "--max-steps", "1",
                "--batch-size", "8")
        self.assertEqual(r.returncode, 0, r.stderr)
        # --amp is --precision auto: what auto resolves to on this CPU, as tests/fixture.py states it.
        self.assertIn(f"precision {auto_precision()} (auto: ", r.stderr)
        args = load(os.path.join(out, "checkpoint.pth"))["args"]
        self.assertEqual((args["data_path"], args["output_dir"], args["lr_scheduler"], args["model"]),
                         (self.spec, out, "cosine", "alexnet"))
        for scheduler, ours in (("steplr", "step"), ("constantlr", "constant")):
            r = run("train", "--data-path", self.spec, "--output-dir", out + scheduler, "--lr-scheduler",
                    scheduler, "--epochs", "1", "--max-steps", "1", "--batch-size", "8")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(load(os.path.join(out + scheduler, "checkpoint.pth"))["args"]["lr_scheduler"], ours)
        self.assertError(["train", "--opt", "adamw"], "only sgd", status=2)
        self.assertError(["train", "--data", "a", "--data-path", "b"], "the same flag", status=2)
        self.assertError(["train", "--amp", "--precision", "fp32"], "--amp is --precision auto", status=2)
        r = run("train", "--help")
        for flag in ("--data-path", "--output-dir", "--model", "--opt", "--amp", "--test-only", "--start-epoch",
                     "--recipe"):
            self.assertIn(flag, r.stdout)

    @once
    def test_recipes_start_epoch_and_test_only(self):
        full = self.trained()
        quick = ["--data", self.spec, "--epochs", "1", "--max-steps", "1", "--batch-size", "8", "--print-freq", "0"]
        # Fashion-MNIST from scratch: the main job's recipe, said so (the reference run's log).
        self.assertIn("recipe main (auto: Fashion-MNIST from scratch; given: --lr 0.05): lr 0.05 momentum 0.9 "
                      "(Nesterov) weight decay 0.0005 label smoothing 0.1 clip 2 dropout 0.1; cosine schedule",
                      self.full_run().stderr)
        # --recipe torchvision: train.py's defaults, recorded in the checkpoint's args; a flag still wins.
        out = self.out("torchvision")
        r = run("train", *quick, "--recipe", "torchvision", "--momentum", "0.8", "--output", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("recipe torchvision (--recipe torchvision; given: --momentum 0.8): lr 0.01 momentum 0.8 "
                      "weight decay 0.0001 label smoothing 0 clip off dropout 0.5; step schedule", r.stderr)
        args = load(os.path.join(out, "checkpoint.pth"))["args"]
        self.assertEqual({k: args[k] for k in ("recipe", "lr", "momentum", "weight_decay", "nesterov",
                                               "label_smoothing", "clip_grad_norm", "dropout", "lr_scheduler")},
                         {"recipe": "torchvision", "lr": 0.01, "momentum": 0.8, "weight_decay": 1e-4,
                          "nesterov": False, "label_smoothing": 0.0, "clip_grad_norm": None, "dropout": 0.5,
                          "lr_scheduler": "step"})
        # Fine-tuning picks torchvision's recipe and says which weights it loaded.
        r = run("train", *quick, "--weights", os.path.join(full, "model.pth"), "--output", self.out("tuned"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("recipe torchvision (auto: fine-tuning --weights)", r.stderr)
        self.assertIn("weights: all 16 tensors from " + os.path.join(full, "model.pth"), r.stderr)
        # The duration is estimated before the first step (runs of 20 steps or more).
        self.assertRegex(self.full_run().stderr, r"plan: .* about \S+ \(a step's compute took [\d.]+ s")
        self.assertIn("a short run (1 step)", r.stderr)
        # --start-epoch: the schedule starts there, as torch's CosineAnnealingLR after 2 epochs
        # (tolerance 1e-9: the same closed form in double).
        out = self.out("start2")
        r = run("train", *quick[:2], "--epochs", "3", "--start-epoch", "2", "--max-steps", "1", "--batch-size", "8",
                "--print-freq", "1", *FP32, "--output", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("from epoch 3 step 1", r.stderr)
        records = read_jsonl(os.path.join(out, "metrics.jsonl"))
        self.assertEqual([x["epoch"] for x in records if x["type"] == "epoch"], [3])
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.06)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
        for _ in range(2):
            opt.step()
            sched.step()
        self.assertAlmostEqual([x for x in records if x["type"] == "step"][0]["lr"], sched.get_last_lr()[0],
                               delta=1e-9)
        self.assertError(["train", "--start-epoch", "3", "--epochs", "3"], "leaves none", status=2)
        self.assertError(["train", "--start-epoch", "1", "--resume", os.path.join(full, "checkpoint.pth")],
                         "--start-epoch", status=2)
        # --test-only is eval on the validation data, with the same numbers (eval's own precision,
        # fp32, whatever train's default: test_only() passes no --precision).
        weights = os.path.join(full, "model.pth")
        r = run("train", "--test-only", "--weights", weights, "--data", self.spec)
        self.assertEqual(r.returncode, 0, r.stderr)
        e = run("eval", "--weights", weights, "--data", self.spec)
        self.assertEqual(e.returncode, 0, e.stderr)
        self.assertRegex(r.stdout, r"top-1 \d")
        strip = lambda text: re.sub(r"\d+ img/s", "", text)
        self.assertEqual(strip(r.stdout), strip(e.stdout))
        self.assertError(["train", "--test-only"], "--test-only evaluates --weights or --resume", status=2)

    @once
    def test_progress_is_a_live_bar_on_a_terminal(self):
        def on_terminal(*args):
            # The binary's stderr and stdout are a pseudo-terminal, as in an interactive shell.
            master, slave = pty.openpty()
            proc = subprocess.Popen([BINARY, *args], stdin=slave, stdout=slave, stderr=slave,
                                    env=dict(os.environ, TERM="xterm"))
            os.close(slave)
            out = b""
            while True:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            os.close(master)
            self.assertEqual(proc.wait(timeout=600), 0, out.decode(errors="replace"))
            return out.decode()
        quick = ["train", "--data", self.spec, "--epochs", "1", "--max-steps", "3", "--batch-size", "8",
                 "--print-freq", "1", "--overwrite", "--output", self.out("bar")]
        out = on_terminal(*quick)
        # Redrawn in place (carriage return, erase line), each step; no step log lines.
        self.assertRegex(out, r"\r\x1b\[Kepoch 1 \[#+\.*\] 3/3 ETA \S+ \(run \S+\) loss [\d.]+")
        self.assertRegex(out, r"\r\x1b\[Kepoch 1 \[#*\.+\] 1/3 ")
        self.assertRegex(out, r"\r\x1b\[Keval \[#+\] 32/32 \d+ img/s")  # 256 images, batches of 8
        self.assertNotIn("epoch 1 step 1/3:", out)
        self.assertIn("the progress bar gives the time left", out)
        # The summary lines stay, each on a line of its own after the bar is erased.
        self.assertRegex(out, r"\r\x1b\[K\[[\d:]+\] epoch 1 done: ")
        # --progress lines on a terminal (eval here: the same progress code), and any pipe (the
        # reference run): log lines, no escapes.
        out = on_terminal("eval", "--weights", os.path.join(self.trained(), "model.pth"), "--data", self.spec,
                          "--batch-size", "8", "--progress", "lines")
        self.assertNotIn("\x1b", out)
        self.assertIn("eval step 20/32:", out)
        self.assertNotIn("\x1b", self.full_run().stderr)
        self.assertIn("epoch 1 step 8/32:", self.full_run().stderr)
        self.assertError(["train", "--progress", "fancy"], "--progress must be auto, bar or lines", status=2)

    @once
    def test_failed_start_leaves_no_folder(self):
        out = self.out("never/made")
        r = run("train", "--data", self.out("no-such-data"), "--output", out)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertFalse(os.path.exists(self.out("never")), "a failed start left its folder behind")

    def test_nan_loss_stops_and_keeps_checkpoint(self):
        out = self.out("nan")
        r = run("train", "--data", self.spec, "--epochs", "2", "--batch-size", "32", "--lr", "1e12",
                "--max-steps", "20", "--print-freq", "0", "--output", out)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"error: epoch \d+ step \d+: loss is (nan|infinite); stopping")

    def assertError(self, args, must_contain, status=1):
        r = run(*args)
        self.assertEqual(r.returncode, status, r.stderr)
        errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertIn(must_contain, errors[0])
        self.assertNotIn("Exception raised from", r.stderr)

    @once
    def test_bad_flags_are_usage_errors(self):
        base = ["train", "--data", self.spec, "--output", self.out("bad")]
        for flag, value in (("--batch-size", "0"), ("--epochs", "-1"), ("--lr", "0"),
                            ("--lr", "-0.1"), ("--lr-scheduler", "linear"), ("--momentum", "1.5"),
                            ("--lr-update", "batch"), ("--init", "xavier"), ("--lr-warmup-epochs", "nan")):
            with self.subTest(flag=flag, value=value):
                self.assertError(base + [flag, value], flag, status=2)
        self.assertError(base + ["--lr-update", "epoch", "--lr-warmup-epochs", "0.5"],
                         "--lr-warmup-epochs", status=2)

    @once
    def test_bad_inputs_fail_before_training_and_keep_checkpoints(self):
        full = self.trained()
        existing = os.path.join(full, "checkpoint.pth")
        before = (os.path.getmtime(existing), os.path.getsize(existing))
        blocker = self.out("a_file")
        open(blocker, "w").close()
        self.assertError(["train", "--data", self.spec, "--output", blocker], "--output")
        self.assertError(["train", "--data", self.spec, "--output", "/proc/alexnet-out"], "--output")
        # A checkpoint for another class count, and one of another model.
        torch.manual_seed(0)
        thousand = self.out("thousand.pth")
        torch.save({"model": torchvision.models.alexnet().state_dict(), "epoch": 0}, thousand)
        self.assertError(["train", "--data", self.spec, "--resume", thousand, "--output", full],
                         "1000 classes")
        other = self.out("resnet.pth")
        torch.save({"model": torchvision.models.resnet18(num_classes=10).state_dict(), "epoch": 0}, other)
        self.assertError(["train", "--data", self.spec, "--resume", other, "--output", full],
                         other)
        self.assertError(["train", "--data", self.spec, "--weights", thousand, "--output",
                          self.out("fresh")], "--reset-classifier")
        # A new run into a folder holding a checkpoint neither resumes nor replaces it silently.
        self.assertError(["train", "--data", self.spec, "--output", full], "--overwrite")
        self.assertError(["eval", "--data", self.spec, "--weights", thousand], "1000 classes")
        self.assertError(["train", "--data", "fashion-mnist:/nonexistent", "--output",
                          self.out("fresh")], "/nonexistent")
        for flag in ("--momentum", "--weight-decay", "--dropout"):
            self.assertError(["train", "--data", self.spec, flag, "nan", "--output", self.out("fresh")],
                             flag, status=2)
        self.assertEqual((os.path.getmtime(existing), os.path.getsize(existing)), before)


if __name__ == "__main__":
    fixture_main()
