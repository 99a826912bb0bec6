"""LRP (epsilon_plus_flat): onnxlens vs Zennit on the same VGG-16-shaped and ResNet-18 modules,
batch 8, CPU, same threads, interleaved repetitions; printed as ratios.

    pip install -e ".[reference]"
    python benchmarks/relevance.py [--threads 2] [--repeats 3] [--size 224]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torchvision
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from onnxlens import Explainer
from timing import interleaved_medians, model_benchmark_args  # benchmarks/timing.py


def vgg16_shaped():
    net = torchvision.models.vgg16_bn(num_classes=1000)
    net.avgpool = torch.nn.AdaptiveAvgPool2d(1)  # no 25088-wide classifier: the conv stack is the cost
    net.classifier = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 1000))
    return net, SequentialMergeBatchNorm()


def main() -> None:
    args = model_benchmark_args(__doc__.splitlines()[0])
    torch.set_num_threads(args.threads)
    models = {"VGG-16-BN (shaped)": vgg16_shaped(), "ResNet-18": (torchvision.models.resnet18(), ResNetCanonizer())}
    print(f"epsilon_plus_flat, {args.size}×{args.size}, batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved runs (first round dropped)")
    print(f"{'model':<22}{'onnxlens s':>11}{'Zennit s':>10}{'Zennit/onnxlens':>17}")
    for name, (net, canonizer) in models.items():
        net.eval()
        x = torch.rand(args.batch, 3, args.size, args.size)
        path = Path(tempfile.mkdtemp()) / "m.onnx"
        torch.onnx.export(net, (x[:1],), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        explainer = Explainer(path, device="cpu", threads=args.threads)
        with torch.no_grad():  # Zennit is handed the classes that onnxlens finds itself (its default target)
            targets = net(x).argmax(dim=1).tolist()
        one_hot = torch.eye(1000)[targets]

        def zennit_run():
            with Gradient(model=net, composite=EpsilonPlusFlat(canonizers=[canonizer])) as attributor:
                attributor(x, lambda out: out * one_hot)

        m, r = interleaved_medians(lambda: explainer.explain(x.numpy(), "lrp"), zennit_run, args.repeats)
        print(f"{name:<22}{m:>11.2f}{r:>10.2f}{r / m:>17.2f}")


if __name__ == "__main__":
    main()
