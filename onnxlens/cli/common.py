"""What the commands share: the image options, reading arrays and images into a batch, the
``key=value`` parameters, and printing untrusted text to a terminal."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from onnxlens.errors import OnnxLensError

ModelArgument = Annotated[Path, typer.Argument(help="Path to an .onnx file.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]


@dataclass(frozen=True)
class ImageOptions:
    """How image files become inputs, and where the model runs."""

    mean: Optional[str]
    std: Optional[str]
    channel_order: str
    value_range: str
    layout: Optional[str]
    device: str
    memory_budget: Optional[str]

    def open(self, model: Path):
        """The model's Explainer, its image input and the preprocessing these options ask for."""
        from onnxlens.methods import Explainer
        from onnxlens.pipelines.images import Preprocessing

        explainer = Explainer(model, device=self.device, layout=self.layout.upper() if self.layout else None,
                              memory_budget=self.memory_budget)
        preprocessing = Preprocessing(floats(self.mean), floats(self.std), self.channel_order, self.value_range)
        return explainer, explainer.model.spec.image_input, preprocessing


_IMAGE_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, annotation, default in (
        ("mean", Annotated[Optional[str], typer.Option(help="Images: per-channel mean, e.g. 0.485,0.456,0.406.")], None),
        ("std", Annotated[Optional[str], typer.Option(help="Images: per-channel std.")], None),
        ("channel_order", Annotated[str, typer.Option(help="Images: rgb or bgr.")], "rgb"),
        ("value_range", Annotated[str, typer.Option(help="Images: 0-1 or 0-255 before mean/std.")], "0-1"),
        ("layout", Annotated[Optional[str], typer.Option(help="Force the input layout: NCHW or NHWC.")], None),
        ("device", DeviceOption, "auto"),
        ("memory_budget", Annotated[Optional[str], typer.Option(
            help="Most memory one session run may hold, e.g. 2G; sizes every run's rows "
                 "(default: a quarter of the available memory).")], None),
    )]


def with_image_options(command):
    """The command with the image options added to its command-line signature; it receives
    them as one ``images: ImageOptions`` argument."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "images"]

    @functools.wraps(command)
    def run(**kwargs):
        images = ImageOptions(**{p.name: kwargs.pop(p.name) for p in _IMAGE_OPTIONS})
        return command(images=images, **kwargs)

    run.__signature__ = signature.replace(parameters=own + _IMAGE_OPTIONS)
    run.__annotations__ = {p.name: p.annotation for p in own + _IMAGE_OPTIONS}
    return run


def names(text: Optional[str]) -> Optional[list[str]]:
    """Comma-separated names as a list (None stays None)."""
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``key=value`` options as a dict."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OnnxLensError(f"--param takes key=value, got {pair!r}")
        params[key.strip()] = value.strip()
    return params


def params_by_name(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``--param NAME.key=value`` options as name → {key: value}."""
    grouped: dict[str, dict] = {}
    for key, value in parse_params(pairs).items():
        name, dot, field = key.partition(".")
        if not dot or not field:
            raise OnnxLensError(f"--param takes NAME.key=value (a method or metric name), got {key!r}")
        grouped.setdefault(name, {})[field] = value
    return grouped


def floats(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise OnnxLensError(f"expected comma-separated numbers, got {text!r}") from None


def json_out(out: Path) -> Path:
    """``out``, refused unless it names a .json file."""
    if out.suffix.lower() != ".json":
        raise OnnxLensError(f"--out must end in .json, got {str(out)!r}")
    return out


def load_array(path: Path, key: Optional[str], what: str):
    """An array from a .npy file, or from a .npz by ``key`` (default: its only array, or ``x``)."""
    import numpy as np

    if not path.exists():
        raise OnnxLensError(f"{what} {str(path)!r} does not exist")
    cannot = f"cannot read {str(path)!r} as .npy/.npz"
    overclaims = f"{cannot}: its header claims more data than the file holds"
    try:
        # A .npy is mapped first, so a header claiming more data than the file holds is
        # refused before anything is allocated; MemoryError: the same claim inside a .npz.
        data = np.load(path, allow_pickle=False, mmap_mode="r")
        if not hasattr(data, "files"):
            return np.array(data)
        with data:
            names_ = list(data.files)
            chosen = key or (names_[0] if len(names_) == 1 else "x" if what == "input" and "x" in names_ else None)
            if chosen not in names_:
                raise OnnxLensError(f"{str(path)!r} holds {', '.join(names_)}; name the {what} array with "
                                    f"--{'input' if what == 'input' else 'masks'}-key")
            return data[chosen]
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
        if "mmap length is greater than file size" in str(exc):
            raise OnnxLensError(overclaims) from None
        raise OnnxLensError(f"{cannot}: {one_line(str(exc)) or 'the file is empty'}") from None
    except MemoryError:
        raise OnnxLensError(overclaims) from None


def load_inputs(path: Path, key: Optional[str], spec, preprocessing):
    """A batch from a .npy/.npz array, an image file, or a folder of images."""
    import numpy as np

    from onnxlens.pipelines.images import list_images, load_image

    if path.is_dir():
        images = list_images(path)
        if not images:
            raise OnnxLensError(f"no images found in {str(path)!r}")
        return np.stack([load_image(p, spec, preprocessing) for p in images])
    if path.suffix.lower() in (".npy", ".npz"):
        return load_array(path, key, "input")
    if not path.exists():
        raise OnnxLensError(f"input {str(path)!r} does not exist")
    return load_image(path, spec, preprocessing)[None]


def safe(value) -> Text:
    """Untrusted model text for the terminal: no markup, control characters escaped."""
    s = "" if value is None else str(value)
    return Text("".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s))


def one_line(message: str) -> str:
    """``message`` on one line of printable characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in message).split())


def progress_bar(label: str):
    """A transient progress bar on stderr: ``description · done/total · elapsed``."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)
