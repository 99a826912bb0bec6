"""Property tests over hostile inputs to the Python API (the command line has the corpus in
tests/hostile_corpus.py): whatever array or declared input shape arrives, the result is a
finite explanation or one OnnxLensError, never another exception."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

from builders import conv_classifier
from onnxlens import import_model
from onnxlens.errors import OnnxLensError

DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.uint8, np.int64, np.bool_,
                          np.complex64, "U3", "S2"])
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _arrays(row_shape):
    """Arrays near the model's shape (right, off by one, wrong rank, empty) of any dtype."""
    near = st.lists(st.integers(0, 3), min_size=0, max_size=5).map(tuple)
    shapes = st.one_of(st.just((2, *row_shape)), st.just((0, *row_shape)), st.just(row_shape),
                       st.tuples(st.integers(0, 3)).map(lambda b: (*b, *row_shape[:-1], row_shape[-1] + 1)), near)
    return st.tuples(DTYPES, shapes).flatmap(lambda ds: hnp.arrays(ds[0], ds[1], elements=_elements(ds[0])))


def _elements(dtype):
    """Floats of any kind, NaN and infinities included."""
    dtype = np.dtype(dtype)
    return st.floats(width=8 * dtype.itemsize) if dtype.kind == "f" else None


@SETTINGS
@given(data=st.data(), method=st.sampled_from(["gradient", "lrp", "gradcam"]))
def test_any_array_gives_a_finite_explanation_or_one_clear_error(digits, data, method):
    x = data.draw(_arrays(digits.engine.row_shape))
    try:
        e = digits.explain(x, method=method)
    except OnnxLensError as exc:
        assert str(exc) and "\n" not in str(exc)
        event(type(exc).__name__)
        return
    event("explained")
    assert np.isfinite(e.attribution).all() and np.isfinite(e.score).all()


@SETTINGS
@given(dims=st.one_of(
    st.tuples(st.sampled_from([1, 2, "N", 0, -1, 2 ** 40]), st.sampled_from([3, 1, 0, -2, "c"]),
              *[st.sampled_from([8, 1, 0, -1, "h", 2 ** 20, 2 ** 31])] * 2),
    st.lists(st.one_of(st.integers(-3, 2 ** 40), st.sampled_from(["N", "", "h"])), max_size=6)))
def test_any_declared_input_shape_imports_or_fails_clearly(dims):
    model = conv_classifier()
    image = model.graph.input[0]
    image.CopyFrom(helper.make_tensor_value_info(image.name, image.type.tensor_type.elem_type, list(dims)))
    try:
        imported = import_model(model.SerializeToString())
    except OnnxLensError as exc:
        assert str(exc) and "\n" not in str(exc)
        event(type(exc).__name__)
        return
    event("imported")
    assert imported.spec.image_input.shape
