"""A run folder and its plan: the validated configuration, the model card, the items split into
batches, and where each step's result lives. Every step of an audit receives only the plan (or
the folder, from which it reads the plan), so any worker can pick up any batch.

Every batch result is written atomically under a key made of the model's sha256, the batch's
input content, the step's parameters and the onnxlens version (``digest``), so a re-run after a
crash reuses every finished batch and recomputes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from onnxlens import __version__
from onnxlens.files import jsonable, write_json
from onnxlens.methods import Explainer
from onnxlens.pipelines.config import AuditConfig, load_config
from onnxlens.pipelines.datasets import Batch, Item, list_items, load_batch


@dataclass(frozen=True)
class RunPlan:
    """What every task needs to find its work: JSON-ready, so it travels to any worker."""

    config: dict
    run_dir: str
    model_sha256: str
    items: list[dict]
    batches: list[list[int]]

    @property
    def audit(self) -> AuditConfig:
        return load_config(self.config)

    def batch_items(self, index: int) -> list[Item]:
        return [Item(**{**self.items[i], "box": tuple(self.items[i]["box"]) if self.items[i]["box"] else None})
                for i in self.batches[index]]

    def explain_path(self, index: int, label: str) -> Path:
        """Where batch ``index``'s explanations by the method labelled ``label`` are stored."""
        return Path(self.run_dir) / "batches" / "explain" / label / f"batch{index:05d}.npz"

    def evaluate_path(self, index: int) -> Path:
        """Where batch ``index``'s metric results are stored."""
        return Path(self.run_dir) / "batches" / "evaluate" / f"batch{index:05d}.json"


_EXPLAINERS: dict[tuple, Explainer] = {}


def explainer_for(config: AuditConfig, device: str | None = None) -> Explainer:
    """One Explainer (and so one set of sessions) per model, device and process."""
    layout = config.dataset.preprocessing.layout
    key = (str(config.model), device or config.device, config.batch_size, config.memory_budget, layout, os.getpid())
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = Explainer(config.model, device=device or config.device, batch_size=config.batch_size,
                                     layout=layout, memory_budget=config.memory_budget)
    return _EXPLAINERS[key]


def plan(config: AuditConfig | dict | str | Path, run_dir: str | Path | None = None) -> RunPlan:
    """Validate the model and the dataset, split the items into batches, and write the run's
    configuration, model card and item list into the run folder."""
    config = config if isinstance(config, AuditConfig) else load_config(config)
    run = Path(run_dir or config.output)
    explainer = explainer_for(config)
    items = list_items(config.dataset)
    batches = [list(range(i, min(i + config.batch_size, len(items)))) for i in range(0, len(items), config.batch_size)]
    config_dict = json.loads(config.model_dump_json())
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", config_dict)
    write_json(run / "model.json", explainer.model.describe())
    item_dicts = [{"id": i.id, "source": i.source, "label": i.label, "box": list(i.box) if i.box else None,
                   "mask": i.mask} for i in items]
    plan_ = RunPlan(config_dict, str(run), explainer.model.sha256, item_dicts, batches)
    write_json(run / "plan.json", {"config": plan_.config, "model_sha256": plan_.model_sha256,
                                   "items": plan_.items, "batches": plan_.batches})
    return plan_


_PLANS: dict[tuple, RunPlan] = {}


def load_plan(run_dir: str | Path) -> RunPlan:
    """The plan a run folder holds (tasks receive only the folder: small task parameters keep
    Prefect's per-task cost at milliseconds); cached per process until the file changes."""
    path = Path(run_dir) / "plan.json"
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _PLANS:
        data = json.loads(path.read_text())
        _PLANS[key] = RunPlan(data["config"], str(run_dir), data["model_sha256"], data["items"], data["batches"])
    return _PLANS[key]


def digest(*parts) -> str:
    """A short key for ``parts`` (bytes as they are, anything else as sorted JSON)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(jsonable(part), sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def load(plan_: RunPlan, index: int) -> tuple[AuditConfig, Explainer, Batch]:
    """The configuration, the Explainer and the loaded inputs of batch ``index``."""
    config = plan_.audit
    explainer = explainer_for(config)
    batch = load_batch(config.dataset, plan_.batch_items(index), explainer.model.spec.image_input,
                       explainer.engine.spatial_size())
    return config, explainer, batch


def input_digest(plan_: RunPlan, batch: Batch) -> str:
    """The key of a batch's inputs: the model, this onnxlens, the item ids and the pixels."""
    return digest(plan_.model_sha256, __version__, [i.id for i in batch.ok], batch.x.tobytes())
