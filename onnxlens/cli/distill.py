"""``onnxlens distill``: the model distilled into a soft decision tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxlens.cli.common import ImageOptions, ModelArgument, load_inputs, with_image_options


@with_image_options
def distill(
    model: ModelArgument,
    data: Annotated[Path, typer.Option(help="Inputs to distill on: a folder of images or .npy/.npz shaped for the model.")],
    depth: Annotated[int, typer.Option(help="Depth of the soft decision tree (2^depth leaves).")] = 5,
    heldout: Annotated[float, typer.Option(help="Share of the inputs held out to measure fidelity.")] = 0.25,
    temperature: Annotated[float, typer.Option(help="Softmax temperature of the model's targets.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split and the initial weights.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the tree (.npz: weights, biases, leaves, fidelity).")] = None,
    filters: Annotated[Optional[Path], typer.Option(help="Write the inner nodes' filters as one PNG grid.")] = None,
    input_key: Annotated[Optional[str], typer.Option(help="Array name inside an .npz.")] = None,
    *,
    images: ImageOptions,
) -> None:
    """Distill the model into a soft decision tree (Frosst & Hinton, 2017) and report its
    fidelity — how often it predicts the model's class — on held-out inputs."""
    import numpy as np
    from PIL import Image

    from onnxlens.files import npz_bytes, write_atomic
    from onnxlens.methods.soft_tree import distill as run_distill
    from onnxlens.report.figures import tile_grid

    explainer, spec, prep = images.open(model)
    x = explainer.engine.check_input(load_inputs(data, input_key, spec, prep))
    tree, report = run_distill(explainer.engine, x, depth, heldout=heldout, temperature=temperature, seed=seed)
    typer.echo(f"soft tree of depth {depth} ({2 ** depth} leaves) on {report['train_inputs']} inputs: fidelity "
               f"{report['fidelity_train']:.3f} on them, {report['fidelity_heldout']:.3f} on {report['heldout_inputs']} held out")
    if out is not None:
        write_atomic(out, npz_bytes(weights=tree.weights, biases=tree.biases, leaves=tree.leaves, mean=tree.mean,
                                    scale=tree.scale, report=np.asarray(json.dumps(report))))
        typer.echo(f"wrote {out}")
    if filters is not None:
        maps = tree.filters(x.shape[1:])
        if spec.layout == "NHWC":
            maps = np.moveaxis(maps, -1, 1)
        Image.fromarray(tile_grid(maps)).save(filters)
        typer.echo(f"wrote {filters}")
