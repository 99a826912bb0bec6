"""The results bundle: everything an audit produced, in one versioned JSON document
(``results.json``) with a schema, and the arrays beside it as .npz files. It is the only
contract between computing and presenting: pipelines assemble it (``assemble``), reports render
it alone, so an old run re-renders without its model or dataset and with the findings it had.
The vocabulary both sides share (the baseline prefix, the metric families) lives here.

``onnxlens report --schema`` prints the JSON Schema of the current version. Layout (stable
within a version; fields are only added, never renamed, until the version changes):

- ``schema``, ``onnxlens_version``, ``created`` (UTC), ``environment`` (Python, platform,
  package versions, the ONNX Runtime providers the run used)
- ``model`` — the model card (what ``onnxlens inspect --json`` prints)
- ``config`` — the audit configuration as validated
- ``items`` — inputs listed, evaluated, and those that failed with why
- ``evaluation`` — metric results per metric and method (model-free baselines as
  ``baseline:NAME``), agreement between maps
- ``verdict`` — each threshold checked; ``drift`` — against an earlier run, if asked
- ``findings`` — per method, what the metrics say (faithful, sane, localized) and the limits
  that decided it, judged once when the run finished
- ``deployment`` — the audited (deployed) model against its reference form, if asked:
  top-1 agreement, score deviation, per method the agreement of the two models' maps, the
  inputs most-changed first (their pictures and maps in deployment.npz)
- ``frequency`` — each method's radial power spectrum and high-frequency share; the first
  convolution's filters' high-frequency shares (the filters and responses in frequency.npz)
- ``timings``, ``provenance`` — where the time went; computed vs reused tasks; notes
- ``arrays`` — paths (relative to the run folder) of the .npz files: every batch's
  explanations per method, and the gallery (pictures and maps the report shows)
"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from onnxlens import __version__
from onnxlens.errors import OnnxLensError, quote
from onnxlens.files import jsonable

SCHEMA = "onnxlens.audit/3"
#: Labels of model-free baseline maps in metric results: ``baseline:NAME``.
BASELINE_PREFIX = "baseline:"
#: Metric families, in the order a report shows them.
FAMILIES = ("faithfulness", "localization", "robustness", "complexity", "sanity", "checks")
#: The packages whose versions a bundle records.
PACKAGES = ("onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "numpy", "scipy", "prefect",
            "matplotlib", "pillow", "jinja2", "weasyprint")


class BundleError(OnnxLensError):
    """A run folder whose results.json is missing, unreadable, or not a bundle this version reads."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Producer(_Open):
    name: str
    version: str


class Tensor(_Open):
    name: str
    dtype: str | None = None
    shape: list[int | str | None] | None = None


class ModelCard(_Open):
    file: str | None
    sha256: str
    size_bytes: int
    producer: Producer
    ir_version: int
    opsets: dict[str, int]
    canonical_opset: int
    doc_string: str
    metadata: dict[str, str]
    inputs: list[Tensor]
    outputs: list[Tensor]
    op_histogram: dict[str, int]
    parameter_count: int


class Environment(_Closed):
    python: str
    platform: str
    packages: dict[str, str]
    providers: list[str]


class Items(_Closed):
    total: int
    evaluated: int
    failed: dict[str, str]


class MetricResult(_Open):
    """One metric over one method: the mean, its standard error, one value per image (None
    where undefined or not scored), how many images were scored and how many rows the model ran
    for it, and whatever the metric adds (curves, per-layer values, parameters)."""

    mean: float | None
    standard_error: float | None = None
    per_image: list[float | None]
    images: int | None = None
    forward_passes: int = 0
    higher_is_better: bool | None = None
    params: dict = {}
    seconds: float = 0.0


class MetricEntry(_Closed):
    family: str
    summary: str
    results: dict[str, MetricResult]


class AgreementValue(_Closed):
    mean: float | None
    per_image: list[float | None]


class Agreement(_Open):
    measures: list[str] = []
    higher_is_closer: dict[str, bool] = {}
    pairs: dict[str, dict[str, AgreementValue]] = {}


class Evaluation(_Open):
    ids: list[str]
    targets: dict[str, list[int]] = {}
    explanations: dict[str, dict] = {}
    baselines: list[str] = []
    metrics: dict[str, MetricEntry]
    agreement: Agreement = Agreement()


class Check(_Closed):
    metric: str
    method: str
    value: float | None
    max: float | None
    min: float | None
    severity: Literal["fail", "warn"]
    passed: bool
    description: str | None
    why: str | None


class Verdict(_Closed):
    passed: bool
    exit_code: int
    checks: list[Check]
    warnings: list[Check]
    failed_items: int


class MethodTiming(_Closed):
    seconds: float
    inputs: int
    per_input: float | None


class Timings(_Closed):
    explain: dict[str, MethodTiming]
    evaluate: dict[str, float]


class Provenance(_Closed):
    tasks_computed: int
    tasks_reused: int
    processes: list[str] = []
    notes: list[str]


class DriftValue(_Closed):
    previous: float | None
    current: float | None
    change: float | None


class Drift(_Closed):
    previous_run: str
    previous_created: str | None
    model_changed: bool
    verdict_before: bool | None
    metrics: dict[str, dict[str, DriftValue]]


class Arrays(_Closed):
    explanations: dict[str, list[str]]  #: method label → batch .npz files, in batch order
    gallery: str | None  #: pictures and heatmaps the report shows (None: no gallery)
    frequency: str | None = None  #: the first convolution's filters and their magnitude responses
    deployment: str | None = None  #: the most-changed inputs with both models' maps


class MeasureSummary(_Closed):
    mean: float | None
    worst: float | None


class DeploymentInput(_Closed):
    index: int
    id: str
    reference_class: int
    deployed_class: int
    score_deviation: float
    agreement: dict[str, dict[str, float | None]]  #: method → measure → value


class DeploymentCheck(_Closed):
    threshold: str
    method: str | None
    limit: float
    value: float | None
    passed: bool


class DeploymentVerdict(_Closed):
    passed: bool
    checks: list[DeploymentCheck]


class Deployment(_Closed):
    """The audited (deployed) model against its reference form (``onnxlens.compare/1``)."""

    schema_: Literal["onnxlens.compare/1"] = Field(alias="schema")
    reference: dict
    inputs: int
    top1_agreement: float
    score_deviation: dict[str, float]  #: max, mean
    measures: list[str]
    warnings: list[str]  #: from the deployed model's explanations (e.g. a saturated quantizer)
    methods: dict[str, dict[str, MeasureSummary]]
    per_input: list[DeploymentInput]  #: most-changed first
    verdict: DeploymentVerdict


class MapSpectrum(_Closed):
    frequencies: list[float]  #: radial bin centres, cycles per pixel
    power: list[float]  #: mean power per bin over every map, scaled to a maximum of 1
    high_frequency_share: float  #: mean share of energy above the cutoff


class FirstLayer(_Closed):
    node: str
    filters: int
    high_frequency_share: list[float]  #: per filter


class Frequency(_Closed):
    cutoff: float  #: a fraction of the Nyquist frequency
    maps: dict[str, MapSpectrum]
    first_layer: FirstLayer | None


class Finding(_Closed):
    status: Literal["pass", "fail", "flag", "none"]
    text: str


class MethodFindings(_Closed):
    method: str
    faithfulness: Finding
    sanity: Finding
    localization: Finding
    reliability: Finding  #: flagged when the method warned about its own result


class Findings(_Closed):
    """What the metrics say about each method, with the limits and the mask meaning that
    decided it (``onnxlens.evaluation.verdict.findings``)."""

    sanity_limit: float  #: Spearman |map| after randomization at or above which sanity fails
    random_logit_limit: float  #: SSIM between two classes' maps at or above which sanity fails
    masks_mark: Literal["object", "spurious"]
    methods: list[MethodFindings]


class AuditBundle(_Closed):
    """results.json of an audit run."""

    schema_: Literal["onnxlens.audit/3"] = Field(alias="schema")
    onnxlens_version: str
    created: str
    environment: Environment
    model: ModelCard
    config: dict
    items: Items
    evaluation: Evaluation
    verdict: Verdict
    findings: Findings
    drift: Drift | None = None
    frequency: Frequency | None = None
    deployment: Deployment | None = None
    timings: Timings
    provenance: Provenance
    arrays: Arrays

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def json_schema() -> dict:
    """The bundle's JSON Schema (draft 2020-12), as pydantic writes it."""
    return {"$id": SCHEMA, **AuditBundle.model_json_schema(by_alias=True)}


def environment(providers: list[str]) -> dict:
    """Python, platform and package versions of this process, and the providers a run used."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages,
            "providers": sorted(set(providers))}


def is_baseline(label: str) -> bool:
    """Whether a result label names a model-free baseline map."""
    return label.startswith(BASELINE_PREFIX)


def assemble(*, providers: list[str], **parts) -> dict:
    """A bundle from its ``parts`` (the fields of ``AuditBundle`` past the header), stamped
    with the schema, this version, the time and the environment, made JSON-ready and
    validated."""
    results = jsonable({"schema": SCHEMA, "onnxlens_version": __version__,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "environment": environment(providers), **parts})
    validate(results)
    return results


def validate(results: dict) -> AuditBundle:
    """``results`` checked against the schema; a BundleError names the first fields that fail."""
    version = results.get("schema") if isinstance(results, dict) else None
    if version != SCHEMA:
        raise BundleError(f"results are {quote(str(version))}, this onnxlens reads {SCHEMA}: "
                          "re-run the audit with this version to render it")
    try:
        return AuditBundle.model_validate(results)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise BundleError(f"results.json does not match {SCHEMA}: {problems}") from None


def load_bundle(run_dir: str | Path) -> dict:
    """The validated results.json of a run folder (as plain JSON data)."""
    path = Path(run_dir) / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{quote(str(run_dir))} is not a finished audit run (no results.json)") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {quote(str(path))}: {exc}") from None
    validate(results)
    return results
