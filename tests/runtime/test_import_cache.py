"""The disk cache of imported models: a second import of the same file reads the cached
canonical form (the same model, spec and notes, no probe runs), a changed file or layout is
imported anew, a damaged entry is ignored, and the cache keeps under its cap."""

import shutil

import numpy as np
import pytest

from conftest import MODELS
from onnxlens import Explainer, import_model
from onnxlens.runtime import import_cache, model_import


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXLENS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _no_probe_runs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was imported anew")

    monkeypatch.setattr(model_import, "_imported", refuse)


def test_a_second_import_reads_the_cache(cache, monkeypatch):
    first = import_model(MODELS / "shapes_cnn.onnx")
    assert len(list(cache.iterdir())) == 1
    _no_probe_runs(monkeypatch)
    again = import_model(MODELS / "shapes_cnn.onnx")
    assert again.model == first.model and again.spec == first.spec and again.sha256 == first.sha256
    assert (again.verification, again.measured_shapes, again.probe_size, again.canonical_notes) == \
        (first.verification, first.measured_shapes, first.probe_size, first.canonical_notes)
    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:2]
    np.testing.assert_array_equal(Explainer(again, device="cpu").explain(x, "gradient").attribution,
                                  Explainer(first, device="cpu").explain(x, "gradient").attribution)


def test_a_half_precision_model_keeps_its_twin(cache, tmp_path, monkeypatch):
    import onnx

    float16 = pytest.importorskip("onnxconverter_common.float16")
    half = tmp_path / "half.onnx"
    onnx.save(float16.convert_float_to_float16(onnx.load(MODELS / "shapes_cnn.onnx")), half)
    first = import_model(half)
    _no_probe_runs(monkeypatch)
    again = import_model(half)
    assert again.deployed == first.deployed and again.model == first.model and again.spec == first.spec
    assert (again.precision, again.twin_deviation) == (first.precision, first.twin_deviation)


def test_another_file_or_layout_or_a_damaged_entry_is_imported_anew(cache, tmp_path):
    import_model(MODELS / "digits_cnn.onnx")
    import_model(MODELS / "digits_cnn.onnx", layout="NCHW")
    import_model(_changed(tmp_path))
    entries = sorted(cache.iterdir())
    assert len(entries) == 3
    for entry in entries:
        (entry / "model.onnx").write_bytes(b"not a model")
    assert import_model(MODELS / "digits_cnn.onnx").model.graph.node  # imported anew, not the damaged entry


def _changed(tmp_path):
    """The digits model with another doc string: another file, another sha256."""
    import onnx

    model = onnx.load(MODELS / "digits_cnn.onnx")
    model.doc_string = "changed"
    onnx.save(model, tmp_path / "changed.onnx")
    return tmp_path / "changed.onnx"


def _size(folder):
    return sum(f.stat().st_size for f in folder.iterdir())


def test_the_cache_keeps_under_its_cap(cache, tmp_path, monkeypatch):
    shapes = import_model(MODELS / "shapes_cnn.onnx")
    digits = import_model(MODELS / "digits_cnn.onnx")
    changed = import_model(_changed(tmp_path))
    import_model(MODELS / "digits_cnn.onnx")  # read again: the most recently used
    kept = cache / import_cache.entry_key(digits.sha256, None)
    import_cache.evict(cache, _size(kept) + 1)  # the least recently used go first
    assert [f.name for f in cache.iterdir()] == [kept.name]
    assert import_cache.load_entry(shapes.sha256, None) is None and import_cache.load_entry(changed.sha256, None) is None
    monkeypatch.setenv("ONNXLENS_CACHE_BYTES", "1")  # storing evicts down to the cap
    import_model(MODELS / "shapes_cnn.onnx")
    assert not list(cache.iterdir())
    shutil.rmtree(cache)
    monkeypatch.setenv("ONNXLENS_CACHE_DIR", "off")
    import_model(MODELS / "digits_cnn.onnx")
    assert not cache.exists()
