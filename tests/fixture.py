"""Versioned tensor fixtures that the C++ tests read (tests/fixture.h).

Layout, little-endian:
  b"ALXREF\\0\\0", uint32 version, uint32 count,
  then per tensor: uint32 name length, name (utf-8), uint32 dtype code,
  uint32 ndim, int64 sizes[ndim], raw contiguous data.
"""
import struct

import torch

MAGIC = b"ALXREF\0\0"
VERSION = 1
DTYPES = {torch.float32: 0, torch.int64: 1, torch.uint8: 2, torch.float64: 3}


def write_fixture(path, tensors):
    """tensors: dict name -> tensor (written in insertion order)."""
    with open(path + ".tmp", "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<II", VERSION, len(tensors)))
        for name, t in tensors.items():
            t = t.detach().cpu().contiguous()
            raw = name.encode()
            f.write(struct.pack("<I", len(raw)))
            f.write(raw)
            f.write(struct.pack("<II", DTYPES[t.dtype], t.dim()))
            f.write(struct.pack(f"<{t.dim()}q", *t.shape))
            f.write(t.numpy().tobytes())
    import os
    os.replace(path + ".tmp", path)
