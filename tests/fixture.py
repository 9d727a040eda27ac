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
import time

MAGIC = b"ALXREF\0\0"
VERSION = 1
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_KINDS = ("images-idx3-ubyte", "labels-idx1-ubyte")


def once(test):
    """Marks a test method that does not depend on the LibTorch (command-line behaviour: flags, logs,
    progress; the same C++ in both builds). tests/CMakeLists.txt registers a class's @once tests as
    their own ctest entry, labelled once, which scripts/test.sh runs with the first flavour only."""
    test.alexnet_once = True
    return test


class _TimedResult(unittest.TextTestResult):
    """Records each test's wall time (not its class's set-up, which runs before the first)."""
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = []

    def startTest(self, test):
        self._started = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        self.seconds.append((time.monotonic() - self._started, test.id().split(".", 1)[-1]))
        super().stopTest(test)


def main():
    """The entry point of every unittest file, as ctest runs it: `SCRIPT [--once | --not-once] [CLASS...]`
    runs the named classes' tests (all by default) with or without @once. Every skip is printed with
    its reason. Exit status: 0 when a test ran and none failed, 1 on a failure or when nothing was
    selected, 77 when every selected test was skipped (ctest's SKIP_RETURN_CODE for these entries:
    a skip is counted as a skip, not a pass)."""
    import sys
    args = sys.argv[1:]
    mode = None
    if args and args[0] in ("--once", "--not-once"):
        mode, args = args[0], args[1:]
    module = sys.modules["__main__"]
    loader = unittest.defaultTestLoader
    names = args or [n for n, v in vars(module).items()
                     if isinstance(v, type) and issubclass(v, unittest.TestCase)]
    selected = []
    for name in names:
        for test in loader.loadTestsFromTestCase(getattr(module, name)):
            marked = getattr(getattr(test, test._testMethodName), "alexnet_once", False)
            if mode is None or marked == (mode == "--once"):
                selected.append(test)
    if not selected:
        print(f"error: no test selected by {' '.join(sys.argv[1:]) or 'default'}")
        sys.exit(1)
    result = unittest.TextTestRunner(verbosity=2, resultclass=_TimedResult).run(unittest.TestSuite(selected))
    for test, reason in result.skipped:
        print(f"skipped: {test}: {reason}")
    # Where the entry's time went (slowest first), for whoever trims the suite's time.
    for seconds, test in sorted(result.seconds, reverse=True):
        print(f"time: {seconds:7.1f} s  {test}")
    if not result.wasSuccessful():
        sys.exit(1)
    ran = result.testsRun - len(result.skipped)
    if ran <= 0:
        sys.exit(77)
    sys.exit(0)


# The CPU as the tests expect the binary to see it, stated apart from app/runtime/cpu: the flags
# /proc/cpuinfo lists, less what oneDNN's cap (ONEDNN_MAX_CPU_ISA, else DNNL_MAX_CPU_ISA) excludes.
# What each of oneDNN's names lets through, of the flags the project's choices read (oneDNN's
# "CPU Dispatcher Control"; its ISAs are partially ordered: AVX2_VNNI is not below AVX512_CORE).
_AVX2 = {"avx2"}
_AVX512 = _AVX2 | {"avx512f"}
_AVX512_VNNI = _AVX512 | {"avx512_vnni"}
_AVX512_BF16 = _AVX512_VNNI | {"avx512_bf16"}
_ALL = _AVX512_BF16 | {"avx_vnni", "amx_bf16", "amx_int8"}
ISA_CAPS = {
    "SSE41": set(), "AVX": set(), "AVX2": _AVX2, "AVX2_VNNI": _AVX2 | {"avx_vnni"},
    "AVX2_VNNI_2": _AVX2 | {"avx_vnni"}, "AVX512_MIC": _AVX2, "AVX512_MIC_4OPS": _AVX2,
    "AVX512_CORE": _AVX512, "AVX512_CORE_VNNI": _AVX512_VNNI, "AVX512_CORE_BF16": _AVX512_BF16,
    "AVX512_CORE_FP16": _AVX512_BF16 | {"avx_vnni"}, "AVX10_1_512": _AVX512_BF16 | {"avx_vnni"},
    "AVX10_2_512": _AVX512_BF16 | {"avx_vnni"}, "AVX512_CORE_AMX": _ALL, "AVX512_CORE_AMX_FP16": _ALL,
    "AVX10_1_512_AMX": _ALL, "AVX10_1_512_AMX_FP16": _ALL, "AVX10_2_512_AMX_2": _ALL, "ALL": _ALL,
    "DEFAULT": _ALL,
}


def isa_cap():
    """The cap in force, upper-cased ("AVX2"), or "" (unset, or a name oneDNN does not know)."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").upper()
        if value:
            return value if value in ISA_CAPS else ""
    return ""


def cpu_has(flag):
    """Whether the binary may use `flag` (a /proc/cpuinfo name: avx2, avx512f, avx512_vnni, avx_vnni,
    avx512_bf16, amx_bf16, amx_int8): the CPU lists it and the cap lets it through."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    cap = isa_cap()
    return flag in flags and (not cap or flag in ISA_CAPS[cap])


def cpu_has_vnni():
    """8-bit activations for int8 (the binary logs '8-bit activations')."""
    return cpu_has("avx512_vnni") or cpu_has("avx_vnni") or cpu_has("amx_int8")


def cpu_has_bf16():
    """bf16 instructions: --precision bf16 runs bf16 (else the binary warns and runs fp32)."""
    return cpu_has("avx512_bf16") or cpu_has("amx_bf16")


def cpu_has_plan_winograd():
    """The fp32 plan runs Winograd: oneDNN's (AVX-512) or its own (AVX2 and FMA, which it checks on
    the CPU itself: ONEDNN_MAX_CPU_ISA does not cap it below AVX2)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return cpu_has("avx512f") or ("avx2" in flags and "fma" in flags)


def cpu_vendor():
    """/proc/cpuinfo's vendor_id ("GenuineIntel", "AuthenticAMD"), or ""."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return ""


def auto_precision():
    """What --precision auto resolves to on the CPU: bf16 with AMX-BF16, or with AVX512-BF16 on an
    AMD CPU (Zen 4), else fp32."""
    fast_bf16 = cpu_has("amx_bf16") or (cpu_has("avx512_bf16") and cpu_vendor() == "AuthenticAMD")
    return "bf16" if fast_bf16 else "fp32"


def cpu_description():
    """For skip reasons and messages: the flags that matter, and the cap."""
    names = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    have = " ".join(n for n in names if cpu_has(n)) or "none of " + " ".join(names)
    return have + (f" (capped at {isa_cap()})" if isa_cap() else "")


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
