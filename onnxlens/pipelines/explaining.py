"""The explain step of an audit: one batch, one method, stored in the run folder in
``Explanation.to_arrays`` form; the faults a batch can meet and how each is answered."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from onnxlens.errors import OnnxLensError
from onnxlens.files import jsonable, npz_bytes, write_atomic
from onnxlens.methods import Explainer, Explanation
from onnxlens.methods.registry import run_method
from onnxlens.pipelines.config import audit_target
from onnxlens.pipelines.run_plan import RunPlan, digest, explainer_for, input_digest, load


class OutOfMemory(Exception):
    """ONNX Runtime could not allocate memory for a batch (retried with half the batch)."""


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (OutOfMemory, MemoryError)) or any(
        s in text for s in ("failed to allocate memory", "bad_alloc", "out of memory", "cudaerrormemoryallocation"))


def is_cuda_failure(exc: BaseException) -> bool:
    text = str(exc)
    return "CUDA" in text or "cudnn" in text.lower() or "CUBLAS" in text


def explain_batch(plan_: RunPlan, index: int, label: str) -> dict:
    """Explain batch ``index`` with the method labelled ``label`` unless a result with the same
    key is already in the run folder; returns the task's log entry."""
    config, explainer, batch = load(plan_, index)
    method = next(m for m in config.methods if (m.label or m.name) == label)
    _, by_label, by_mask = audit_target(config.target)
    key = digest(input_digest(plan_, batch), method.name, method.params, config.target,
                 [item.label for item in batch.ok] if by_label else None,
                 batch.masks.tobytes() if by_mask and batch.masks is not None else None)
    path = plan_.explain_path(index, label)
    if path.exists():
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return {"batch": index, "method": label, "status": "reused", **json.loads(str(stored["meta"]))}
    failed = dict(batch.failed)
    target_of, unfit = batch_targets(config.target, batch)
    failed.update(unfit)
    rows = [i for i, item in enumerate(batch.ok) if item.id not in failed]
    start = time.perf_counter()
    parts, failures, notes = explain_rows(explainer, method, batch.x, target_of, rows,
                                          on_cpu=lambda: explainer_for(config, "cpu"))
    failed.update({batch.ok[row].id: why for row, why in failures.items()})
    order = [r for rows_, _ in parts for r in rows_]
    meta = {"failed": failed, "notes": notes, "seconds": time.perf_counter() - start, "rows": len(order),
            "providers": explainer.engine.cache.providers(),
            "warnings": list(dict.fromkeys(w for _, e in parts for w in e.warnings))}
    arrays = Explanation.concatenate([e for _, e in parts]).to_arrays() if parts else {}
    write_atomic(path, npz_bytes(key=np.array(key), meta=np.array(json.dumps(jsonable(meta))),
                                 rows=np.asarray(order, np.int64), ids=np.asarray([batch.ok[r].id for r in order]),
                                 **arrays))
    return {"batch": index, "method": label, "status": "computed", **meta}


def batch_targets(spec: str, batch) -> tuple[Callable[[list[int]], object], dict[str, str]]:
    """(the target of some rows of ``batch`` — a function of their indices —, the items that
    cannot have it, with why) for an audit's ``target`` spec
    (:func:`~onnxlens.pipelines.config.audit_target`)."""
    target, by_label, by_mask = audit_target(spec)
    if target is None:
        return lambda rows: None, {}
    unfit = {}
    labels = masks = None
    if by_label:
        labels = np.asarray([-1 if item.label is None else item.label for item in batch.ok], np.int64)
        unfit.update({item.id: f"target {spec}: the item has no label" for item in batch.ok if item.label is None})
    if by_mask:
        masks = batch.masks if batch.masks is not None else np.zeros((len(batch.ok), 1, 1), bool)
        unfit.update({item.id: f"target {spec}: the item has no mask or box" for item, mask in zip(batch.ok, masks)
                      if item.id not in unfit and not mask.any()})

    def target_of(rows: list[int]):
        return replace(target, cls=target.cls if labels is None else labels[rows],
                       region=target.region if masks is None else masks[rows])

    return target_of, unfit


def explain_rows(explainer: Explainer, method, x: np.ndarray, target_of: Callable[[list[int]], object],
                 rows: list[int], on_cpu) -> tuple[list[tuple[list[int], Explanation]], dict[int, str], list[str]]:
    """``rows`` of ``x`` explained by ``method`` (a configured method) for ``target_of(rows)``:
    ``(parts, failures, notes)`` — the explained parts as (row indices, Explanation), the rows
    that failed on their own with why, and what was done on the way. Out of memory halves the
    rows; a CUDA failure retries on the CPU (``on_cpu()`` gives that Explainer); an onnxlens
    error on several rows retries them one by one. Anything else propagates."""
    if not rows:
        return [], {}, []
    target = target_of(rows)
    try:
        return [(rows, run_method(method.name, explainer.engine, x[rows], target, **method.params))], {}, []
    except Exception as exc:  # noqa: BLE001 — sorted below; anything unknown propagates
        if is_out_of_memory(exc) and len(rows) > 1:
            half = len(rows) // 2
            return _joined([explain_rows(explainer, method, x, target_of, part, on_cpu)
                            for part in (rows[:half], rows[half:])],
                           f"out of memory on {len(rows)} inputs: retried as two halves")
        if is_cuda_failure(exc) and explainer.engine.config.device != "cpu":
            return _joined([explain_rows(on_cpu(), method, x, target_of, rows, on_cpu)],
                           f"CUDA failure ({str(exc).splitlines()[0][:200]}): retried on the CPU")
        if isinstance(exc, OnnxLensError) and len(rows) > 1:
            return _joined([explain_rows(explainer, method, x, target_of, [r], on_cpu) for r in rows])
        if isinstance(exc, OnnxLensError) or is_out_of_memory(exc):
            return [], {rows[0]: f"{method.label or method.name}: {exc}"}, []
        raise


def _joined(results: list[tuple], note: str | None = None) -> tuple[list, dict, list]:
    parts, failures, notes = [], {}, [note] if note else []
    for p, f, n in results:
        parts += p
        failures.update(f)
        notes += n
    return parts, failures, notes
