"""What a metric costs and how sure its mean is: forward passes counted per result, standard
errors, curves refined to a tolerance, and copies shared between maps and metrics."""

import numpy as np
import pytest
from onnx import helper

from builders import make_model, vi
from onnxlens import Explainer, Explanation, import_model
from onnxlens.evaluation.curves import FIRST_GRID
from onnxlens.evaluation.registry import EvalContext, MetricError, run_metric, standard_error
from onnxlens.pipelines.summary import merge_batches
from onnxlens.runtime.engine import counting_rows

SIZE = 8


@pytest.fixture(scope="module")
def linear():
    """logits = [Σ w ⊙ x, 0] over a 1×8×8 input."""
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((SIZE, SIZE)) * 3
    w = np.stack([weights.reshape(-1), np.zeros(weights.size)], axis=1).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"])]
    model = make_model(nodes, [vi("x", ["N", 1, SIZE, SIZE])], [vi("logits", ["N", 2])], [("w", w)], opset=18)
    engine = Explainer(import_model(model.SerializeToString()), device="cpu").engine
    return engine, weights, rng.random((4, 1, SIZE, SIZE), dtype=np.float32)


def _explanation(heatmap):
    n = len(heatmap)
    return Explanation(heatmap[:, None].astype(np.float32), heatmap, np.zeros(n, np.int64), np.zeros(n), "hand")


def test_counting_rows_counts_every_run_and_nests(linear):
    engine, _, x = linear
    with counting_rows() as outer:
        engine.forward(x)
        with counting_rows() as inner:
            engine.forward(x[:3])
    assert (inner[0], outer[0]) == (3, 7)


def test_a_fixed_grid_costs_its_inner_points_and_the_shared_ends_once(linear):
    engine, weights, x = linear
    rng = np.random.default_rng(1)
    ctx = EvalContext(engine, x)
    first = run_metric("deletion", ctx, _explanation(rng.random((4, SIZE, SIZE))), steps=5)
    second = run_metric("deletion", ctx, _explanation(rng.random((4, SIZE, SIZE))), steps=5)
    assert first["forward_passes"] == 4 * (5 - 1) + 2 * 4  # inner points, then the two map-free ends
    assert second["forward_passes"] == 4 * (5 - 1)
    assert first["steps"] == [5] * 4 and first["step_error"] is None


def test_morf_pixel_flipping_reuses_the_deletion_curve(linear):
    engine, _, x = linear
    ctx = EvalContext(engine, x)
    e = _explanation(np.random.default_rng(2).random((4, SIZE, SIZE)))
    deletion = run_metric("deletion", ctx, e)
    flipping = run_metric("pixel_flipping", ctx, e)
    assert flipping["forward_passes"] == 0 and flipping["per_image"] == deletion["per_image"]
    assert run_metric("pixel_flipping", ctx, e, order="lerf")["forward_passes"] > 0


def test_an_adaptive_grid_is_the_fixed_grid_it_stopped_at(linear):
    engine, weights, x = linear
    heatmap = np.random.default_rng(3).random((4, SIZE, SIZE))
    adaptive = run_metric("deletion", EvalContext(engine, x), _explanation(heatmap), tolerance=0.02)
    steps = np.array(adaptive["steps"])
    assert set(steps) <= {16, 32, 64} and len(adaptive["curves"][0]) == steps.max() + 1
    errors = np.array(adaptive["step_error"])
    assert ((errors <= 0.02) | (steps == 64)).all()
    for i, n in enumerate(steps):
        fixed = run_metric("deletion", EvalContext(engine, x[i:i + 1]), _explanation(heatmap[i:i + 1]), steps=int(n))
        assert adaptive["per_image"][i] == pytest.approx(fixed["per_image"][0], rel=1e-9)
        interpolated = np.interp(np.linspace(0, 1, n + 1), np.linspace(0, 1, steps.max() + 1), adaptive["curves"][i])
        np.testing.assert_allclose(interpolated, fixed["curves"][0], rtol=1e-9)
    # every image's points once: the grid grows by its odd points only
    inner = sum(n - 1 for n in steps)
    assert adaptive["forward_passes"] == inner + 2 * len(x)


def test_a_tighter_tolerance_refines_further(linear):
    engine, _, x = linear
    e = _explanation(np.random.default_rng(4).random((4, SIZE, SIZE)))
    loose = run_metric("insertion", EvalContext(engine, x), e, tolerance=0.5)
    tight = run_metric("insertion", EvalContext(engine, x), e, tolerance=1e-6, max_steps=32)
    assert loose["steps"] == [2 * FIRST_GRID] * 4 and tight["steps"] == [32] * 4
    assert loose["forward_passes"] < tight["forward_passes"]


@pytest.mark.parametrize("params, message", [
    ({"steps": -1}, "steps must be positive"),
    ({"tolerance": 0.0}, "tolerance must lie strictly between 0 and 1"),
    ({"max_steps": 0}, "max_steps must be at least 1"),
])
def test_bad_grid_parameters_are_named(linear, params, message):
    engine, _, x = linear
    with pytest.raises(MetricError, match=message):
        run_metric("deletion", EvalContext(engine, x), _explanation(np.ones((4, SIZE, SIZE))), **params)


def test_every_result_states_its_standard_error(linear):
    engine, _, x = linear
    result = run_metric("sparseness", EvalContext(engine, x), _explanation(np.random.default_rng(5).random((4, 8, 8))))
    values = np.array(result["per_image"])
    assert result["standard_error"] == pytest.approx(values.std(ddof=1) / 2)
    assert result["forward_passes"] == 0
    assert standard_error([0.5, None]) is None and standard_error([0.0, 1.0, None]) == pytest.approx(0.5)


def test_merged_batches_sum_passes_recompute_errors_and_align_grids():
    def entry(values, curves, passes):
        return {"mean": None, "per_image": values, "curves": curves, "curve": [], "forward_passes": passes,
                "seconds": 1.0, "steps": [len(c) - 1 for c in curves]}
    batches = [{"metrics": {"deletion": {"results": {"m": entry([0.2, 0.4], [[1, 0], [1, 0]], 4)}}},
                "agreement": {"pairs": {}}, "targets": {"m": [0, 0]}},
               {"metrics": {"deletion": {"results": {"m": entry([0.6], [[1, 0.5, 0]], 3)}}},
                "agreement": {"pairs": {}}, "targets": {"m": [0]}}]
    merged = merge_batches(batches, [["a", "b"], ["c"]])["metrics"]["deletion"]["results"]["m"]
    assert merged["forward_passes"] == 7 and merged["steps"] == [1, 1, 2]
    assert merged["standard_error"] == pytest.approx(np.std([0.2, 0.4, 0.6], ddof=1) / np.sqrt(3))
    assert merged["curves"] == [[1, 0.5, 0], [1, 0.5, 0], [1, 0.5, 0]]


def test_evaluate_scores_baselines_on_the_rows_given(linear):
    from onnxlens.evaluation import evaluate

    engine, _, x = linear
    e = _explanation(np.random.default_rng(6).random((4, SIZE, SIZE)))
    results = evaluate(engine, x, [e], ["deletion"], baseline_rows=[3, 1], baselines=["center_surround"])
    baseline = results["metrics"]["deletion"]["results"]["baseline:center_surround"]
    assert [v is not None for v in baseline["per_image"]] == [False, True, False, True]
    assert baseline["images"] == 2 and baseline["steps"][0] is None
    none = evaluate(engine, x, [e], ["deletion"], baseline_rows=[], baselines=["center_surround"])
    assert none["metrics"]["deletion"]["results"]["baseline:center_surround"]["forward_passes"] == 0
    with pytest.raises(MetricError, match="baseline_rows must index the 4 inputs, got 4"):
        evaluate(engine, x, [e], ["deletion"], baseline_rows=[4])


@pytest.mark.parametrize("name, params", [("faithfulness_correlation", {"subset_size": 8, "runs": 12}),
                                          ("infidelity", {"samples": 9})])
def test_map_free_perturbations_are_scored_once_for_every_map(linear, name, params):
    engine, _, x = linear
    rng = np.random.default_rng(7)
    maps = [_explanation(rng.random((4, SIZE, SIZE))) for _ in range(2)]
    ctx = EvalContext(engine, x)
    shared = [run_metric(name, ctx, e, **params) for e in maps]
    alone = [run_metric(name, EvalContext(engine, x), e, **params) for e in maps]
    assert [r["forward_passes"] for r in shared] == [alone[0]["forward_passes"], 0]
    for a, b in zip(shared, alone):
        np.testing.assert_allclose(a["per_image"], b["per_image"], rtol=1e-12)


def test_baselines_are_subset_only_where_each_map_costs_passes(linear):
    from onnxlens.evaluation import evaluate

    engine, _, x = linear
    e = _explanation(np.random.default_rng(8).random((4, SIZE, SIZE)))
    results = evaluate(engine, x, [e], ["deletion", "infidelity"], baseline_rows=[0], baselines=["center_surround"],
                       params={"infidelity": {"samples": 5}})["metrics"]
    assert results["deletion"]["results"]["baseline:center_surround"]["images"] == 1
    assert results["infidelity"]["results"]["baseline:center_surround"]["images"] == 4
    assert results["infidelity"]["results"]["baseline:center_surround"]["forward_passes"] == 0


def test_shared_copies_are_kept_apart_per_explained_output():
    rng = np.random.default_rng(9)
    wa, wb = (rng.standard_normal((SIZE * SIZE, 2)).astype(np.float32) for _ in range(2))
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "wa"], ["a"]),
             helper.make_node("Gemm", ["f", "wb"], ["b"])]
    model = make_model(nodes, [vi("x", ["N", 1, SIZE, SIZE])], [vi("a", ["N", 2]), vi("b", ["N", 2])],
                       [("wa", wa), ("wb", wb)], opset=18)
    engine = Explainer(import_model(model.SerializeToString()), device="cpu").engine
    x = rng.random((3, 1, SIZE, SIZE), dtype=np.float32)
    heatmap = rng.random((3, SIZE, SIZE))
    on_a, on_b = _explanation(heatmap), _explanation(heatmap)
    on_b.params["output"] = "b"
    ctx = EvalContext(engine, x)
    first = {label: np.array(run_metric("deletion", ctx, e, steps=4, score="logit")["curves"])[:, 0]
             for label, e in (("a", on_a), ("b", on_b))}
    flat = x.reshape(3, -1)
    np.testing.assert_allclose(first["a"], flat @ wa[:, 0], rtol=1e-5)
    np.testing.assert_allclose(first["b"], flat @ wb[:, 0], rtol=1e-5)
