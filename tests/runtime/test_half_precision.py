"""float16 models: explained through a float32 twin built by graph surgery, with the twin's
deviation from the deployed model reported; forward passes run the deployed model."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import MODELS
from onnxlens import Explainer, import_model
from onnxlens.graph_ops.precision import float32_twin, half_precision

float16 = pytest.importorskip("onnxconverter_common.float16")
SHAPES = MODELS / "shapes_cnn.onnx"


@pytest.fixture(scope="module", params=[True, False], ids=["float32-io", "float16-io"])
def half_model(request, tmp_path_factory):
    """models/shapes_cnn.onnx converted as deployers do (onnxconverter-common), with float32
    inputs and outputs kept or not; and the float32 model with the same float16-rounded weights."""
    model = onnx.load(SHAPES)
    folder = tmp_path_factory.mktemp("half")
    half = folder / "half.onnx"
    onnx.save(float16.convert_float_to_float16(model, keep_io_types=request.param), half)
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            rounded = numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(rounded, tensor.name))
    rounded = folder / "rounded.onnx"
    onnx.save(model, rounded)
    return half, rounded


def _x(rows=4):
    return np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:rows].astype(np.float32)


def test_half_model_is_explained_through_its_float32_twin(half_model):
    half, rounded = half_model
    explainer = Explainer(half, device="cpu")
    assert explainer.model.precision == "float16"
    assert half_precision(explainer.model.model) is None  # what backward runs on is float32
    reference = Explainer(rounded, device="cpu")
    x = _x()
    for method in ("gradient", "gradcam", "lrp"):
        e, want = explainer.explain(x, method), reference.explain(x, method)
        np.testing.assert_allclose(e.attribution, want.attribution, rtol=1e-4, atol=1e-6 * np.abs(want.attribution).max())
        assert e.diagnostics["float32_twin_deviation"].shape == (len(x),)
        assert (e.diagnostics["float32_twin_deviation"] < 1e-2).all()


def test_forward_passes_run_the_deployed_half_precision_graph(half_model):
    half, _ = half_model
    engine = Explainer(half, device="cpu").engine
    half_weights = [t for t in engine.forward_graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert half_weights and not any(t.data_type == onnx.TensorProto.FLOAT16 for t in engine.graph.graph.initializer)
    out = engine.forward(_x(2))
    assert all(v.dtype == np.float32 for v in out.values())
    e = Explainer(half, device="cpu").explain(_x(2), "occlusion")
    assert np.isfinite(e.heatmap).all() and np.abs(e.heatmap).max() > 0


def test_inspect_reports_precision_and_twin_deviation(half_model, cli):
    half, _ = half_model
    result = cli("inspect", half, "--json")
    assert result.returncode == 0, result.stderr
    precision = json.loads(result.stdout)["precision"]
    assert precision["deployed"] == "float16" and precision["explained"] == "float32"
    assert 0 <= precision["twin_deviation"] < 1e-2


def test_float32_twin_raises_every_half_type_and_keeps_names():
    model = float16.convert_float_to_float16(onnx.load(SHAPES), keep_io_types=False)
    twin = float32_twin(model)
    assert [n.output for n in twin.graph.node] == [n.output for n in model.graph.node]
    assert half_precision(twin) is None and half_precision(model) == "float16"
    onnx.checker.check_model(twin)
    assert import_model(SHAPES).precision == "float32"


@pytest.mark.parametrize("method", ["gradient", "gradcam", "lrp", "integrated_gradients"])
def test_precision_model_differentiates_in_float16_and_agrees_with_the_twin(method, half_model):
    """precision=model runs the backward graph in the model's own float16: every emitted node
    type-checks, and the maps agree with the float32 twin's to float16 precision."""
    half, _ = half_model
    explainer = Explainer(half, device="cpu")
    x = _x()
    twin = explainer.explain(x, method)
    own = explainer.explain(x, method, precision="model")
    assert own.attribution.dtype == np.float32 and own.params["precision"] == "model"
    # float16 rounding flips a few max-pool arg-maxes and ReLU masks: compare as a whole
    assert np.linalg.norm(own.attribution - twin.attribution) / np.linalg.norm(twin.attribution) < 0.05
    assert np.corrcoef(own.heatmap.ravel(), twin.heatmap.ravel())[0, 1] > 0.98


@pytest.mark.parametrize("method", ["gradient", "gradcam", "lrp"])
def test_precision_model_on_a_dynamic_image_size(method, tmp_path):
    """The deployed float16 graph is specialized to each input size, as its twin is: LRP's
    flat rule and every shape-reading rule see static sizes in either precision."""
    model = onnx.load(SHAPES)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    path = tmp_path / "half_dynamic.onnx"
    onnx.save(float16.convert_float_to_float16(model, keep_io_types=True), path)
    explainer = Explainer(path, device="cpu")
    for size in ((48, 80), (37, 53)):
        x = np.random.default_rng(0).random((2, 3, *size), dtype=np.float32)
        twin = explainer.explain(x, method).attribution
        own = explainer.explain(x, method, precision="model").attribution
        assert own.shape == x.shape
        assert np.linalg.norm(own - twin) / np.linalg.norm(twin) < 0.05
