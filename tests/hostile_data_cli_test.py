#!/usr/bin/python3
"""Hostile data files against the `alexnet` command line, each made here at test
time: a FIFO or socket named like an image, pixel bombs (a few hundred bytes
declaring 65000x65000), a gzip bomb as an IDX file, a sparse CIFAR batch. Each
must end in one `error: ...` line naming the file, exit status 1 (or a skip
counted under --skip-bad), quickly and in little memory: no hang, crash or
huge allocation. Every run has a timeout, so a hang fails instead of stalling.

Run by ctest after tests/make_reference.py; needs ALEXNET_BINARY and ALEXNET_REFERENCE_DIR.
"""
import io
import os
import socket
import struct
import subprocess
import tempfile
import threading
import unittest
import zlib

from PIL import Image

from fixture import main as fixture_main

BINARY = os.environ.get("ALEXNET_BINARY", "build/app/alexnet")
REF = os.environ.get("ALEXNET_REFERENCE_DIR", "build/reference")
WEIGHTS = os.path.join(REF, "alexnet_seed0_script.pt")          # 1000 classes
WEIGHTS_10 = os.path.join(REF, "alexnet_seed1_10cls_script.pt")  # 10 classes

# Extra peak memory a refused bomb may cost over a run refused on a tiny bad
# file, MiB. Decoding the JPEG bomb would take 12.7 GB, the gzip bomb 768 MiB.
RSS_TOLERANCE_MIB = 64


class Run:
    """One run of the binary: status, stdout, stderr and peak RSS (MiB)."""

    def __init__(self, *args, timeout=60):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.Popen([BINARY, *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            hung = threading.Event()
            timer = threading.Timer(timeout, lambda: (hung.set(), p.kill()))
            timer.start()
            _, status, usage = os.wait4(p.pid, 0)  # wait4 gives this child's own peak RSS
            timer.cancel()
            p.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            self.stdout, self.stderr = out.read().decode(), err.read().decode()
        self.hung = hung.is_set()
        self.status = p.returncode
        self.rss_mib = usage.ru_maxrss / 1024  # KiB on Linux


def jpeg_bytes(w, h):
    b = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(b, "JPEG")
    return bytearray(b.getvalue())


def png_bytes(w, h):
    b = io.BytesIO()
    Image.new("RGB", (w, h), (200, 20, 30)).save(b, "PNG")
    return b.getvalue()


def idx_header(*dims):
    return bytes([0, 0, 8, len(dims)]) + struct.pack(">%dI" % len(dims), *dims)


class HostileData(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.tmp.name
        cls.photo = os.path.join(d, "photo.jpg")
        with open(cls.photo, "wb") as f:
            f.write(jpeg_bytes(40, 30))
        cls.empty = os.path.join(d, "empty.jpg")
        open(cls.empty, "wb").close()
        cls.fifo = os.path.join(d, "fifo.jpg")
        os.mkfifo(cls.fifo)
        cls.socket = os.path.join(d, "socket.png")
        s = socket.socket(socket.AF_UNIX)
        s.bind(cls.socket)
        s.close()
        # The JPEG bomb: 632 bytes whose SOF0 says 65000x65000.
        jpeg = jpeg_bytes(8, 8)
        sof = jpeg.index(b"\xff\xc0")
        jpeg[sof + 5:sof + 9] = struct.pack(">HH", 65000, 65000)
        cls.jpeg_bomb = os.path.join(d, "bomb.jpg")
        with open(cls.jpeg_bomb, "wb") as f:
            f.write(jpeg)
        # A PNG whose IHDR says 100000x100000.
        png = bytearray(png_bytes(8, 8))
        png[16:24] = struct.pack(">II", 100000, 100000)
        cls.png_bomb = os.path.join(d, "bomb.png")
        with open(cls.png_bomb, "wb") as f:
            f.write(png)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def assertError(self, run, *must_contain):
        self.assertFalse(run.hung, "hung: killed after its timeout")
        self.assertEqual(run.status, 1, run.stderr)
        errors = [l for l in run.stderr.splitlines() if l.startswith("error: ")]
        self.assertEqual(len(errors), 1, run.stderr)
        for part in must_contain:
            self.assertIn(part, errors[0])
        for bad in ("Exception raised from", "terminate called", "Traceback", "frame #"):
            self.assertNotIn(bad, run.stderr)

    def test_predict_refuses_special_files(self):
        for path, kind in [(self.fifo, "a FIFO"), (self.socket, "a socket"),
                           ("/dev/zero", "a character device")]:
            with self.subTest(kind=kind):
                self.assertError(Run("predict", "--weights", WEIGHTS, self.photo, path),
                                 path, f"not a regular file ({kind})")
        # A folder is searched for image files (tests/cli_test.py); one without any is an error.
        empty = os.path.join(self.tmp.name, "no-images")
        os.makedirs(empty, exist_ok=True)
        self.assertError(Run("predict", "--weights", WEIGHTS, self.photo, empty), empty,
                         "no image files in the folder")

    def test_predict_refuses_pixel_bombs_from_the_header(self):
        baseline = Run("predict", "--weights", WEIGHTS, self.empty)
        self.assertError(baseline, self.empty)
        for path, size in [(self.jpeg_bomb, "65000x65000"), (self.png_bomb, "100000x100000")]:
            with self.subTest(path=path):
                r = Run("predict", "--weights", WEIGHTS, path)
                self.assertError(r, path, size, "--max-pixels")
                self.assertLess(r.rss_mib, baseline.rss_mib + RSS_TOLERANCE_MIB)

    def test_max_pixels_flag(self):
        # The photo is 40x30 = 1200 pixels.
        self.assertError(Run("predict", "--weights", WEIGHTS, "--max-pixels", "1199", self.photo),
                         self.photo, "40x30", "limit of 1199")
        for limit in ("1200", "0"):
            r = Run("predict", "--weights", WEIGHTS, "--max-pixels", limit, self.photo)
            self.assertEqual(r.status, 0, r.stderr)
        r = Run("predict", "--weights", WEIGHTS, "--max-pixels", "-1", self.photo)
        self.assertEqual(r.status, 2, r.stderr)
        self.assertIn("--max-pixels", r.stderr)
        for command in ("predict", "eval", "train", "bench"):
            with self.subTest(command=command):
                r = Run(command, "--help")
                self.assertEqual(r.status, 0, r.stderr)
                self.assertIn("--max-pixels", r.stdout)
                self.assertIn("178956970", r.stdout)  # PIL's limit, the default

    def test_eval_image_folder_with_a_fifo(self):
        with tempfile.TemporaryDirectory() as root:
            for c in range(10):
                os.makedirs(os.path.join(root, f"class{c}"))
                with open(os.path.join(root, f"class{c}", "a.png"), "wb") as f:
                    f.write(png_bytes(12, 10))
            fifo = os.path.join(root, "class3", "b.jpg")
            os.mkfifo(fifo)
            args = ["eval", "--weights", WEIGHTS_10, "--data", root, "--batch-size", "4"]
            self.assertError(Run(*args), fifo, "not a regular file (a FIFO)")
            r = Run(*args, "--skip-bad")
            self.assertFalse(r.hung, "hung: killed after its timeout")
            self.assertEqual(r.status, 0, r.stderr)
            self.assertIn(f"skipping {fifo}: not a regular file (a FIFO)", r.stderr)
            self.assertIn("skipped 1 unreadable images", r.stderr)
            self.assertIn(": 10 images", r.stdout)

    def test_eval_refuses_an_idx_gzip_bomb_after_its_header(self):
        with tempfile.TemporaryDirectory() as d:
            bad = os.path.join(d, "bad")
            os.makedirs(bad)
            with open(os.path.join(bad, "t10k-images-idx3-ubyte"), "wb") as f:
                f.write(b"\x00\x00\x09\x03")  # wrong magic: refused at once
            baseline = Run("eval", "--weights", WEIGHTS_10, "--data", "mnist:" + bad)
            self.assertError(baseline, "magic")
            # The bomb: a header declaring 2 images of 28x28 (1568 bytes), then
            # 768 MiB of zeros, about 780 KB of gzip.
            bomb_dir = os.path.join(d, "bomb")
            os.makedirs(bomb_dir)
            bomb = os.path.join(bomb_dir, "t10k-images-idx3-ubyte.gz")
            with open(bomb, "wb") as f:
                z = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip wrapper
                f.write(z.compress(idx_header(2, 28, 28)))
                zeros = bytes(1 << 20)
                for _ in range(768):
                    f.write(z.compress(zeros))
                f.write(z.flush())
            r = Run("eval", "--weights", WEIGHTS_10, "--data", "mnist:" + bomb_dir)
            self.assertError(r, bomb, "more data after the 1568 bytes the IDX header declares")
            self.assertLess(r.rss_mib, baseline.rss_mib + RSS_TOLERANCE_MIB)
            # A plain IDX file of 1 GiB (sparse) declaring 1568 bytes: refused from its size.
            plain_dir = os.path.join(d, "plain")
            os.makedirs(plain_dir)
            plain = os.path.join(plain_dir, "t10k-images-idx3-ubyte")
            with open(plain, "wb") as f:
                f.write(idx_header(2, 28, 28))
                f.truncate(1 << 30)
            r = Run("eval", "--weights", WEIGHTS_10, "--data", "mnist:" + plain_dir)
            self.assertError(r, plain, f"{(1 << 30) - 16 - 1568} bytes of data after the 1568")
            self.assertLess(r.rss_mib, baseline.rss_mib + RSS_TOLERANCE_MIB)

    def test_eval_refuses_odd_cifar_files_unread(self):
        with tempfile.TemporaryDirectory() as d:
            batch = os.path.join(d, "test_batch.bin")
            os.mkfifo(batch)
            self.assertError(Run("eval", "--weights", WEIGHTS_10, "--data", "cifar10:" + d),
                             batch, "not a regular file (a FIFO)")
            os.unlink(batch)
            with open(batch, "wb") as f:
                f.truncate((1 << 30) + 1)  # sparse; not a whole number of 3073-byte records
            self.assertError(Run("eval", "--weights", WEIGHTS_10, "--data", "cifar10:" + d),
                             batch, "1073741825 bytes is not a whole number")

    def test_labels_file_that_is_a_fifo(self):
        self.assertError(Run("predict", "--weights", WEIGHTS, "--labels", self.fifo, self.photo),
                         self.fifo, "not a regular file (a FIFO)")


if __name__ == "__main__":
    fixture_main()
