"""Every kind of bad model file: a typed exception from the API, one stderr line and a
non-zero exit (no traceback) from the CLI."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import conv_classifier, make_model, vi
from onnxlens import errors, import_model


def _truncated(tmp_path):
    data = conv_classifier().SerializeToString()
    return data[: len(data) // 2]


def _random_bytes(tmp_path):
    data = np.random.default_rng(7).bytes(4096)
    assert data[0] != 0x08
    return data


def _empty_graph(tmp_path):
    return make_model([], [vi("x", [1, 3, 8, 8])], [vi("x", [1, 3, 8, 8])])


def _no_image_input(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    return make_model(nodes, [vi("x", [1, 10])], [vi("y", [1, 10])])


def _integer_input(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)]
    return make_model(nodes, [vi("x", [1, 3, 8, 8], TensorProto.INT64)], [vi("y", [1, 3, 8, 8])])


def _old_opset(tmp_path):
    return conv_classifier(opset=9)


def _future_opset(tmp_path):
    return conv_classifier(opset=27)


def _unknown_op(tmp_path):
    model = conv_classifier()
    model.graph.node[1].op_type = "FancyRelu"
    return model


def _traversal(tmp_path):
    model = conv_classifier()
    weight = model.graph.initializer[0]
    secret = tmp_path.parent / "outside.bin"
    secret.write_bytes(b"\0" * 1024)
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../outside.bin"), ("offset", "0"), ("length", "648")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return model


def _absolute_external(tmp_path):
    model = _traversal(tmp_path)
    model.graph.initializer[0].external_data[0].value = "/etc/passwd"
    return model


BAD_INPUTS = {
    "truncated": (_truncated, errors.TruncatedModelError, "truncated"),
    "random bytes": (_random_bytes, errors.NotOnnxError, "not an ONNX model"),
    "empty graph": (_empty_graph, errors.EmptyGraphError, "empty graph"),
    "no image input": (_no_image_input, errors.NoImageInputError, "no floating-point rank-4 image input"),
    "integer input": (_integer_input, errors.NoImageInputError, "no floating-point rank-4 image input"),
    "opset too old": (_old_opset, errors.UnsupportedOpsetError, "opset 9"),
    "opset too new": (_future_opset, errors.UnsupportedOpsetError, "opset 27"),
    "unknown op": (_unknown_op, errors.UnknownOperatorError, "'FancyRelu'"),
    "external data leaves folder": (_traversal, errors.UnsafeExternalDataError, "leaves the model's folder"),
    "absolute external data": (_absolute_external, errors.UnsafeExternalDataError, "not a relative path"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_api_raises_typed_error(case, tmp_path, save):
    make, error_type, phrase = BAD_INPUTS[case]
    path = save(make(tmp_path))
    with pytest.raises(error_type, match=phrase):
        import_model(path)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_cli_prints_one_line(case, tmp_path, save, cli):
    make, _, phrase = BAD_INPUTS[case]
    result = cli("inspect", save(make(tmp_path)))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxlens: error: ") and phrase in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_file(tmp_path, cli):
    with pytest.raises(errors.ModelNotFoundError, match="does not exist"):
        import_model(tmp_path / "nope.onnx")
    result = cli("inspect", tmp_path / "nope.onnx")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "does not exist" in result.stderr


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(errors.ModelNotFoundError, match="not a file"):
        import_model(tmp_path)


def test_size_cap_from_option_and_environment(save, cli):
    path = save(conv_classifier())
    with pytest.raises(errors.ModelTooLargeError, match="over the cap of 100 bytes"):
        import_model(path, max_bytes=100)
    result = cli("inspect", path, "--max-size", "100")
    assert result.returncode == 1 and "over the cap" in result.stderr
    result = cli("inspect", path, env={"ONNXLENS_MAX_MODEL_BYTES": "100"})
    assert result.returncode == 1 and "over the cap" in result.stderr


def test_size_cap_counts_external_data(tmp_path):
    model = conv_classifier()
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    model_bytes = (tmp_path / "m.onnx").stat().st_size
    with pytest.raises(errors.ModelTooLargeError, match="with its external data"):
        import_model(tmp_path / "m.onnx", max_bytes=model_bytes + 10)


def test_external_data_beside_the_model_loads(tmp_path):
    model = conv_classifier()
    want = numpy_helper.to_array(model.graph.initializer[0])
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    imported = import_model(tmp_path / "m.onnx")
    assert imported.loaded.external_data == ("m.onnx.data",)
    got = numpy_helper.to_array(imported.model.graph.initializer[0])
    np.testing.assert_array_equal(got, want)


def test_missing_external_data_file(tmp_path):
    model = conv_classifier()
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(errors.MissingExternalDataError, match="missing"):
        import_model(tmp_path / "m.onnx")


def test_external_data_from_bytes_needs_a_folder(tmp_path):
    onnx.save_model(conv_classifier(), tmp_path / "m.onnx", save_as_external_data=True,
                    location="m.onnx.data", size_threshold=0)
    data = (tmp_path / "m.onnx").read_bytes()
    with pytest.raises(errors.MissingExternalDataError, match="base_dir"):
        import_model(data)
    assert import_model(data, base_dir=tmp_path).spec.image_input.name == "x"


def test_hostile_names_stay_on_one_line(save, cli):
    model = conv_classifier()
    model.graph.node[1].op_type = "Evil\nOp\x1b[31m"
    model.graph.node[1].name = "line1\nline2"
    result = cli("inspect", save(model))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "\x1b" not in result.stderr


def test_loading_from_bytes(tmp_path):
    imported = import_model(conv_classifier().SerializeToString())
    assert imported.loaded.path is None and len(imported.sha256) == 64
