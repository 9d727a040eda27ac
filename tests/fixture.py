"""Test data shared by the tests and the benchmark scripts.

Versioned tensor fixtures that the C++ tests read (tests/fixture.h). Layout, little-endian:
  b"ALXREF\\0\\0", uint32 version, uint32 count,
  then per tensor: uint32 name length, name (utf-8), uint32 dtype code,
  uint32 ndim, int64 sizes[ndim], raw contiguous data.

Fashion-MNIST folders made from Debian's dataset-fashion-mnist: subsets in its own layout,
and torchvision's raw/ layout. These need only the standard library (scripts/bench_distributed.py
runs without torch), so torch is imported where a fixture is written.
"""
import gzip
import os
import shutil
import unittest
import struct

MAGIC = b"ALXREF\0\0"
VERSION = 1
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_KINDS = ("images-idx3-ubyte", "labels-idx1-ubyte")


# scripts/test.sh runs every test with each LibTorch flavour, except what does not depend on
# the LibTorch: command-line behaviour (flags, logs, progress) is the same C++ in both builds,
# so such tests run with the first flavour and report skipped, with this reason, after it.
once = unittest.skipIf(os.environ.get("ALEXNET_TESTS_ONCE_RAN") == "1",
                       "ran with the first LibTorch flavour: it tests the command line, not the LibTorch")


class RemovesWhatEachTestWrote:
    """A TestCase mixin for classes whose setUpClass makes `cls.tmp` (a TemporaryDirectory): after
    each test, whatever it added to cls.tmp goes, and what setUpClass made stays. A training run
    writes about 0.9 GB (checkpoint, model, model_best); kept until the class ends, a suite's runs
    add up to more disk than a CI machine may have."""

    def setUp(self):
        super().setUp()
        self._made_before = set(os.listdir(self.tmp.name))

    def tearDown(self):
        for name in set(os.listdir(self.tmp.name)) - self._made_before:
            path = os.path.join(self.tmp.name, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
        super().tearDown()


def write_fixture(path, tensors):
    """tensors: dict name -> tensor (written in insertion order)."""
    import torch
    dtypes = {torch.float32: 0, torch.int64: 1, torch.uint8: 2, torch.float64: 3}
    with open(path + ".tmp", "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<II", VERSION, len(tensors)))
        for name, t in tensors.items():
            t = t.detach().cpu().contiguous()
            raw = name.encode()
            f.write(struct.pack("<I", len(raw)))
            f.write(raw)
            f.write(struct.pack("<II", dtypes[t.dtype], t.dim()))
            f.write(struct.pack(f"<{t.dim()}q", *t.shape))
            f.write(t.numpy().tobytes())
    os.replace(path + ".tmp", path)


def write_idx_subset(src, dst, count):
    """Writes the first `count` items of the gzipped IDX file src to dst, gzipped."""
    with gzip.open(src, "rb") as f:
        data = f.read()
    magic, _ = struct.unpack(">II", data[:8])
    dims = (magic & 0xFF) - 1  # dimensions after the count
    header = 8 + 4 * dims
    item = 1
    for i in range(dims):
        item *= struct.unpack(">I", data[8 + 4 * i: 12 + 4 * i])[0]
    with gzip.open(dst, "wb") as f:
        f.write(data[:4] + struct.pack(">I", count) + data[8:header]
                + data[header: header + count * item])


def write_fashion_mnist_subset(dst, train_count, val_count, src=FASHION_MNIST):
    """Makes dst a Fashion-MNIST folder: src's first train_count training and val_count test items."""
    os.makedirs(dst)
    for prefix, count in (("train", train_count), ("t10k", val_count)):
        for kind in FASHION_MNIST_KINDS:
            write_idx_subset(os.path.join(src, f"{prefix}-{kind}.gz"),
                             os.path.join(dst, f"{prefix}-{kind}.gz"), count)
    return dst


def unpack_fashion_mnist(root, prefix, src=FASHION_MNIST):
    """Unzips src's `prefix` ("train" or "t10k") files into root/FashionMNIST/raw, torchvision's layout."""
    raw = os.path.join(root, "FashionMNIST", "raw")
    os.makedirs(raw, exist_ok=True)
    for kind in FASHION_MNIST_KINDS:
        stem = f"{prefix}-{kind}"
        with gzip.open(os.path.join(src, stem + ".gz")) as packed, \
                open(os.path.join(raw, stem), "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
    return root


def scripted_setstate_trap():
    """A scripted module whose __setstate__ never returns, for the readers' tests: a
    loader that runs a TorchScript archive's code (torch.jit.load) hangs on it. Raises
    where the TorchScript compiler cannot take this signature (old PyTorch)."""
    import torch

    class Trap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2))

        def forward(self, x):
            return x

        @torch.jit.export
        def __getstate__(self):
            return (self.weight, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]):
            i = 0
            while i >= 0:
                i += 1
            self.weight = state[0]
            self.training = state[1]

    return torch.jit.script(Trap())
