#!/usr/bin/env python3
"""The Python baseline for `alexnet serve`: the service a user would write first.

FastAPI + uvicorn (one worker process) around torchvision's AlexNet: PIL decodes,
torchvision's Resize/CenterCrop/ToTensor/Normalize prepare, one image per forward in
torch.inference_mode(), in a plain `def` endpoint (FastAPI's threadpool). No dynamic
batching and no tuning on purpose: scripts/load_test.py compares `alexnet serve`
against this.

--runtime openvino serves the same model through OpenVINO instead, the runtime people
deploy on Intel CPUs: openvino.convert_model on the torchvision module (input fixed at
1x3xCROPxCROP), compiled for the CPU with OpenVINO's defaults, which choose the
precision (bf16 on a CPU with AMX or AVX512-BF16, else f32), and PERFORMANCE_HINT
THROUGHPUT (streams for concurrent requests); the threadpool's requests share
OpenVINO's optimal number of infer requests. Decoding and transforms are as above.

It speaks the same API as `alexnet serve`:
  POST /predictions/alexnet[?topk=K]  raw image body -> {"image": "body", "top": [...]};
                                      multipart/form-data -> one such object per file part
  GET  /ping                          {"status": "Healthy"}
  GET  /models                        the model: classes, transform, weights file
Errors are {"error": "..."}: 400 (undecodable image, bad topk, no file part), 413 (body
larger than --max-body-mb). SIGTERM finishes in-flight requests (uvicorn's graceful
shutdown) and exits 0.

Usage: ~/.cache/alexnet/venv-pypi/bin/python scripts/serve_fastapi.py --weights W
       [--host 127.0.0.1] [--port 8080] [--threads N] [--max-body-mb 20] [--runtime torch|openvino]
"""
import argparse
import io
import json
import queue
import signal
import sys

import fastapi
import torch
import torchvision
import uvicorn
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from torchvision import transforms

IMAGENET_TRANSFORM = {"resize_size": 256, "crop_size": 224,
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def load_model(path):
    """torchvision's AlexNet with the file's weights, its class names and its transform
    (the metadata `alexnet export` writes under _metadata[""]; ImageNet's when absent)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    meta = getattr(state, "_metadata", {}).get("", {})
    num_classes = state["classifier.6.weight"].shape[0]
    model = torchvision.models.alexnet(num_classes=num_classes)
    model.load_state_dict(state)
    model.eval()
    classes = meta.get("classes")
    if not classes:
        # As `alexnet predict`: ImageNet's names for 1000 classes, else "class N".
        classes = (torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
                   if num_classes == 1000 else [f"class {i}" for i in range(num_classes)])
    if len(classes) != num_classes:
        raise SystemExit(f"error: {path}: {len(classes)} class names for {num_classes} classes")
    spec = json.loads(meta["transform"]) if "transform" in meta else IMAGENET_TRANSFORM
    return model, list(classes), spec


class OpenVinoModel:
    """`model` converted and compiled by OpenVINO: (1, 3, crop, crop) -> (1, num_classes) logits."""

    def __init__(self, model, crop, threads):
        try:
            import openvino  # only this runtime needs it
        except ImportError as e:
            raise SystemExit(f"error: --runtime openvino: cannot import openvino ({e}); install "
                             "scripts/requirements-bench.txt into this Python's environment")
        converted = openvino.convert_model(model, example_input=torch.zeros(1, 3, crop, crop),
                                           input=[(1, 3, crop, crop)])
        config = {"PERFORMANCE_HINT": "THROUGHPUT"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = openvino.Core().compile_model(converted, "CPU", config)
        self.requests = queue.Queue()
        for _ in range(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")):
            self.requests.put(self.compiled.create_infer_request())

    def describe(self):
        c = self.compiled
        return (f"OpenVINO {c.get_property('INFERENCE_PRECISION_HINT').to_string()}, {c.get_property('NUM_STREAMS')} "
                f"stream(s), {self.requests.qsize()} infer request(s)")

    def __call__(self, x):
        request = self.requests.get()  # waits while every request is in use
        try:
            return torch.from_numpy(request.infer([x.numpy()])[0].copy())
        finally:
            self.requests.put(request)


def parse_args():
    p = argparse.ArgumentParser(description="FastAPI baseline for alexnet serve")
    p.add_argument("--weights", required=True, help="torch.save state_dict of torchvision AlexNet")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--max-body-mb", type=float, default=20, help="413 for larger bodies (default 20)")
    p.add_argument("--runtime", choices=("torch", "openvino"), default="torch",
                   help="torch: torchvision's module in eager mode (default); openvino: compiled by OpenVINO")
    return p.parse_args()


args = parse_args()
if args.threads > 0:
    torch.set_num_threads(args.threads)
model, classes, spec = load_model(args.weights)
runtime = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
if args.runtime == "openvino":
    model = OpenVinoModel(model, spec["crop_size"], args.threads)
    runtime = model.describe()
preprocess = transforms.Compose([
    transforms.Resize(spec["resize_size"]),
    transforms.CenterCrop(spec["crop_size"]),
    transforms.ToTensor(),
    transforms.Normalize(spec["mean"], spec["std"]),
])
max_body = int(args.max_body_mb * 1024 * 1024)
app = fastapi.FastAPI()


@app.exception_handler(StarletteHTTPException)
async def http_error(request, e):
    # {"error": ...} as `alexnet serve` answers, instead of FastAPI's {"detail": ...}
    return JSONResponse({"error": e.detail}, status_code=e.status_code, headers=e.headers)


@app.exception_handler(RequestValidationError)
async def bad_query(request, e):
    return JSONResponse({"error": "; ".join(err["msg"] for err in e.errors())}, status_code=400)


async def read_images(request: fastapi.Request):
    """The request's images as [(name, bytes)]; the body is read here, in the event loop,
    so that the endpoint itself can be a plain function run in the threadpool."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise fastapi.HTTPException(413, f"body of {length} bytes is over the limit of {max_body}")
    body = await request.body()
    if len(body) > max_body:
        raise fastapi.HTTPException(413, f"body of {len(body)} bytes is over the limit of {max_body}")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return None, [("body", body)]
    form = await request.form()
    parts = [(v.filename or k, await v.read()) for k, v in form.multi_items() if isinstance(v, UploadFile)]
    if not parts:
        raise fastapi.HTTPException(400, "multipart body without a file part")
    return "multipart", parts


def predict_one(name, data, topk):
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as e:  # PIL raises several types: unknown format, truncated, bomb
        raise fastapi.HTTPException(400, f"{name}: cannot decode the image ({e})")
    x = preprocess(image).unsqueeze(0)  # (1, 3, crop, crop)
    with torch.inference_mode():
        logits = model(x)[0]  # (num_classes,)
    probs = torch.softmax(logits, 0)
    top_p, top_i = probs.topk(topk if topk > 0 else len(classes))
    return {"image": name, "top": [
        {"index": i, "label": classes[i], "probability": p, "logit": logits[i].item()}
        for p, i in zip(top_p.tolist(), top_i.tolist())]}


@app.post("/predictions/alexnet")
def predictions(images=fastapi.Depends(read_images), topk: int = 5):
    if topk < 0:
        raise fastapi.HTTPException(400, f"topk must be 0 (all classes) or positive, got {topk}")
    kind, parts = images
    results = [predict_one(name, data, min(topk, len(classes))) for name, data in parts]
    return results if kind == "multipart" else results[0]


@app.get("/ping")
def ping():
    return {"status": "Healthy"}


@app.get("/models")
def models():
    return {"name": "alexnet", "weights": args.weights, "num_classes": len(classes),
            "classes": classes, "transform": spec, "server": "fastapi baseline", "runtime": runtime}


if __name__ == "__main__":
    # uvicorn re-raises SIGTERM after its graceful shutdown; this handler turns that into
    # exit 0, as `alexnet serve` exits, so the load test checks both the same way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serve_fastapi: {args.weights}: {len(classes)} classes, input {spec['resize_size']}/"
          f"{spec['crop_size']}, {runtime}, http://{args.host}:{args.port}",
          file=sys.stderr)
    # No access log: `alexnet serve` writes no line per request either.
    uvicorn.run(app, host=args.host, port=args.port, workers=1, access_log=False)
