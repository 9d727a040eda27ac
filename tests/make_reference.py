#!/usr/bin/python3
"""Reference data for the C++ tests, made by torchvision at test time from seeds.

Writes into --out:
  alexnet_seed0_script.pt / _trace.pt   TorchScript archives of a seeded AlexNet
  alexnet_seed1_10cls_script.pt         the same with 10 classes
  wrong_shape.pt, wrong_name.pt, other_model.pt, not_an_archive.pt
  model.bin      parameters of torchvision.models.alexnet() after torch.manual_seed(0),
                 inputs of several sizes and the seed-0 model's eval-mode logits
  photos.txt     real photographs used below, one path per line
  photos.bin     torchvision's evaluation transform of each photo (PIL + transforms)
                 and the seed-0 model's logits on it
  train.bin      initial weights, 20 batches, the losses and final weights of
                 torch.optim.SGD (momentum, weight decay) on torchvision's AlexNet
"""
import argparse
import os
import sys

import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture import write_fixture  # noqa: E402

PHOTO_DIR = "/usr/share/doc/opencv-doc/examples/data"
# Landscape, portrait, small (upscaled), large, square at the target size,
# grayscale, RGBA and palette images.
PHOTOS = ["squirrel_cls.jpg", "butterfly.jpg", "HappyFish.jpg", "aloeL.jpg", "messi5.jpg",
          "blox.jpg", "ellipses.jpg", "cards.png", "imageTextN.png", "starry_night.jpg"]

# (batch, height, width) inputs for the logits comparison.
INPUTS = {"224_b1": (1, 224, 224), "224_b8": (8, 224, 224), "63_b1": (1, 63, 63),
          "63_b8": (8, 63, 63), "nonsquare_b1": (1, 100, 150), "nonsquare_b8": (8, 231, 97)}


def seeded_alexnet(seed, num_classes=1000):
    torch.manual_seed(seed)
    return torchvision.models.alexnet(num_classes=num_classes).eval()


def write_archives(out):
    model = seeded_alexnet(0)
    torch.jit.script(model).save(os.path.join(out, "alexnet_seed0_script.pt"))
    torch.jit.trace(model, torch.zeros(1, 3, 224, 224)).save(
        os.path.join(out, "alexnet_seed0_trace.pt"))
    torch.jit.script(seeded_alexnet(1, 10)).save(os.path.join(out, "alexnet_seed1_10cls_script.pt"))

    wrong_shape = seeded_alexnet(2)
    wrong_shape.features[0] = torch.nn.Conv2d(3, 64, kernel_size=5, stride=4, padding=2)
    torch.jit.script(wrong_shape).save(os.path.join(out, "wrong_shape.pt"))

    class Renamed(torch.nn.Module):  # AlexNet whose classifier is called "head"
        def __init__(self):
            super().__init__()
            m = seeded_alexnet(3)
            self.features, self.avgpool, self.head = m.features, m.avgpool, m.classifier

        def forward(self, x):
            return self.head(torch.flatten(self.avgpool(self.features(x)), 1))

    torch.jit.script(Renamed()).save(os.path.join(out, "wrong_name.pt"))
    torch.manual_seed(4)
    torch.jit.script(torchvision.models.squeezenet1_1().eval()).save(
        os.path.join(out, "other_model.pt"))
    with open(os.path.join(out, "not_an_archive.pt"), "wb") as f:
        f.write(b"this is not a TorchScript archive\n" * 10)


def write_model_fixture(out):
    model = seeded_alexnet(0)
    tensors = {}
    for name, p in model.named_parameters():
        tensors["param/" + name] = p
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for key, (n, h, w) in INPUTS.items():
            x = torch.randn(n, 3, h, w, generator=gen)
            tensors["input/" + key] = x
            tensors["logits/" + key] = model(x)
    write_fixture(os.path.join(out, "model.bin"), tensors)


def write_photo_fixture(out):
    model = seeded_alexnet(0)
    # torchvision's reference evaluation transform for AlexNet.
    tf = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    paths = [os.path.join(PHOTO_DIR, p) for p in PHOTOS if os.path.exists(os.path.join(PHOTO_DIR, p))]
    if len(paths) < 5:
        sys.exit(f"error: expected the photographs of Debian's opencv-doc in {PHOTO_DIR}")
    tensors = {}
    with torch.no_grad():
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                img = Image.open(f).convert("RGB")  # as torchvision's default_loader
            x = tf(img)
            tensors[f"pre/{i}"] = x
            tensors[f"logits/{i}"] = model(x.unsqueeze(0))[0]
    write_fixture(os.path.join(out, "photos.bin"), tensors)
    with open(os.path.join(out, "photos.txt"), "w") as f:
        f.write("\n".join(paths) + "\n")


# SGD parity: 20 steps of torch.optim.SGD on fixed batches, dropout off.
TRAIN_STEPS, TRAIN_BATCH, TRAIN_SIZE, TRAIN_CLASSES = 20, 4, 64, 10
TRAIN_LR, TRAIN_MOMENTUM, TRAIN_WD = 0.01, 0.9, 5e-4


def write_train_fixture(out):
    torch.manual_seed(5)
    model = torchvision.models.alexnet(num_classes=TRAIN_CLASSES, dropout=0.0).train()
    tensors = {"init/" + n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=TRAIN_LR, momentum=TRAIN_MOMENTUM,
                          weight_decay=TRAIN_WD)
    gen = torch.Generator().manual_seed(99)
    losses = []
    for step in range(TRAIN_STEPS):
        x = torch.randn(TRAIN_BATCH, 3, TRAIN_SIZE, TRAIN_SIZE, generator=gen)
        y = torch.randint(0, TRAIN_CLASSES, (TRAIN_BATCH,), generator=gen)
        tensors[f"x/{step}"], tensors[f"y/{step}"] = x, y
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    tensors["hyper"] = torch.tensor([TRAIN_LR, TRAIN_MOMENTUM, TRAIN_WD], dtype=torch.float64)
    for n, p in model.named_parameters():
        tensors["final/" + n] = p.detach()
    write_fixture(os.path.join(out, "train.bin"), tensors)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    write_archives(args.out)
    write_model_fixture(args.out)
    write_photo_fixture(args.out)
    write_train_fixture(args.out)
    print(f"reference data written to {args.out} (torch {torch.__version__}, "
          f"torchvision {torchvision.__version__})")


if __name__ == "__main__":
    main()
