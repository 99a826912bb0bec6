"""Integrated Gradients (64 steps), Grad-CAM and occlusion: onnxlens vs Captum on the same
ResNet-18, batch 8, CPU, same thread count, interleaved repetitions; printed as ratios. onnxlens
runs as users call it, with the default target (the predicted class); Captum is handed those
classes, computed beforehand.

    pip install -e ".[reference]"
    python benchmarks/methods.py [--threads 2] [--repeats 3] [--size 224]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torchvision
from captum.attr import IntegratedGradients, LayerGradCam, Occlusion

from onnxlens import Explainer
from timing import interleaved_medians, model_benchmark_args  # benchmarks/timing.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from torch_models import calibrated  # noqa: E402  (the tests' BatchNorm calibration)


def main() -> None:
    args = model_benchmark_args(__doc__.splitlines()[0])
    torch.set_num_threads(args.threads)
    # BatchNorm statistics of a random batch: with them the network has biases, so it is not
    # positively homogeneous and Integrated Gradients' path integral is not trivially exact
    net = calibrated(torchvision.models.resnet18(), torch.rand(16, 3, args.size, args.size))
    path = Path(tempfile.mkdtemp()) / "resnet18.onnx"
    x = torch.rand(args.batch, 3, args.size, args.size)
    torch.onnx.export(net, (x[:1],), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    explainer = Explainer(path, device="cpu", threads=args.threads)
    with torch.no_grad():
        targets = net(x).argmax(dim=1).tolist()
    xn = x.numpy()
    window = args.size // 4
    runs = {
        "integrated_gradients (64 steps)": (
            lambda: explainer.explain(xn, "integrated_gradients", steps=64),
            lambda: IntegratedGradients(net).attribute(x, target=targets, n_steps=64, internal_batch_size=64),
        ),
        "gradcam (layer4)": (
            lambda: explainer.explain(xn, "gradcam"),
            lambda: LayerGradCam(net, net.layer4[-1]).attribute(x, target=targets, relu_attributions=True),
        ),
        # window a quarter of the side, half-window stride: 7×7 positions; Captum batched 16 at a time
        f"occlusion ({window}/{window // 2})": (
            lambda: explainer.explain(xn, "occlusion", window=window, stride=window // 2),
            lambda: Occlusion(net).attribute(x, sliding_window_shapes=(3, window, window),
                                             strides=(3, window // 2, window // 2), target=targets,
                                             perturbations_per_eval=16),
        ),
    }
    print(f"ResNet-18 {args.size}×{args.size}, batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved runs (first round dropped)")
    print(f"{'method':<34}{'onnxlens s':>11}{'Captum s':>10}{'Captum/onnxlens':>17}")
    for name, (ours, theirs) in runs.items():
        m, r = interleaved_medians(ours, theirs, args.repeats)
        print(f"{name:<34}{m:>11.2f}{r:>10.2f}{r / m:>17.2f}")
    # Integrated Gradients to a stated accuracy vs Captum's default 50 steps, with both gaps
    with torch.no_grad():
        change = (net(x) - net(torch.zeros_like(x)))[torch.arange(len(x)), targets].abs()
    _, delta = IntegratedGradients(net).attribute(x, target=targets, n_steps=50, internal_batch_size=64,
                                                  return_convergence_delta=True)
    captum_gap = float((delta.abs() / change).max())
    print(f"Integrated Gradients to a completeness gap: Captum at 50 steps reaches {captum_gap:.4f} (largest row)")
    print(f"{'onnxlens rule, tolerance':<34}{'onnxlens s':>11}{'Captum s':>10}{'Captum/onnxlens':>17}"
          f"{'largest gap':>13}{'steps per row':>16}")
    for rule in ("riemann_middle", "gausslegendre"):
        for tolerance in (0.01, max(round(captum_gap, 4), 1e-4)):
            e = explainer.explain(xn, "integrated_gradients", tolerance=tolerance, quadrature_rule=rule)
            m, r = interleaved_medians(
                lambda: explainer.explain(xn, "integrated_gradients", tolerance=tolerance, quadrature_rule=rule),
                lambda: IntegratedGradients(net).attribute(x, target=targets, n_steps=50, internal_batch_size=64),
                args.repeats)
            steps = e.diagnostics["steps"]
            print(f"{rule + ', ' + str(tolerance):<34}{m:>11.2f}{r:>10.2f}{r / m:>17.2f}"
                  f"{e.diagnostics['relative_gap'].max():>13.4f}{f'{steps.min()}–{steps.max()}':>16}")


if __name__ == "__main__":
    main()
