"""The audit configuration: one file (TOML, YAML or JSON), validated with clear messages."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from onnxlens.errors import OnnxLensError, quote


class ConfigError(OnnxLensError):
    """An audit configuration that cannot be read or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreprocessingConfig(_Strict):
    """How image files become model inputs (size, channels and layout come from the model;
    ``layout`` overrides the detected one, for arrays too)."""

    mean: list[float] | None = None
    std: list[float] | None = None
    channel_order: Literal["rgb", "bgr"] = "rgb"
    value_range: Literal["0-1", "0-255"] = "0-1"
    resize_shorter: int | None = Field(None, gt=0)
    layout: Literal["NCHW", "NHWC"] | None = None  #: override the detected input layout


class DatasetConfig(_Strict):
    """Where the inputs come from: an image folder (recursive; files named ``*_mask.*`` are
    masks, not inputs), a .npy/.npz batch, or a manifest (.csv/.json: path, label, optional
    box as x0 y0 x1 y1, optional mask path)."""

    path: Path
    input_key: str | None = None  #: array name in an .npz (default: x, or its only array)
    labels_key: str | None = None  #: array of class labels in an .npz
    masks_key: str | None = None  #: array of N×H×W masks in an .npz
    mask_suffix: str | None = None  #: folder: ``image.png`` → ``image{mask_suffix}.png``
    #: what the masks outline: the ``object`` (relevance belongs there) or a ``spurious`` region
    #: (a watermark, a tag: relevance there is flagged as Clever-Hans reliance)
    masks_mark: Literal["object", "spurious"] = "object"
    limit: int | None = Field(None, gt=0)
    preprocessing: PreprocessingConfig = PreprocessingConfig()


class MethodConfig(_Strict):
    name: str
    label: str | None = None  #: how results name it (default: the method name)
    params: dict = {}


class MetricConfig(_Strict):
    name: str
    params: dict = {}


class Threshold(_Strict):
    """A verdict rule on a metric's mean: ``fail`` rules decide the exit code, ``warn`` rules
    are flagged in the report."""

    metric: str
    method: str | None = None  #: a method label, or every method when omitted
    max: float | None = None
    min: float | None = None
    severity: Literal["fail", "warn"] = "fail"
    description: str | None = None

    @model_validator(mode="after")
    def _bound(self):
        if self.max is None and self.min is None:
            raise ValueError("give max or min")
        return self


class CompareModelConfig(_Strict):
    """Another form of the audited model — the float32 original of a deployed int8 or float16
    model — whose predictions and explanations the audit compares with the audited model's
    (the audited model is the deployed form)."""

    path: Path
    limit: int | None = Field(64, gt=0)  #: inputs compared (the first evaluated ones)
    #: min_top1_agreement, max_score_deviation, min_spearman, min_ssim, min_dice
    thresholds: dict[str, float] = {}
    severity: Literal["fail", "warn"] = "fail"  #: of every threshold above

    @field_validator("thresholds")
    @classmethod
    def _known_thresholds(cls, value):
        from onnxlens.evaluation.deployment import THRESHOLDS

        unknown = sorted(set(value) - set(THRESHOLDS))
        if unknown:
            raise ValueError(f"unknown threshold(s) {', '.join(unknown)}; known: {', '.join(THRESHOLDS)}")
        return value


class AuditConfig(_Strict):
    model: Path
    dataset: DatasetConfig
    methods: list[MethodConfig] = Field(min_length=1)
    metrics: list[MetricConfig] = []  #: empty: the evaluation defaults
    #: predicted, label, or a target spec (as ``explain --target``); in a spec ``class=label`` and
    #: ``region=dataset`` take each item's own label and mask (or box)
    target: str = "predicted"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(32, gt=0)
    #: most memory one session run may hold, e.g. "2G" (default: a quarter of the available memory)
    memory_budget: str | None = None
    workers: int = Field(1, gt=0)  #: concurrent tasks (threads), or Dask/Ray worker processes
    runner: Literal["threads", "dask", "ray"] = "threads"
    dask_address: str | None = None  #: join this Dask scheduler instead of starting a LocalCluster
    retries: int = Field(2, ge=0)
    output: Path = Path("audit_run")
    #: documents written beside results.json and verdict.json (always written)
    formats: list[Literal["json", "html", "pdf"]] = ["json", "html", "pdf"]
    gallery_size: int = Field(6, ge=0)  #: inputs shown with their overlays in report.html
    colormap: str = "jet"  #: matplotlib colormap of the overlays
    baselines: bool = True
    #: metrics that run the model on copies made from each map (deletion, insertion, pixel
    #: flipping, ROAD) score the model-free baselines on at most this many inputs, spread evenly
    #: over the run (None: every input); methods are always scored on every input
    baseline_images: int | None = Field(32, gt=0)
    seed: int = 0
    thresholds: list[Threshold] = []
    compare: Path | None = None  #: an earlier run folder: the results get a drift summary against it
    compare_model: CompareModelConfig | None = None  #: the reference form of the audited (deployed) model

    @field_validator("colormap")
    @classmethod
    def _known_colormap(cls, value):
        import matplotlib

        if value not in matplotlib.colormaps:
            raise ValueError(f"unknown colormap {value!r}; any matplotlib colormap name works (e.g. jet, viridis)")
        return value

    @field_validator("memory_budget")
    @classmethod
    def _memory_size(cls, value):
        from onnxlens.runtime.memory import parse_size

        if value is not None:
            try:
                parse_size(value)
            except OnnxLensError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("target")
    @classmethod
    def _target_spec(cls, value):
        from onnxlens.methods.targets import TargetError

        try:
            audit_target(value)
        except TargetError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _method_names(cls, value):
        return [{"name": v} if isinstance(v, str) else v for v in value]

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_names(cls, value):
        return [{"name": v} if isinstance(v, str) else v for v in value]

    @model_validator(mode="after")
    def _known_names(self):
        from onnxlens.evaluation import METRICS
        from onnxlens.methods import METHODS

        for m in self.methods:
            if m.name not in METHODS:
                raise ValueError(f"unknown method {m.name!r}; available: {', '.join(sorted(METHODS))}")
        for m in self.metrics:
            if m.name not in METRICS:
                raise ValueError(f"unknown metric {m.name!r}; available: {', '.join(sorted(METRICS))}")
        labels = [m.label or m.name for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError("two methods share a label; give each a distinct label")
        return self

    def method_labels(self) -> list[str]:
        return [m.label or m.name for m in self.methods]

    def with_overrides(self, dataset: dict | None = None, **fields) -> AuditConfig:
        """This configuration with the given top-level ``fields`` and ``dataset`` fields replaced
        (None values are skipped), validated again."""
        data = json.loads(self.model_dump_json())
        data.update({k: v for k, v in fields.items() if v is not None})
        data["dataset"].update({k: v for k, v in (dataset or {}).items() if v is not None})
        return load_config(data)


#: the parts of an audit's target spec that each item fills in: its label, its mask (or box)
BY_LABEL, BY_MASK = "class=label", "region=dataset"


def audit_target(spec: str):
    """(the :class:`~onnxlens.methods.targets.Target` of an audit's ``target`` — None for the
    predicted class —, whether its class is each item's label, whether its region is each
    item's mask). A spec that does not parse is a TargetError."""
    from onnxlens.methods.targets import Target

    if spec.strip() == "predicted":
        return None, False, False
    if spec.strip() == "label":
        return Target(), True, False
    parts = [p.strip() for p in spec.split(",")]
    rest = ",".join(p for p in parts if p not in (BY_LABEL, BY_MASK))
    return Target.parse(rest) if rest else Target(), BY_LABEL in parts, BY_MASK in parts


def load_config(source: str | Path | dict) -> AuditConfig:
    """An AuditConfig from a .toml/.yaml/.yml/.json file or a dict; a file's relative model and
    dataset paths are relative to the file's folder (the output folder to the working
    directory). One ConfigError names every problem."""
    base = None
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        base = path.parent
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read audit config {quote(str(path))}: {exc.strerror or exc}") from None
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
            elif path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            elif path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                raise ConfigError(f"audit config {quote(str(path))} must end in .toml, .yaml, .yml or .json")
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise ConfigError(f"audit config {quote(str(path))} is not valid {path.suffix[1:].upper()}: {exc}") from None
        except ImportError:
            raise ConfigError("YAML configs need PyYAML (it comes with prefect)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"audit config {quote(str(path))} must hold a table of settings")
    try:
        config = AuditConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid audit config: {problems}") from None
    if base is not None:
        config.model = _relative(base, config.model)
        config.dataset.path = _relative(base, config.dataset.path)
        if config.compare_model is not None:
            config.compare_model.path = _relative(base, config.compare_model.path)
    return config


def _relative(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path
