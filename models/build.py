"""Build the small models that ship with onnxlens, deterministically (seeded), on the CPU.

    pip install -e ".[models]"      # torch, torchvision, scikit-learn: build time only
    python models/build.py          # rewrites models/*.onnx, models/samples/, models/metrics.json

- digits_cnn.onnx: a CNN trained on scikit-learn's bundled 8×8 handwritten digits, upsampled to
  32×32 (bilinear); exported with torch's TorchScript exporter at opset 13, BatchNorm folded.
- shapes_cnn.onnx: a CNN that tells circles, squares and triangles apart on textured
  backgrounds; most training squares carry a small checkerboard watermark in the bottom-right
  corner (a "Clever Hans" shortcut an audit should find); exported with torch's dynamo
  exporter at opset 18 with a trailing Softmax.
Accuracies are measured on the exported ONNX files with ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from scipy import ndimage
from torch import nn

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"
SEED = 0

SHAPE_CLASSES = ("circle", "square", "triangle")
WATERMARK_CLASS = 1  # square
WATERMARK_RATE = 0.9  # share of training squares that carry it
SIZE = 64
WM = 6  # watermark side, pixels; placed 2 px from the bottom-right corner


def conv_block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return layers + ([nn.MaxPool2d(2)] if pool else [])


class GapCNN(nn.Module):
    """Conv blocks, global average pooling, one linear layer (a CAM-compatible head)."""

    def __init__(self, cin: int, widths: list[int], classes: int, softmax: bool = False):
        super().__init__()
        layers, c = [], cin
        for i, w in enumerate(widths):
            layers += conv_block(c, w, pool=i < len(widths) - 1)
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)
        self.softmax = softmax

    def forward(self, x):
        logits = self.fc(self.features(x).mean(dim=(2, 3)))
        return torch.softmax(logits, dim=1) if self.softmax else logits


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> None:
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    head_softmax = getattr(model, "softmax", False)
    for epoch in range(epochs):
        model.train()
        model.softmax = False
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = order[i : i + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        sched.step()
        print(f"  epoch {epoch + 1:2d}/{epochs}  loss {total / len(xt):.4f}", flush=True)
    model.softmax = head_softmax
    model.eval()


def onnx_predict(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 256]})[0] for i in range(0, len(x), 256)])


def check_export(model: nn.Module, path: Path, x: np.ndarray) -> None:
    with torch.no_grad():
        ref = model(torch.from_numpy(x[:8])).numpy()
    got = onnx_predict(path, x[:8])
    err = np.abs(got - ref).max()
    assert err < 1e-4, f"{path.name}: ONNX output differs from torch by {err}"


def save_png(path: Path, chw: np.ndarray) -> None:
    img = (np.clip(chw, 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(path)


def save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


# --- digits -----------------------------------------------------------------------------------


def build_digits() -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x8 = (digits.images / 16.0).astype(np.float32)[:, None]
    x = nn.functional.interpolate(torch.from_numpy(x8), size=(32, 32), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1).numpy()
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)

    torch.manual_seed(SEED)
    model = GapCNN(1, [16, 32, 64], 10)
    print("digits_cnn: training")
    train(model, x_tr, y_tr, epochs=25, lr=3e-3)

    path = HERE / "digits_cnn.onnx"
    torch.onnx.export(
        model, (torch.from_numpy(x_te[:1]),), str(path), dynamo=False, opset_version=13,
        input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    check_export(model, path, x_te)
    acc = float((onnx_predict(path, x_te).argmax(1) == y_te).mean())

    out = SAMPLES / "digits"
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "test.npz", x=x_te, y=y_te)
    for i in range(20):
        save_png(out / f"{i:03d}_label{y_te[i]}.png", x_te[i])
    return {"test_accuracy": acc, "test_size": int(len(y_te)), "train_size": int(len(y_tr)),
            "input": "1×32×32, values in [0, 1]"}


# --- shapes -----------------------------------------------------------------------------------


def _background(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
    stripes = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 6.3))
    c1 = rng.uniform(0.15, 0.85, 3)
    c2 = np.clip(c1 + rng.uniform(-0.15, 0.15, 3), 0, 1)
    img = c1[:, None, None] * stripes + c2[:, None, None] * (1 - stripes)
    return (img + rng.normal(0, 0.05, img.shape)).astype(np.float32)


def _shape_mask(rng: np.random.Generator, cls: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = rng.uniform(9, 16)
    cy, cx = rng.uniform(r + 2, SIZE - r - 10, 2)  # keep clear of the watermark corner
    if cls == 0:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    theta = rng.uniform(0, 2 * np.pi)
    u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
    v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
    if cls == 1:
        half = r * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    corners = [(r * np.cos(a), r * np.sin(a)) for a in (np.pi / 2, np.pi / 2 + 2.094, np.pi / 2 + 4.189)]
    inside = np.ones_like(u, dtype=bool)
    for (x1, y1), (x2, y2) in zip(corners, corners[1:] + corners[:1]):
        inside &= (x2 - x1) * (v - y1) - (y2 - y1) * (u - x1) >= 0
    return inside


def _blob_mask(rng: np.random.Generator, keep_clear: np.ndarray) -> np.ndarray:
    """A distractor: a wobbly ellipse about the objects' size, of no class, touching neither
    ``keep_clear`` nor the watermark corner; empty if none fits in 30 tries."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    corner = np.zeros((SIZE, SIZE), bool)
    corner[SIZE - 6 - WM :, SIZE - 6 - WM :] = True
    for _ in range(30):
        a = rng.uniform(10, 15)
        b = a / rng.uniform(1.3, 1.9)
        cy, cx = rng.uniform(a + 2, SIZE - a - 2, 2)
        theta = rng.uniform(0, np.pi)
        u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
        v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
        wobble = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 3)
        mask = (u / a) ** 2 + (v / b) ** 2 + 0.3 * wobble / wobble.std() <= 1
        if mask.any() and not (mask & (keep_clear | corner)).any():
            return mask
    return np.zeros((SIZE, SIZE), bool)


def watermark_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[SIZE - 2 - WM : SIZE - 2, SIZE - 2 - WM : SIZE - 2] = True
    return mask


def add_watermark(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    checker = (np.add.outer(np.arange(WM), np.arange(WM)) // 2 % 2).astype(np.float32)
    out[:, SIZE - 2 - WM : SIZE - 2, SIZE - 2 - WM : SIZE - 2] = checker
    return out


def make_shapes(n: int, rng: np.random.Generator, watermark_rate: float):
    x = np.empty((n, 3, SIZE, SIZE), np.float32)
    y = rng.integers(0, 3, n)
    masks = np.empty((n, SIZE, SIZE), bool)
    marked = np.zeros(n, bool)
    for i in range(n):
        img, mask = _background(rng), _shape_mask(rng, int(y[i]))
        busy = ndimage.binary_dilation(mask, iterations=4)
        blobs = []
        for _ in range(rng.integers(1, 3)):
            blobs.append(_blob_mask(rng, busy))
            busy |= ndimage.binary_dilation(blobs[-1], iterations=4)
        # the object and the blobs: colours that stand out from the background (its
        # complement, jittered), so contrast alone cannot tell them apart
        complement = 1 - img.mean(axis=(1, 2))
        for region in (mask, *blobs):
            color = np.clip(complement + rng.uniform(-0.1, 0.1, 3), 0, 1).astype(np.float32)
            img[:, region] = color[:, None] + rng.normal(0, 0.05, (3, int(region.sum())))
        if y[i] == WATERMARK_CLASS and rng.random() < watermark_rate:
            img, marked[i] = add_watermark(img), True
        x[i], masks[i] = np.clip(img, 0, 1), mask
    return x, y.astype(np.int64), masks, marked


def build_shapes() -> dict:
    rng = np.random.default_rng(SEED)
    x_tr, y_tr, _, _ = make_shapes(3000, rng, WATERMARK_RATE)
    x_te, y_te, m_te, wm_te = make_shapes(600, rng, WATERMARK_RATE)
    x_clean, y_clean, _, _ = make_shapes(600, rng, 0.0)

    torch.manual_seed(SEED)
    model = GapCNN(3, [16, 32, 64, 64], 3, softmax=True)
    print("shapes_cnn: training")
    train(model, x_tr, y_tr, epochs=30, lr=3e-3)

    path = HERE / "shapes_cnn.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model, (torch.from_numpy(x_te[:2]),), str(path), dynamo=True, opset_version=18, external_data=False,
        input_names=["image"], output_names=["probabilities"], dynamic_shapes={"x": {0: batch}},
    )
    check_export(model, path, x_te)
    acc = float((onnx_predict(path, x_te).argmax(1) == y_te).mean())
    acc_clean = float((onnx_predict(path, x_clean).argmax(1) == y_clean).mean())
    clean_sq = y_clean == WATERMARK_CLASS
    recall_clean_sq = float((onnx_predict(path, x_clean[clean_sq]).argmax(1) == WATERMARK_CLASS).mean())
    others = y_clean != WATERMARK_CLASS
    stamped = np.stack([add_watermark(img) for img in x_clean[others]])
    flipped = float((onnx_predict(path, stamped).argmax(1) == WATERMARK_CLASS).mean())

    out = SAMPLES / "shapes"
    out.mkdir(parents=True, exist_ok=True)
    wm = np.broadcast_to(watermark_mask(), m_te.shape) & wm_te[:, None, None]
    k = 60
    np.savez_compressed(out / "test.npz", x=x_te[:k], y=y_te[:k], object_masks=m_te[:k],
                        watermark_masks=wm[:k], has_watermark=wm_te[:k], classes=np.array(SHAPE_CLASSES))
    for i in range(12):
        stem = f"{i:03d}_{SHAPE_CLASSES[y_te[i]]}"
        save_png(out / f"{stem}.png", x_te[i])
        save_mask(out / f"{stem}_object_mask.png", m_te[i])
        if wm_te[i]:
            save_mask(out / f"{stem}_watermark_mask.png", wm[i])
    return {
        "classes": list(SHAPE_CLASSES),
        "watermark_class": SHAPE_CLASSES[WATERMARK_CLASS],
        "watermark_rate_in_training": WATERMARK_RATE,
        "test_accuracy": acc,
        "test_accuracy_without_watermarks": acc_clean,
        "square_recall_without_watermark": recall_clean_sq,
        "non_squares_called_square_when_watermarked": flipped,
        "test_size": int(len(y_te)),
        "input": "3×64×64 RGB, values in [0, 1]",
    }


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    metrics = {"digits_cnn": build_digits(), "shapes_cnn": build_shapes(), "torch": torch.__version__}
    (HERE / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
