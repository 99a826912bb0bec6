"""``onnxlens inspect``: load, validate and describe a model."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from onnxlens.cli.common import ModelArgument, safe


def inspect(
    model: ModelArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print a stable JSON document.")] = False,
    layout: Annotated[Optional[str], typer.Option(help="Force the input layout: NCHW or NHWC.")] = None,
    max_size: Annotated[
        Optional[int], typer.Option(help="Refuse models larger than this many bytes (with external data).")
    ] = None,
    layers: Annotated[bool, typer.Option("--layers", help="Also list candidate layers for CAM-style methods.")] = False,
) -> None:
    """Load, validate and describe a model: inputs and layout, outputs, ops, parameters."""
    from onnxlens.runtime.model_import import import_model

    imported = import_model(model, layout=layout.upper() if layout else None, max_bytes=max_size)
    info = imported.describe()
    from onnxlens.graph_ops.output_kinds import output_targets

    for output in info["outputs"]:
        output["targets"] = output_targets(output["shape"])
    if layers:
        from onnxlens.runtime.engine import Engine
        from onnxlens.runtime.session import SessionConfig

        from onnxlens.methods.feature_maps import default_layer

        engine = Engine(imported, SessionConfig(device="cpu"))
        candidates = engine.layers()
        default = default_layer(engine) if candidates else None
        info["layers"] = [{"name": c.name, "shape": list(c.shape), "layout": str(c.layout),
                           "default": c.name == default} for c in candidates]
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True, ensure_ascii=True))
    else:
        print_description(info, Console(width=max(100, Console().width), highlight=False))


def _dims(shape) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def print_description(info: dict, console: Console) -> None:
    """The model card ``info`` (``ImportedModel.describe``) as tables."""
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    opsets = ", ".join(f"{d} {v}" for d, v in info["opsets"].items())
    rows = [
        ("file", info["file"]),
        ("size", f"{info['size_bytes']:,} bytes" + (f" (external data: {', '.join(info['external_data'])})"
                                                    if info["external_data"] else "")),
        ("sha256", info["sha256"]),
        ("producer", f"{info['producer']['name']} {info['producer']['version']}".strip() or "unknown"),
        ("IR version", str(info["ir_version"])),
        ("opset", f"{opsets} (canonical {info['canonical_opset']})"),
        ("parameters", f"{info['parameter_count']:,} ({info['parameter_bytes']:,} bytes)"),
        ("nodes", str(info["node_count"])),
    ]
    if info["doc_string"]:
        doc = info["doc_string"]
        rows.append(("doc_string", doc if len(doc) <= 200 else doc[:200] + "…"))
    rows += [(f"metadata {k}", v) for k, v in info["metadata"].items()]
    rows += [("canonicalized", note) for note in info["canonicalization"]]
    rows += [("shape fix", fix) for fix in info["shape_fixes"]]
    rows.append(("verified", info["verification"]))
    rows.append(("batch", f"{info['batch']['accepted']} ({info['batch']['note']})"))
    quant = info["quantization"]
    if quant:
        ops = ", ".join(f"{op}×{n}" for op, n in quant["ops"].items())
        rows.append(("quantization", f"{quant['format']}, {'/'.join(quant['types'])}, "
                                     f"{' and '.join(quant['granularity'])}; ops: {ops}"))
    backward = info["backward"]
    if backward["supported"]:
        rows.append(("backward", "supported (gradient methods available)"))
    else:
        missing = "; ".join(f"{op} ({', '.join(nodes[:3])}{', …' if len(nodes) > 3 else ''})"
                            for op, nodes in backward["missing"].items())
        rows.append(("backward", f"missing: {missing or backward['reason']} — forward-only methods still apply"))
    for key, value in rows:
        head.add_row(safe(key), safe(value))
    console.print(head)

    inputs = Table(title="inputs", title_justify="left")
    for col in ("name", "role", "dtype", "shape", "layout", "evidence"):
        inputs.add_column(col)
    for i in info["inputs"]:
        inputs.add_row(safe(i["name"]), i["role"], i["dtype"], safe(_dims(i["shape"])),
                       i.get("layout", ""), safe(i.get("layout_evidence", "")))
    console.print(inputs)

    outputs = Table(title="outputs", title_justify="left")
    for col in ("name", "dtype", "shape", "trailing activation", "logits tensor", "--target (default)"):
        outputs.add_column(col)
    for o in info["outputs"]:
        targets = o.get("targets")
        outputs.add_row(safe(o["name"]), o["dtype"], safe(_dims(o["shape"])), o["activation"] or "none",
                        safe(o["logits"] or ""),
                        f"{targets['kind']}: {targets['specs']} ({targets['default']})" if targets else "")
    console.print(outputs)

    if "layers" in info:
        table = Table(title="layers (for --layer)", title_justify="left")
        for col in ("tensor", "shape", "layout", ""):
            table.add_column(col)
        for layer in info["layers"]:
            table.add_row(safe(layer["name"]), safe(_dims(layer["shape"])), layer["layout"],
                          "default" if layer["default"] else "")
        console.print(table)

    ops = Table(title="op types", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in info["op_histogram"].items():
        ops.add_row(safe(op), str(n))
    console.print(ops)
