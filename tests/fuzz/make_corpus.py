#!/usr/bin/python3
"""Writes the fuzzers' seed corpus, one folder per target, every file small (under 32 KiB):

  pth/           torch.save files (zip and legacy) with the pickle shapes of real checkpoints,
                 tiny TorchScript archives (scripted and traced), and attack_* files: a
                 duplicate dict key, stride-0 and overlapping views, zip entries aliasing one
                 record, a TorchScript object with a custom __setstate__ state
  pt2/           torch.export .pt2 archives (weights config JSON and raw records, written
                 here by hand: Debian's torch has no torch.export), and attack_* files: a view
                 past its record, an unknown dtype, a symbolic size, a pickled entry, ...
  safetensors/   a valid file with metadata, and attack_* files: overlap, out of bounds, a hole,
                 a duplicate key, a huge header length, an unknown dtype, bad metadata, ...
  idx/           MNIST-style images and labels, plain and gzip, and attack_* files: a gzip bomb
                 in miniature, truncated files, sizes whose product overflows, ...
  cifar/         CIFAR-10 and CIFAR-100 batches, and attack_* files: a label out of range, a
                 size that is not whole records
  image_header/  a tiny image in every format the header reader knows (PIL writes most, the
                 rest are made by hand), and attack_* pixel bombs declaring huge sizes

tests/pth_unit_test.cpp and tests/data_unit_test.cpp read every seed: attack_* ones must be
refused cleanly, the others read. Made again, the seeds come out byte for byte the same except
the legacy pth files (their storage keys are object addresses) and the scripted archive. Needs
Debian's python3-torch and python3-pil:

  /usr/bin/python3 tests/fuzz/make_corpus.py --out tests/fuzz/corpus
"""
import argparse
import collections
import gzip
import io
import json
import os
import struct
import sys
import zipfile
import zlib

import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fixture import scripted_setstate_trap  # noqa: E402  (tests/fixture.py)

MAX_SEED_BYTES = 32 << 10


def write(folder, name, data):
    assert len(data) < MAX_SEED_BYTES, f"{name}: {len(data)} bytes, more than a seed should be"
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def saved(obj, legacy=False):
    b = io.BytesIO()
    torch.save(obj, b, _use_new_zipfile_serialization=not legacy)
    return b.getvalue()


# ---------------------------------------------------------------- pth

def tiny_state():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 2)
    linear = torch.nn.Linear(4, 2)
    state = collections.OrderedDict()
    for prefix, module in (("features.0", conv), ("classifier.6", linear)):
        for name, t in module.state_dict().items():
            state[f"{prefix}.{name}"] = t
    return state


class Tiny(torch.nn.Module):
    """A couple of conv and linear layers, a Sequential and a bare parameter."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(),
                                            torch.nn.MaxPool2d(2))
        self.classifier = torch.nn.Linear(8, 3)
        self.scale = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1)) * self.scale


def jit_saved(module):
    b = io.BytesIO()
    torch.jit.save(module, b)
    return b.getvalue()


def rewrite_zip(data, patch):
    """A zip's entries with patch(name, bytes) -> bytes applied, stored as torch.save stores."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            # A fixed date, so that the seed's bytes do not change with the day it is made.
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)),
                          patch(info.filename, zin.read(info.filename)))
    return out.getvalue()


def zip_aliases(count=4, record=64):
    """One record named by `count` central-directory entries (and a data.pkl of {})."""
    name = b"archive/data/0"
    payload = bytes(record)
    crc = zlib.crc32(payload)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, record, record, len(name), 0) + name
    pkl = b"\x80\x02}q\x00."
    pkl_name = b"archive/data.pkl"
    pkl_off = len(local) + record
    local_pkl = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(pkl), len(pkl), len(pkl),
                            len(pkl_name), 0) + pkl_name
    body = local + payload + local_pkl + pkl
    entries = [(f"archive/data/{i}".encode(), 0, crc, record) for i in range(count)]
    entries.append((pkl_name, pkl_off, zlib.crc32(pkl), len(pkl)))
    central = b"".join(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, c, size, size,
                                   len(n), 0, 0, 0, 0, 0, off) + n for n, off, c, size in entries)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(body), 0)
    return body + central + end


def pth_seeds(folder):
    state = tiny_state()
    flat = torch.arange(12, dtype=torch.float32)
    optimizer = {"state": {0: {"momentum_buffer": torch.ones(2)}},
                 "param_groups": [{"lr": 0.1, "momentum": 0.9, "nesterov": False, "foreach": None,
                                   "params": [0, 1]}]}
    samples = {
        "state_zip": state,
        "train_ckpt": {"model": state, "optimizer": optimizer, "epoch": 2,
                       "args": argparse.Namespace(lr=0.1, lr_steps=[1, 2], resume="")},
        "views": {"a": flat[2:6], "b": flat.view(3, 4).t(), "c": flat[::3]},
        "dtypes": {d: torch.ones(2, dtype=getattr(torch, d)) for d in
                   ("float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
                    "uint8", "bool")},
        "scalars": [None, True, 1, -2, 2**40, -2**63, 1.5, "text", (1, (2, 3)), {1: "one"}],
    }
    for name, obj in samples.items():
        # To a path, as users save: the zip's folder is then named after the file.
        torch.save(obj, os.path.join(folder, name + ".pth"))
        torch.save(obj, os.path.join(folder, name + "_legacy.pth"), _use_new_zipfile_serialization=False)

    torch.manual_seed(0)
    tiny = Tiny().eval()
    write(folder, "ts_scripted.pt", jit_saved(torch.jit.script(tiny)))
    write(folder, "ts_traced.pt", jit_saved(torch.jit.trace(tiny, torch.rand(1, 1, 6, 6))))

    # Attacks (each refused: by the reader, or for views by model/weights.cpp).
    twice = dict(state)
    twice["classifier.6.biaZ"] = torch.ones(2)
    for suffix, legacy in (("", False), ("_legacy", True)):
        data = saved(twice, legacy)
        data = (rewrite_zip(data, lambda n, d: d.replace(b"classifier.6.biaZ", b"classifier.6.bias"))
                if not legacy else data.replace(b"classifier.6.biaZ", b"classifier.6.bias"))
        write(folder, f"attack_duplicate_key{suffix}.pth", data)
    write(folder, "attack_stride0.pth", saved({"classifier.6.weight": torch.zeros(1).expand(1000, 4096)}))
    base = torch.zeros(512 + 99)  # rows overlapping by all but one element
    write(folder, "attack_overlap_view.pth",
          saved({"classifier.6.weight": base.as_strided((100, 512), (1, 1))}))
    write(folder, "attack_zip_alias.pth", zip_aliases())
    try:
        write(folder, "attack_setstate.pt", jit_saved(scripted_setstate_trap()))
    except Exception as e:  # noqa: BLE001 - an older TorchScript may not take this signature
        print(f"note: could not script the __setstate__ trap ({type(e).__name__}: {e}); no seed for it")


# ---------------------------------------------------------------- safetensors

def pt2(config, records, extra=None):
    """A .pt2 archive as torch.export.save lays it out: model/archive_format, the weights
    config and its raw records under model/data/weights/, extra files under model/extra/."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as stored:
        class Fixed:  # fixed entry times: the same seeds every time
            @staticmethod
            def writestr(name, data):
                stored.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
        z = Fixed
        z.writestr("model/archive_format", b"pt2")
        z.writestr("model/archive_version", b"0")
        z.writestr("model/byteorder", b"little")
        for name, data in records.items():
            z.writestr("model/data/weights/" + name, data)
        text = config if isinstance(config, bytes) else json.dumps({"config": config}).encode()
        z.writestr("model/data/weights/model_weights_config.json", text)
        z.writestr("model/models/model.json", b"{}")
        for name, data in (extra or {}).items():
            z.writestr("model/extra/" + name, data)
    return buf.getvalue()


def pt2_meta(path, dtype, shape, stride, offset=0, **overrides):
    meta = {"dtype": dtype, "sizes": [{"as_int": n} for n in shape],
            "strides": [{"as_int": n} for n in stride], "storage_offset": {"as_int": offset},
            "requires_grad": True, "device": {"type": "cpu", "index": None}, "layout": 7}
    meta.update(overrides)
    return {"path_name": path, "is_param": True, "use_pickle": False, "tensor_meta": meta}


def pt2_seeds(folder):
    floats = struct.pack("<6f", 0.5, -1.0, 2.0, 3.5, -4.25, 8.0)
    longs = struct.pack("<2q", 7, -(1 << 40))
    records = {"weight_0": floats[:24], "weight_1": floats, "weight_2": longs}
    # dtype codes: torch/_export/serde/schema.py ScalarType (7 float32, 5 int64, 13 bfloat16)
    valid = {"w": pt2_meta("weight_0", 7, [2, 3], [3, 1]),
             "b": pt2_meta("weight_1", 7, [3], [1], 3),   # a view of the second half
             "c": pt2_meta("weight_1", 7, [3], [2]),      # strided over the same record
             "n": pt2_meta("weight_2", 5, [2], [1])}
    write(folder, "valid.pt2", pt2(valid, records, {"classes.json": b'["x", "y"]'}))
    write(folder, "bfloat16.pt2", pt2({"h": pt2_meta("weight_0", 13, [4], [1])}, {"weight_0": bytes(8)}))
    attacks = {
        "view_past_record": {"w": pt2_meta("weight_0", 7, [4], [1], 3)},
        "unknown_dtype": {"w": pt2_meta("weight_0", 29, [6], [1])},
        "symbolic_size": {"w": pt2_meta("weight_0", 7, [6], [1], sizes=[{"as_expr": {"expr_str": "s0"}}])},
        "pickled": {"w": dict(pt2_meta("weight_0", 7, [6], [1]), use_pickle=True)},
        "missing_record": {"w": pt2_meta("weight_9", 7, [6], [1])},
        "two_dtypes": {"w": pt2_meta("weight_0", 7, [6], [1]), "n": pt2_meta("weight_0", 5, [3], [1])},
        "sparse_layout": {"w": pt2_meta("weight_0", 7, [6], [1], layout=1)},
        "negative_offset": {"w": pt2_meta("weight_0", 7, [2], [1], -1)},
        "stride_length": {"w": pt2_meta("weight_0", 7, [2, 3], [1])},
        "overflow": {"w": pt2_meta("weight_0", 7, [1 << 62, 4], [1, 1 << 62])},
    }
    for name, config in attacks.items():
        write(folder, f"attack_{name}.pt2", pt2(config, {"weight_0": floats}))
    write(folder, "attack_partial_element.pt2", pt2({"w": pt2_meta("weight_0", 7, [1], [1])}, {"weight_0": bytes(7)}))
    write(folder, "attack_not_json.pt2", pt2(b'{"config": {"w": ', {"weight_0": floats}))
    # JSON leaves a repeated key undefined: the same weight named twice is refused.
    twice = json.dumps({"config": {"w": pt2_meta("weight_0", 7, [6], [1])}})
    twice = twice.replace('{"w": ', '{"w": ' + json.dumps(pt2_meta("weight_0", 7, [3], [1])) + ', "w": ', 1)
    write(folder, "attack_duplicate_weight.pt2", pt2(twice.encode(), {"weight_0": floats}))
    write(folder, "attack_no_weights.pt2", pt2({}, {}))


def safetensors(header, data, raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds(folder):
    torch.manual_seed(0)
    tensors = {"features.0.weight": torch.randn(2, 1, 2, 2), "features.0.bias": torch.randn(2).half(),
               "scale": torch.randn(3).bfloat16(), "steps": torch.tensor([7], dtype=torch.int64),
               "mask": torch.tensor([True, False]), "bytes": torch.arange(5, dtype=torch.uint8)}
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
             torch.bool: "BOOL", torch.uint8: "U8"}
    header, data = {"__metadata__": {"architecture": "alexnet", "classes": '["a", "b"]'}}, b""
    for name, t in tensors.items():
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    write(folder, "valid.safetensors", safetensors(header, data))
    write(folder, "valid_empty.safetensors", safetensors({}, b""))
    write(folder, "valid_zero_size.safetensors", safetensors(
        {"a": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
         "b": {"dtype": "I32", "shape": [], "data_offsets": [0, 4]},
         "c": {"dtype": "F32", "shape": [0, 0], "data_offsets": [4, 4]}}, bytes(4)))

    f32 = lambda shape, begin, end: {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}  # noqa: E731
    attacks = {
        "overlap": safetensors({"a": f32([4], 0, 16), "b": f32([4], 8, 24)}, bytes(24)),
        "out_of_bounds": safetensors({"a": f32([64], 0, 256)}, bytes(16)),
        "hole": safetensors({"a": f32([4], 16, 32)}, bytes(32)),
        "trailing": safetensors({"a": f32([4], 0, 16)}, bytes(20)),
        "shape_mismatch": safetensors({"a": f32([100000, 4096], 0, 16)}, bytes(16)),
        "shape_overflow": safetensors({"a": f32([2**32, 2**32, 2**32], 0, 16)}, bytes(16)),
        "negative_shape": safetensors({"a": f32([-4], 0, 16)}, bytes(16)),
        "reversed_offsets": safetensors({"a": f32([4], 16, 0)}, bytes(16)),
        "huge_header": struct.pack("<Q", 200_000_000) + b"{" + bytes(64),
        "header_past_end": struct.pack("<Q", 4096) + b'{"a": 1}',
        "duplicate_key": safetensors(None, bytes(8), raw_header=(
            b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            b'"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}')),
        "duplicate_metadata_key": safetensors(None, b"", raw_header=b'{"__metadata__": {"k": "1", "k": "2"}}'),
        "bad_dtype": safetensors({"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, bytes(4)),
        "metadata_not_string": safetensors({"__metadata__": {"n": 3}}, b""),
        "metadata_not_object": safetensors({"__metadata__": ["a"]}, b""),
        "not_object": safetensors(None, b"", raw_header=b"[1, 2, 3]"),
        "bad_json": safetensors(None, b"", raw_header=b'{"a": {"dtype": "F32", "shape": [1],'),
        "deep_nesting": safetensors(None, b"", raw_header=b'{"__metadata__": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    }
    for name, data in attacks.items():
        write(folder, f"attack_{name}.safetensors", data)


# ---------------------------------------------------------------- idx

def idx(dims, data):
    return bytes([0, 0, 8, len(dims)]) + struct.pack(">%dI" % len(dims), *dims) + data


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def idx_seeds(folder):
    images = idx([3, 4, 4], bytes(i * 7 % 251 for i in range(48)))
    labels = idx([3], bytes([3, 1, 4]))
    for name, data in (("images_idx3", images), ("labels_idx1", labels),
                       ("matrix_idx2", idx([2, 3], bytes(range(6)))), ("empty_idx1", idx([0], b""))):
        write(folder, name + "-ubyte", data)
        write(folder, name + "-ubyte.gz", gz(data))
    # Legal: gzip readers (zlib's, Python's) read concatenated members as one stream.
    write(folder, "images_two_members.gz", gz(images[:20]) + gz(images[20:]))
    attacks = {
        # Declares 16 bytes; inflates to 1 MiB.
        "gzip_bomb.gz": gz(idx([16], bytes(1 << 20))),
        # Declares more than 1032 times the compressed size.
        "gzip_promises.gz": gz(idx([60000, 28, 28], b"")),
        "truncated": images[:40],
        "truncated.gz": gz(images)[:-12],
        "excess": images + b"\0",
        "excess.gz": gz(images + b"\0"),
        "overflow": idx([0xFFFFFFFF] * 3, b""),
        "overflow.gz": gz(idx([0xFFFFFFFF] * 3, b"")),
        "bad_magic": bytes([0, 0, 9, 3]) + bytes(12),
        "header_only": images[:10],
    }
    for name, data in attacks.items():
        write(folder, "attack_" + name, data)


# ---------------------------------------------------------------- cifar

def cifar_seeds(folder):
    pixels = bytes(i % 256 for i in range(3072))
    write(folder, "cifar10_batch.bin", bytes([3]) + pixels + bytes([9]) + pixels)
    write(folder, "cifar100_batch.bin", bytes([4, 30]) + pixels + bytes([19, 99]) + pixels)
    write(folder, "attack_label_out_of_range.bin", bytes([12]) + pixels)
    write(folder, "attack_not_whole_records.bin", bytes([1]) + pixels + bytes(5))


# ---------------------------------------------------------------- image headers

def be16(v):
    return struct.pack(">H", v)


def be32(v):
    return struct.pack(">I", v)


def le16(v):
    return struct.pack("<H", v)


def le32(v):
    return struct.pack("<I", v)


def image_header_seeds(folder):
    rgb = Image.new("RGB", (5, 3), (200, 20, 30))
    formats = {"jpg": ("JPEG", {}), "png": ("PNG", {}), "bmp": ("BMP", {}), "gif": ("GIF", {}),
               "webp": ("WEBP", {}), "lossless.webp": ("WEBP", {"lossless": True}),
               "tiff": ("TIFF", {}), "ppm": ("PPM", {}), "jp2": ("JPEG2000", {}),
               "j2k": ("JPEG2000", {"no_jp2": True})}
    encoded = {}
    for ext, (fmt, options) in formats.items():
        b = io.BytesIO()
        try:
            rgb.save(b, fmt, **options)
        except (OSError, KeyError) as e:  # a PIL built without that codec
            print(f"note: PIL cannot write {fmt} here ({e}); no seed for it")
            continue
        encoded[ext] = b.getvalue()
        write(folder, "tiny." + ext, encoded[ext])
    # Formats PIL does not write, by hand.
    write(folder, "tiny.pgm", b"P5\n# comment\n5 3\n255\n" + bytes(15))
    write(folder, "tiny.pam", b"P7\nWIDTH 5\nHEIGHT 3\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + bytes(45))
    write(folder, "tiny.pfm", b"PF\n5 3\n-1.0\n" + bytes(180))
    write(folder, "tiny.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 3 +X 5\n" + bytes(60))
    write(folder, "tiny.ras", b"\x59\xA6\x6A\x95" + be32(5) + be32(3) + be32(24) + bytes(16 + 48))
    write(folder, "tiny.exr", b"\x76\x2F\x31\x01" + le32(2) + b"channels\0chlist\0" + le32(1) + b"\0" +
          b"dataWindow\0box2i\0" + le32(16) + le32(0) + le32(0) + le32(4) + le32(2) + b"\0" + bytes(16))
    big = b"II+\0" + le16(8) + le16(0) + le32(16) + le32(0) + le32(2) + le32(0)
    big += le16(256) + le16(16) + le32(1) + le32(0) + le32(5) + le32(0)
    big += le16(257) + le16(3) + le32(1) + le32(0) + le16(3) + bytes(6)
    write(folder, "tiny_bigtiff.tif", big)

    # Pixel bombs: a few hundred bytes declaring billions of pixels.
    bombs = {}
    if "jpg" in encoded:
        j = bytearray(encoded["jpg"])
        sof = next(i for i in range(2, len(j) - 1) if j[i] == 0xFF and j[i + 1] in (0xC0, 0xC2))
        j[sof + 5:sof + 9] = be16(65000) + be16(65000)
        bombs["jpeg.jpg"] = bytes(j)
    if "png" in encoded:
        p = bytearray(encoded["png"])
        p[16:24] = be32(100000) + be32(100000)
        bombs["png.png"] = bytes(p)
    bombs["gif.gif"] = b"GIF89a" + le16(65535) + le16(65535) + bytes(8)
    bombs["bmp.bmp"] = b"BM" + bytes(12) + le32(40) + le32(0x7FFFFFFF) + le32(0x80000000) + bytes(28)
    bombs["webp_vp8x.webp"] = b"RIFF" + le32(30) + b"WEBPVP8X" + le32(10) + bytes(4) + b"\xFF" * 6
    bombs["tiff.tif"] = (b"MM\0*" + be32(8) + be16(2) + be16(256) + be16(4) + be32(1) + be32(0xFFFFFFFF) +
                         be16(257) + be16(4) + be32(1) + be32(0xFFFFFFFF) + be32(0))
    bombs["ppm.ppm"] = b"P6\n4294967295 4294967295\n255\n"
    bombs["j2k.j2k"] = b"\xFF\x4F\xFF\x51\x00\x29\x00\x00" + be32(0xFFFFFFFF) * 2 + bytes(8) + bytes(24)
    for name, data in bombs.items():
        write(folder, "attack_bomb_" + name, data)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", nargs="*", help="these targets' seeds (default: all)")
    args = parser.parse_args()
    for name, make in (("pth", pth_seeds), ("pt2", pt2_seeds), ("safetensors", safetensors_seeds),
                       ("idx", idx_seeds), ("cifar", cifar_seeds), ("image_header", image_header_seeds)):
        if args.only and name not in args.only:
            continue
        folder = os.path.join(args.out, name)
        os.makedirs(folder, exist_ok=True)
        make(folder)


if __name__ == "__main__":
    main()
