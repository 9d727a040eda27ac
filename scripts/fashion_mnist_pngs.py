#!/usr/bin/python3
"""Writes Fashion-MNIST images as PNG files, for trying `alexnet predict` on real pictures
with no download: the first N of the test split of Debian's dataset-fashion-mnist, each named
after its index and true class (00000-ankle-boot.png). Standard library only.

Usage: scripts/fashion_mnist_pngs.py [--count 8] [--split test|train]
                                     [--data /usr/share/datasets/fashion-mnist] --output DIR
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

# The classes in label order, as torchvision.datasets.FashionMNIST.classes.
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def read_idx(path, magic, want):
    """The header dimensions and the first `want` items of an IDX file (gzip or not)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or struct.unpack(">I", head)[0] != magic:
            raise ValueError(f"{path}: not an IDX file of the expected kind (magic {magic:#x})")
        dims = struct.unpack(">" + "I" * (magic & 0xFF), f.read(4 * (magic & 0xFF)))
        item = 1
        for d in dims[1:]:
            item *= d
        n = min(want, dims[0])
        data = f.read(n * item)
        if len(data) < n * item:
            raise ValueError(f"{path}: truncated")
        return dims, n, data, item


def png(width, height, grey):
    """An 8-bit greyscale PNG of `grey` (width * height bytes, row-major)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + grey[y * width:(y + 1) * width] for y in range(height))  # filter 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--split", choices=["test", "train"], default="test")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    if args.count <= 0:
        parser.error("--count must be positive")
    prefix = "t10k" if args.split == "test" else "train"
    try:
        (_, rows, cols), n, pixels, size = read_idx(
            os.path.join(args.data, f"{prefix}-images-idx3-ubyte.gz"), 0x803, args.count)
        _, _, labels, _ = read_idx(os.path.join(args.data, f"{prefix}-labels-idx1-ubyte.gz"), 0x801, n)
        os.makedirs(args.output, exist_ok=True)
        for i in range(n):
            name = CLASSES[labels[i]].lower().replace("/", "-").replace(" ", "-")
            path = os.path.join(args.output, f"{i:05d}-{name}.png")
            with open(path, "wb") as f:
                f.write(png(cols, rows, pixels[i * size:(i + 1) * size]))
    except (OSError, ValueError, IndexError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {n} {args.split} images to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
