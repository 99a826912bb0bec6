"""GPU check: CUDA vs CPU agreement of gradient, LRP and Grad-CAM on the shipped models and a
ResNet-50-shaped model, and GPU throughput (gradient/forward, IG and LRP images/s) beside
torch autograd, Captum and Zennit on the same module.

    pip install -e ".[reference]"
    python benchmarks/gpu_check.py                 # under 5 minutes on one GPU

Without a usable CUDA provider it says so in one line, skips the agreement part and runs the
throughput part on the CPU at a small size (a smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

try:  # before onnxruntime: a CUDA build of torch loads the CUDA libraries both use
    import torch
except ImportError:
    torch = None
import numpy as np
import onnx
import onnxruntime as ort

from onnxlens import Explainer, import_model
from onnxlens.graph_ops.backward import gradient_model, prepare_for_differentiation
from onnxlens.graph_ops.expose import expose
from onnxlens.runtime import SessionConfig, create_session, cuda_available
from timing import interleaved_medians, timed  # benchmarks/timing.py

MODELS = Path(__file__).resolve().parent.parent / "models"
METHODS = ("gradient", "lrp", "gradcam")
TOLERANCE = 1e-5  #: relative L2 between CUDA (TF32 off) and CPU results


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30))


def result_of(explanation, method: str) -> np.ndarray:
    """What is compared: the attribution, or for a CAM the map itself."""
    return explanation.heatmap if method == "gradcam" else explanation.attribution


def agreement(path, x: np.ndarray, devices=("cpu", "cuda"), tf32: bool = False,
              methods=METHODS) -> dict[str, float]:
    """Method → relative L2 of ``devices[1]``'s result from ``devices[0]``'s, same targets."""
    reference = Explainer(path, device=devices[0])
    other = Explainer(path, device=devices[1], tf32=tf32)
    target = reference.explain(x, "gradient").target
    return {m: relative(result_of(other.explain(x, m, target=target), m),
                        result_of(reference.explain(x, m, target=target), m)) for m in methods}


def vjp_graph(path) -> tuple[onnx.ModelProto, str, str, int]:
    """The compiled gradient graph of the model at ``path``: (graph, image input, seed input,
    classes)."""
    imported = import_model(path)
    grad = gradient_model(prepare_for_differentiation(imported.model), imported.spec)
    classes = imported.spec.output().shape[-1]
    return grad.vjp.model, imported.spec.image_input.name, grad.vjp.seeds[grad.score], classes


def first_divergence(path, x: np.ndarray, device: str = "cuda") -> str:
    """Run every typed tensor of the gradient graph on the CPU and on CUDA; name the first
    node (graph order) whose output differs beyond :data:`TOLERANCE`, and its inputs' state."""
    model, image, seed_name, classes = vjp_graph(path)
    model = onnx.shape_inference.infer_shapes(model)
    typed = {vi.name for vi in (*model.graph.value_info, *model.graph.output)
             if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    names = [o for node in model.graph.node for o in node.output if o in typed]
    exposed = expose(model, names)
    seed = np.zeros((len(x), classes), np.float32)
    seed[:, 0] = 1
    feeds = {image: x, seed_name: seed}
    cpu = create_session(exposed, SessionConfig(device="cpu")).run(feeds)
    session = create_session(exposed, SessionConfig(device=device))
    gpu, again = session.run(feeds), session.run(feeds)
    repeat = max(relative(again[n], gpu[n]) for n in gpu)
    print(f"  {device} run against itself: largest relative difference {repeat:.1e}")
    for node in model.graph.node:
        for out in node.output:
            if out in cpu and relative(gpu[out], cpu[out]) > TOLERANCE:
                inputs = ", ".join(f"{i}: {relative(gpu[i], cpu[i]):.1e}" if i in cpu else f"{i}: (not compared)"
                                   for i in node.input)
                return (f"{node.op_type} node {node.name!r} output {out!r} differs by {relative(gpu[out], cpu[out]):.1e} "
                        f"(inputs: {inputs})")
    return "no tensor differs beyond the tolerance"


def cuda_profile(path, batch: int, size: int, runs: int = 5, provider: str = "CUDAExecutionProvider") -> None:
    """ONNX Runtime's profile of the gradient graph on CUDA: time per op type and provider."""
    import collections
    import json

    model, image, seed_name, classes = vjp_graph(path)
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "grad")
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=[(provider, {"use_tf32": "0"} if "CUDA" in provider else {}),
                                              "CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    seed = np.zeros((batch, classes), np.float32)
    seed[:, 0] = 1
    start = time.perf_counter()
    for _ in range(runs + 1):
        session.run(None, {image: x, seed_name: seed})
    wall = (time.perf_counter() - start) / (runs + 1) * 1e3
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op, placed = collections.Counter(), collections.Counter()
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "op_name" in args and event["name"].endswith("_kernel_time"):
            by_op[(args["op_name"], args.get("provider", "?"))] += event["dur"] / 1e3 / (runs + 1)
            placed[args.get("provider", "?")] += 1
    total = sum(by_op.values())
    print(f"  gradient graph, batch {batch}: {wall:.1f} ms a run (profiled), {total:.1f} ms of it in kernels; "
          "nodes by provider: "
          + ", ".join(f"{p} {n // (runs + 1)}" for p, n in placed.items()))
    for (op, provider), ms in by_op.most_common(15):
        print(f"    {op:<22}{provider:<26}{ms:>9.2f} ms {100 * ms / total:>5.1f} %")


def shipped_models() -> list[tuple[str, Path, np.ndarray]]:
    found = []
    for name, folder in (("digits_cnn", "digits"), ("shapes_cnn", "shapes")):
        path, samples = MODELS / f"{name}.onnx", MODELS / "samples" / folder / "test.npz"
        if path.exists() and samples.exists():
            found.append((name, path, np.load(samples)["x"][:8].astype(np.float32)))
    return found


def resnet50(size: int, folder: Path):
    """A torchvision ResNet-50 (random weights, seeded) and its ONNX export, or None without torch."""
    if torch is None:
        return None
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval()
    path = folder / "resnet50.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return net, path


def gpu_name() -> str:
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False).stdout.strip()
        if out:
            return out.splitlines()[0]
    return "none found"


def torch_runs(net, x: np.ndarray, steps: int):
    """(gradient, IG, LRP) callables on torch's GPU: autograd of the arg-max logit, Captum's
    IntegratedGradients (Gauss–Legendre, one batch of rows per internal step) and Zennit's
    EpsilonPlusFlat with the ResNet canonizer; None for a library that is not installed."""
    device = torch.device("cuda")
    net = net.to(device)
    xt = torch.from_numpy(x).to(device)

    def synchronized(fn):
        def run():
            fn()
            torch.cuda.synchronize()
        return run

    def gradient():
        inp = xt.clone().requires_grad_(True)
        out = net(inp)
        out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
        inp.grad.cpu()

    targets = net(xt).argmax(1).tolist()
    try:
        from captum.attr import IntegratedGradients

        def ig():
            IntegratedGradients(net).attribute(xt, target=targets, n_steps=steps,
                                               internal_batch_size=len(x)).cpu()
    except ImportError:
        ig = None
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer
        one_hot = torch.eye(1000, device=device)[targets]

        def lrp():
            with Gradient(model=net, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
                attributor(xt, lambda out: out * one_hot)[1].cpu()
    except ImportError:
        lrp = None
    return tuple(None if fn is None else synchronized(fn) for fn in (gradient, ig, lrp))


def throughput(explainer: Explainer, path: Path, net, x: np.ndarray, steps: int, repeats: int,
               device: str, with_torch: bool) -> None:
    """One table row per measure at this batch: ours (public API, default target), the bare
    ORT forward pass, and torch's where it runs on the GPU."""
    forward_session = create_session(onnx.load(str(path)), SessionConfig(device=device))
    feeds = {forward_session.input_names[0]: x}
    theirs = torch_runs(net, x, steps) if with_torch else (None, None, None)
    rows = [
        ("gradient", lambda: explainer.explain(x, "gradient"), theirs[0]),
        (f"integrated_gradients ({steps} steps)", lambda: explainer.explain(x, "integrated_gradients", steps=steps),
         theirs[1]),
        ("lrp (epsilon_plus_flat)", lambda: explainer.explain(x, "lrp"), theirs[2]),
    ]
    forward = interleaved_medians(lambda: forward_session.run(feeds), lambda: None, repeats)[0]
    print(f"  batch {len(x)}: ORT forward {forward * 1e3:.1f} ms ({len(x) / forward:.0f} images/s)")
    for name, ours, reference in rows:
        mine, ref = interleaved_medians(ours, reference or (lambda: None), repeats)
        line = f"    {name:<34}{mine * 1e3:>10.1f} ms {len(x) / mine:>9.1f} images/s"
        if name == "gradient":
            line += f"  ({mine / forward:.2f}× the forward)"
        if reference is not None:
            line += f" | torch {ref * 1e3:.1f} ms, {len(x) / ref:.1f} images/s, torch/onnxlens {ref / mine:.2f}"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=None,
                        help="batch sizes for throughput (default 32,128 on CUDA, 2 on the CPU)")
    parser.add_argument("--size", type=int, default=None, help="ResNet-50 input side (default 224; 64 on the CPU)")
    parser.add_argument("--steps", type=int, default=None, help="IG steps (default 64; 4 on the CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--diagnose", action="store_true",
                        help="instead: where CUDA and CPU gradients part, and the CUDA profile by op")
    args = parser.parse_args()
    start = time.perf_counter()
    cuda = cuda_available()
    print(f"onnxruntime {ort.__version__}, providers {', '.join(ort.get_available_providers())}; GPU: {gpu_name()}")
    torch_cuda = torch is not None and torch.cuda.is_available()
    print(f"torch: {'not installed' if torch is None else f'{torch.__version__}, CUDA ' + str(torch_cuda)}")
    if torch_cuda:  # the references in float32, as ours with TF32 off
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("CUDA: not available (no GPU or no onnxruntime-gpu CUDA provider) — agreement skipped; "
              "throughput runs on the CPU at a small size, a smoke run, not a measurement")
    batches = args.batches or ([32, 128] if cuda else [2])
    size = args.size or (224 if cuda else 64)
    steps = args.steps or (64 if cuda else 4)

    folder = Path(tempfile.mkdtemp())
    built = resnet50(size, folder)
    if built is None:
        print("ResNet-50: skipped (torch is not installed)")
    models = shipped_models()
    if built is not None:
        x50 = np.random.default_rng(0).random((4, 3, size, size), dtype=np.float32)
        models.append(("resnet50", built[1], x50))

    if args.diagnose:
        for name, path, x in models if cuda else ():
            print(f"{name}: {first_divergence(path, x[:2])}", flush=True)
        if cuda and built is not None:
            cuda_profile(built[1], batches[0], size)
        return

    if cuda:
        print(f"\nCUDA vs CPU, relative L2 (TF32 off; pass ≤ {TOLERANCE:g}):")
    for name, path, x in models if cuda else ():
        t0 = time.perf_counter()
        try:
            found = agreement(path, x)
        except Exception as exc:  # noqa: BLE001 — a failing model is reported, the check goes on
            print(f"  {name:<12} failed: {type(exc).__name__}: {exc}")
            continue
        verdict = "pass" if max(found.values()) <= TOLERANCE else "FAIL"
        shown = "  ".join(f"{m} {v:.1e}" for m, v in found.items())
        print(f"  {name:<12} {shown}  {verdict}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    if cuda and built is not None:
        tf32 = agreement(built[1], x50, tf32=True, methods=("gradient",))["gradient"]
        print(f"  resnet50 gradient with TF32 on: {tf32:.1e} (why it is off by default)")

    if built is None:
        print(f"\nthroughput: skipped (no ResNet-50 without torch); {time.perf_counter() - start:.0f} s in all")
        return
    net, path = built
    with_torch = torch_cuda and cuda
    if cuda and not torch_cuda:
        print("torch does not see the GPU: torch/Captum/Zennit columns skipped")
    print(f"\nthroughput on {device}, ResNet-50 {size}×{size}, median of {args.repeats} interleaved runs "
          "(first dropped); ours: Explainer.explain as users call it (default target)")
    explainer = Explainer(path, device=device)
    rng = np.random.default_rng(1)
    first = timed(lambda: explainer.explain(rng.random((batches[0], 3, size, size), dtype=np.float32), "gradient"))
    print(f"  first gradient call (compile, session, device warm-up): {first:.2f} s")
    for batch in batches:
        x = rng.random((batch, 3, size, size), dtype=np.float32)
        try:
            throughput(explainer, path, net, x, steps, args.repeats, device, with_torch)
        except Exception as exc:  # noqa: BLE001
            print(f"  batch {batch} failed: {type(exc).__name__}: {exc}")
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    sys.exit(main())
