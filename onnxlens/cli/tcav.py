"""``onnxlens tcav``: is a concept significant for a class at a layer?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from onnxlens.cli.common import ImageOptions, ModelArgument, load_inputs, one_line, with_image_options


@with_image_options
def tcav(
    model: ModelArgument,
    concept: Annotated[Path, typer.Option(help="The concept's example images: a folder, an image or .npy/.npz.")],
    random: Annotated[list[Path], typer.Option(help="Random images: a folder (repeatable: one random set each).")],
    layer: Annotated[str, typer.Option(help="The tensor whose activations hold the concept (see inspect --layers).")],
    inputs: Annotated[Path, typer.Option("--inputs", help="Images of the class to test: a folder, an image or .npy/.npz.")],
    class_: Annotated[Optional[int], typer.Option("--class", help="Class to test (default: the one most predicted on --inputs).")] = None,
    runs: Annotated[int, typer.Option(help="Concept CAVs (one per random set) and random CAVs for the t-test.")] = 10,
    alpha: Annotated[float, typer.Option(help="Significance level of the two-sided t-test.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the random sets drawn from the random images.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the result as JSON here.")] = None,
    *,
    images: ImageOptions,
) -> None:
    """TCAV (Kim et al., 2018): is a concept, given by example images, significant for a class at
    a layer? Prints the TCAV score, the random directions' score and the t-test's p-value."""
    from onnxlens.files import write_json
    from onnxlens.methods.tcav import tcav as run_tcav

    explainer, spec, prep = images.open(model)
    concept_x = load_inputs(concept, None, spec, prep)
    random_sets = [load_inputs(r, None, spec, prep) for r in random]
    result = run_tcav(explainer.engine, load_inputs(inputs, None, spec, prep), concept_x, random_sets, layer, class_, runs=runs, alpha=alpha, seed=seed)
    verdict = "significant" if result.significant else "not significant"
    typer.echo(f"TCAV of {one_line(str(concept))} for class {result.target} at {one_line(layer)}: "
               f"{result.score:.3f} ± {result.scores.std():.3f} (random directions {result.random_scores.mean():.3f} ± "
               f"{result.random_scores.std():.3f}); p = {result.p_value:.3g}: {verdict} at α = {alpha}")
    if out is not None:
        write_json(out, {"model_file": model.name, "concept": str(concept), **result.to_dict()})
        typer.echo(f"wrote {out}")
