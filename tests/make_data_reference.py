"""Reference data for the data/ tests (tests/data_reference_test.cpp), from torchvision.

Writes under --out:
  folder/                 an ImageFolder tree of real photographs in many modes and formats
  folder_samples.txt      torchvision's samples: "label<TAB>path relative to folder/" per line
  folder_classes.txt      torchvision's classes, one per line
  folder.bin              per sample i: decoded_i (H, W, 3) uint8 from PIL's convert("RGB"),
                          eval_i (3, 224, 224) float32 from Resize(256)+CenterCrop(224)+ToTensor+Normalize
  rrc.bin                 RandomResizedCrop.get_params statistics over many draws
  fashion/FashionMNIST/raw/  the Fashion-MNIST test set, unzipped, as torchvision lays it out
  fashion.bin             torchvision.datasets.FashionMNIST(train=False) data and targets, and
                          its first images through Resize(64)+ToTensor+Normalize
  cifar10/, cifar100/     small fake CIFAR binary files
  cifar.bin               the same records through torchvision's CIFAR10/CIFAR100 classes
  sampler.bin             DistributedSampler index lists
Usage: /usr/bin/python3 tests/make_data_reference.py --out build/reference/data
"""
import argparse
import math
import os
import pickle
import shutil
import struct
import sys
import zlib

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture import unpack_fashion_mnist, write_fixture  # noqa: E402

PHOTOS = "/usr/share/doc/opencv-doc/examples/data"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def png_rgb16(path, array):
    """A 16-bit RGB PNG (PIL cannot write one). array: (H, W, 3) uint16."""
    h, w, _ = array.shape
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


def make_folder(root):
    """Classes with nested folders, mixed-case extensions, every mode decode.cpp must handle."""
    if os.path.exists(root):
        shutil.rmtree(root)
    photo = lambda name: Image.open(os.path.join(PHOTOS, name))  # noqa: E731
    baboon = photo("baboon.jpg").convert("RGB")  # 512x512
    fruits = photo("fruits.jpg").convert("RGB")
    lena_like = photo("messi5.jpg").convert("RGB")
    files = {}
    # Plain JPEG photographs of different sizes (one saved by us at 500x375, the ImageNet median).
    files["cat/a_baboon.jpg"] = lambda p: shutil.copy(os.path.join(PHOTOS, "baboon.jpg"), p)
    files["cat/B_fruits.JPG"] = lambda p: shutil.copy(os.path.join(PHOTOS, "fruits.jpg"), p)
    files["cat/c_messi.jpeg"] = lambda p: lena_like.resize((500, 375), Image.BILINEAR).save(p, quality=90)
    files["cat/notes.txt"] = lambda p: open(p, "w").write("not an image\n")
    # Nested folders: sorted(os.walk) orders by full path, so "sub-2" comes before "sub/x".
    files["cat/sub/x/d_tall.png"] = lambda p: baboon.crop((0, 0, 180, 400)).save(p)
    files["cat/sub-2/e_small.bmp"] = lambda p: fruits.resize((150, 120), Image.BILINEAR).save(p)
    files["cat/sub/f_grey.jpg"] = lambda p: baboon.convert("L").save(p, quality=85)
    # Modes: grayscale PNG, palette PNG, palette with transparency, RGBA, LA, 16-bit grey, 16-bit RGB.
    files["dog/g_grey.png"] = lambda p: fruits.convert("L").save(p)
    files["dog/h_palette.png"] = lambda p: fruits.convert("P", palette=Image.ADAPTIVE, colors=64).save(p)
    files["dog/i_palette_alpha.png"] = lambda p: fruits.convert("P", palette=Image.ADAPTIVE).save(
        p, transparency=3)
    files["dog/j_rgba.png"] = lambda p: Image.merge(
        "RGBA", (*baboon.split(), baboon.convert("L"))).resize((300, 260)).save(p)
    files["dog/k_la.png"] = lambda p: Image.merge(
        "LA", (fruits.convert("L"), baboon.convert("L").resize(fruits.size))).save(p)
    grey16 = (np.asarray(fruits.convert("L"), dtype=np.uint16) * 257)
    grey16[:40] //= 300  # small values too: PIL clips I;16 to 255 on convert("RGB")
    files["dog/l_grey16.png"] = lambda p: Image.fromarray(grey16).save(p)
    rgb16 = np.asarray(baboon, dtype=np.uint16)[:200, :260] * 257 + 91
    files["dog/m_rgb16.png"] = lambda p: png_rgb16(p, rgb16)
    files["dog/n_tiny.png"] = lambda p: baboon.resize((97, 61), Image.BILINEAR).save(p)  # padded crop
    files["dog/o_image.ppm"] = lambda p: fruits.resize((260, 300)).save(p)
    files["dog/p_image.tiff"] = lambda p: baboon.resize((333, 257)).save(p)
    files["dog/q_image.webp"] = lambda p: fruits.resize((320, 240)).save(p, lossless=True)
    files["dog/r_grey.pgm"] = lambda p: baboon.convert("L").resize((240, 250)).save(p)
    files["empty_looking/.hidden.jpg"] = lambda p: baboon.resize((256, 256)).save(p)
    for rel, make in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make(path)


def folder_reference(out):
    root = os.path.join(out, "folder")
    make_folder(root)
    eval_tf = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ds = torchvision.datasets.ImageFolder(root)
    with open(os.path.join(out, "folder_classes.txt"), "w") as f:
        f.writelines(c + "\n" for c in ds.classes)
    with open(os.path.join(out, "folder_samples.txt"), "w") as f:
        f.writelines(f"{label}\t{os.path.relpath(path, root)}\n" for path, label in ds.samples)
    tensors = {}
    for i, (path, _) in enumerate(ds.samples):
        img = ds.loader(path)  # PIL: Image.open(...).convert("RGB")
        tensors[f"decoded_{i}"] = torch.from_numpy(np.asarray(img).copy())
        tensors[f"eval_{i}"] = eval_tf(img)
    write_fixture(os.path.join(out, "folder.bin"), tensors)


def rrc_reference(out):
    """Box statistics of torchvision's RandomResizedCrop over many draws."""
    torch.manual_seed(0)
    draws = 20000
    tensors = {}
    for name, (h, w) in {"photo": (375, 500), "wide": (60, 600), "small": (31, 29)}.items():
        img = Image.new("RGB", (w, h))
        boxes = torch.tensor([transforms.RandomResizedCrop.get_params(
            img, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) for _ in range(draws)], dtype=torch.float64)
        i, j, bh, bw = boxes.unbind(1)
        tensors[f"{name}_size"] = torch.tensor([h, w], dtype=torch.int64)
        tensors[f"{name}_boxes"] = boxes  # (draws, 4): top, left, height, width
    write_fixture(os.path.join(out, "rrc.bin"), tensors)


def fashion_reference(out):
    root = unpack_fashion_mnist(os.path.join(out, "fashion"), "t10k")
    # torchvision checks that the train files exist too; only the test set is used here.
    torchvision.datasets.FashionMNIST._check_exists = lambda self: True
    ds = torchvision.datasets.FashionMNIST(root, train=False)
    tf = transforms.Compose([transforms.Resize(64), transforms.ToTensor(),
                             transforms.Normalize((0.2860,), (0.3530,))])
    first = torch.stack([tf(ds[i][0]) for i in range(32)])  # (32, 1, 64, 64)
    write_fixture(os.path.join(out, "fashion.bin"), {
        "data": ds.data, "targets": ds.targets, "eval_first32": first})


def cifar_reference(out):
    """Fake CIFAR files in the binary version, read back by torchvision's (pickle) classes."""
    rng = np.random.default_rng(0)
    tensors = {}
    for kind, files, label_bytes, classes in (
            ("cifar10", [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"], 1, 10),
            ("cifar100", ["train", "test"], 2, 100)):
        bin_dir = os.path.join(out, kind, "cifar-10-batches-bin" if kind == "cifar10" else "cifar-100-binary")
        py_dir = os.path.join(out, kind + "_py")
        for d in (bin_dir, py_dir):
            os.makedirs(d, exist_ok=True)
        for name in files:
            n = 7 if name != "test_batch" else 5
            pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            fine = rng.integers(0, classes, n)
            coarse = rng.integers(0, 20, n)
            labels = np.stack([coarse, fine], 1) if label_bytes == 2 else fine[:, None]
            records = np.concatenate([labels.astype(np.uint8), pixels], 1)
            records.tofile(os.path.join(bin_dir, name + ".bin"))
            entry = {"data": pixels, "fine_labels" if label_bytes == 2 else "labels": fine.tolist()}
            with open(os.path.join(py_dir, name), "wb") as f:
                pickle.dump(entry, f)
        meta_name = "meta" if kind == "cifar100" else "batches.meta"
        meta_key = "fine_label_names" if kind == "cifar100" else "label_names"
        with open(os.path.join(py_dir, meta_name), "wb") as f:
            pickle.dump({meta_key: [f"class{c}" for c in range(classes)]}, f)
        cls = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
        # The fake files have other checksums than the real ones; read them anyway.
        cls.base_folder = os.path.basename(py_dir)
        cls._check_integrity = lambda self: True
        cls.meta = {"filename": meta_name, "key": meta_key, "md5": None}
        for split, train in (("train", True), ("test", False)):
            ds = cls(out, train=train)
            tensors[f"{kind}_{split}_data"] = torch.from_numpy(ds.data)  # (N, 32, 32, 3)
            tensors[f"{kind}_{split}_targets"] = torch.tensor(ds.targets, dtype=torch.int64)
    # Truncated copy: one record less a byte.
    bad = os.path.join(out, "cifar10_bad", "cifar-10-batches-bin")
    os.makedirs(bad, exist_ok=True)
    with open(os.path.join(out, "cifar10", "cifar-10-batches-bin", "test_batch.bin"), "rb") as f:
        data = f.read()
    with open(os.path.join(bad, "test_batch.bin"), "wb") as f:
        f.write(data[:-1])
    write_fixture(os.path.join(out, "cifar.bin"), tensors)


def sampler_reference(out):
    from torch.utils.data.distributed import DistributedSampler
    tensors = {}
    for n, world, seed, epoch in ((10, 1, 0, 0), (10, 3, 7, 2), (5, 4, 123, 5), (3, 8, 1, 0)):
        for rank in range(world):
            s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
            s.set_epoch(epoch)
            tensors[f"n{n}_w{world}_s{seed}_e{epoch}_r{rank}"] = torch.tensor(list(s), dtype=torch.int64)
    write_fixture(os.path.join(out, "sampler.bin"), tensors)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    folder_reference(args.out)
    rrc_reference(args.out)
    fashion_reference(args.out)
    cifar_reference(args.out)
    sampler_reference(args.out)
    print(f"data reference written to {args.out}")


if __name__ == "__main__":
    main()
