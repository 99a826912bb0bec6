"""Fetch the third-party model suite: real deployed models shipped inside PyPI wheels (never a
model hub), unzipped into a cache folder that the ``test_third_party`` tier reads.

    python models/third_party.py [--cache DIR]

The cache is ``DIR``, else ``$ONNXLENS_THIRD_PARTY``, else ``~/.cache/onnxlens/third_party``;
files already there are kept. Wheels come from the package index pip is configured with
(``pip download --no-deps``, nothing installed). MTCNN's P-Net and R-Net ship as torch weights
in facenet-pytorch's wheel: they are exported here (TorchScript, opset 17; torch from the
``reference`` extra), R-Net with its face-probability head as the first output. The mtcnn
wheel's O-Net is a Keras model: it is built from the wheel's code and weights and converted with
tf2onnx in a throwaway virtual environment (TensorFlow, tf2onnx, joblib and lz4 from the package
index; about a minute, once), so TensorFlow never enters the environment the tests run in.
``suite.json`` lists every model with its kind and an input size it runs at.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

#: name → (wheel requirement, file inside the wheel, kind, (height, width) it runs at, exporter)
SUITE = {
    "ppocr_cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                  "classifier", (48, 192), "paddle2onnx, opset 11, weights in Constant nodes"),
    "ppocr_det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                  "detector", (320, 320), "paddle2onnx, opset 12"),
    "ppocr_rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                  "recognizer", (48, 320), "paddle2onnx, opset 12"),
    "ddddocr_common": ("ddddocr==1.6.1", "ddddocr/common.onnx", "recognizer", (64, 192), "torch 1.9, LSTM"),
    "ddddocr_common_old": ("ddddocr==1.6.1", "ddddocr/common_old.onnx", "recognizer", (64, 192),
                           "onnxruntime dynamic int8 quantization"),
    "nudenet_320n": ("nudenet==3.4.2", "nudenet/320n.onnx", "detector", (320, 320), "YOLOv8n, torch 2.3"),
    "mtcnn_rnet": ("facenet-pytorch==2.6.0", "facenet_pytorch/data/rnet.pt", "classifier", (24, 24),
                   "exported here from the wheel's weights"),
    "mtcnn_pnet": ("facenet-pytorch==2.6.0", "facenet_pytorch/data/pnet.pt", "detector", (48, 48),
                   "exported here from the wheel's weights"),
    "mtcnn_onet_keras": ("mtcnn==1.0.0", "mtcnn/assets/weights/onet.lz4", "classifier", (48, 48),
                         "Keras 3 on TensorFlow, converted here with tf2onnx (opset 13, NHWC)"),
}


def default_cache() -> Path:
    return Path(os.environ.get("ONNXLENS_THIRD_PARTY") or Path.home() / ".cache" / "onnxlens" / "third_party")


def download_wheel(requirement: str, folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(folder),
                    requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    return next(p for p in folder.glob("*.whl") if p.name.lower().startswith(name))


def export_mtcnn(weights: Path, which: str, out: Path) -> None:
    """MTCNN's P-Net or R-Net (Zhang et al., 2016, arXiv:1604.02878) as facenet-pytorch defines
    them, with the wheel's weights, exported to ONNX."""
    import torch
    from torch import nn

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))))
            return torch.softmax(self.conv4_1(x), dim=1), self.conv4_2(x)

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
            x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
            return torch.softmax(self.dense5_1(x), dim=1), self.dense5_2(x)

    net = (PNet if which == "pnet" else RNet)()
    net.load_state_dict(torch.load(weights, map_location="cpu"))
    size = 24 if which == "rnet" else 48
    axes = {"image": {0: "batch"}} if which == "rnet" else {"image": {0: "batch", 2: "height", 3: "width"}}
    torch.onnx.export(net.eval(), (torch.rand(1, 3, size, size),), str(out), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["face_probability", "box"],
                      dynamic_axes={**axes, "face_probability": {0: "batch"}, "box": {0: "batch"}})


def export_keras_onet(wheel: Path, out: Path) -> None:
    """MTCNN's O-Net (Zhang et al., 2016) as the mtcnn wheel defines it in Keras, with the wheel's
    weights, converted with tf2onnx — the face-probability head first, then box and landmarks."""
    import joblib
    import tensorflow as tf
    import tf2onnx

    with tempfile.TemporaryDirectory() as unpacked:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
        sys.path.insert(0, unpacked)
        try:
            from mtcnn.network.onet import ONet
        finally:
            sys.path.remove(unpacked)
        net = ONet()
        net.build()
        net.set_weights(joblib.load(Path(unpacked) / "mtcnn" / "assets" / "weights" / "onet.lz4"))
    image = tf.keras.Input((48, 48, 3), name="image")
    box, landmarks, face = net(image)
    heads = [tf.keras.layers.Identity(name=n)(t) for n, t in (("face", face), ("box", box), ("landmarks", landmarks))]
    spec = (tf.TensorSpec((None, 48, 48, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(tf.keras.Model(image, heads), input_signature=spec, opset=13)
    out.write_bytes(proto.SerializeToString())


#: what the Keras conversion needs, installed into a throwaway environment
KERAS_ENV = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0", "joblib", "lz4")


def convert_in_keras_env(wheel: Path, out: Path, tmp: Path) -> None:
    """Run :func:`export_keras_onet` with this script in a fresh virtual environment holding
    :data:`KERAS_ENV`, deleted afterwards."""
    env = tmp / "keras-env"
    print(f"installing {', '.join(KERAS_ENV)} into a throwaway environment", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *KERAS_ENV], check=True)
    quiet = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}  # TensorFlow's notices
    subprocess.run([str(python), __file__, "--keras-onet", str(wheel), str(out)], check=True, env=quiet)


def fetch(cache: Path) -> dict:
    cache.mkdir(parents=True, exist_ok=True)
    manifest = {}
    with tempfile.TemporaryDirectory() as tmp:
        wheels: dict[str, Path] = {}
        for name, (requirement, member, kind, size, note) in SUITE.items():
            target = cache / f"{name}.onnx"
            if not target.exists():
                if requirement not in wheels:
                    print(f"downloading {requirement}", flush=True)
                    wheels[requirement] = download_wheel(requirement, Path(tmp))
                with zipfile.ZipFile(wheels[requirement]) as wheel:
                    data = wheel.read(member)
                if member.endswith(".pt"):
                    weights = Path(tmp) / Path(member).name
                    weights.write_bytes(data)
                    export_mtcnn(weights, Path(member).stem, target)
                elif member.endswith(".lz4"):
                    convert_in_keras_env(wheels[requirement], target, Path(tmp))
                else:
                    target.write_bytes(data)
            manifest[name] = {"file": target.name, "kind": kind, "size": list(size),
                              "source": f"{requirement}: {member}", "note": note}
            print(f"{name:20s} {kind:10s} {target.stat().st_size / 1e6:6.1f} MB  ({requirement})", flush=True)
    (cache / "suite.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="folder for the models (see above)")
    parser.add_argument("--keras-onet", nargs=2, type=Path, metavar=("WHEEL", "OUT"),
                        help="(inside the Keras environment) convert the mtcnn wheel's O-Net to OUT")
    args = parser.parse_args()
    if args.keras_onet:
        export_keras_onet(*args.keras_onet)
        return
    fetch(args.cache or default_cache())


if __name__ == "__main__":
    main()
