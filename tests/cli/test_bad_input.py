"""Every kind of bad model file: a typed exception from the API, one stderr line and a
non-zero exit (no traceback) from the CLI."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import conv_classifier, make_model, vi
from onnxlens import Explainer, errors, import_model
from onnxlens.limits import ResourceLimitError


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


def _weight(model, edit):
    edit(model.graph.initializer[0])
    return model


def _raw_data_too_long(tmp_path):
    return _weight(conv_classifier(), lambda t: setattr(t, "raw_data", numpy_helper.to_array(t).tobytes() + b"\0" * 8))


def _unknown_data_type(tmp_path):
    return _weight(conv_classifier(), lambda t: setattr(t, "data_type", 99))


def _segmented(tmp_path):
    def edit(t):
        t.segment.begin, t.segment.end = 0, 4
    return _weight(conv_classifier(), edit)


def _no_outputs(tmp_path):
    model = conv_classifier()
    del model.graph.output[:]
    return model


def _metadata_not_utf8(tmp_path):
    model = conv_classifier()
    model.metadata_props.add(key="author", value="AUTHORXY")
    return model.SerializeToString().replace(b"AUTHORXY", b"AUTH\xff\xfeXY")


def _declared_dims(dims):
    def make(tmp_path):
        model = conv_classifier()
        for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim, dims):
            d.dim_value = v
        return model
    return make


def _loop_bomb(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Relu", ["v_in"], ["v_out"])], "body",
        [vi("i", [], TensorProto.INT64), vi("c_in", [], TensorProto.BOOL), vi("v_in", [1, 3, 8, 8])],
        [vi("c_out", [], TensorProto.BOOL), vi("v_out", [1, 3, 8, 8])])
    nodes = [helper.make_node("Loop", ["M", "c", "x"], ["y"], body=body)]
    weights = [("M", np.array(10 ** 12, np.int64)), ("c", np.array(True))]
    return make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 3, 8, 8])], weights, opset=17)


def _too_many_nodes(tmp_path):
    nodes = [helper.make_node("Relu", [f"t{i - 1}" if i else "x"], [f"t{i}" if i < 20_000 else "y"])
             for i in range(20_001)]
    return make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 3, 8, 8])], [], opset=17)


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
    "raw data too long": (_raw_data_too_long, errors.InvalidModelError, "bytes of data; its shape"),
    "unknown data type": (_unknown_data_type, errors.InvalidModelError, "data type 99, which ONNX does not define"),
    "segmented tensor": (_segmented, errors.InvalidModelError, "stored in segments"),
    "no outputs": (_no_outputs, errors.InvalidModelError, "has no outputs"),
    "metadata not UTF-8": (_metadata_not_utf8, errors.InvalidModelError, "value is not valid UTF-8"),
    "huge image dims": (_declared_dims([1, 3, 120000, 120000]), ResourceLimitError, "ONNXLENS_MAX_INPUT_ELEMENTS"),
    "huge fixed batch": (_declared_dims([2 ** 40]), ResourceLimitError, "211,106,232,532,992 elements"),
    "zero beside huge dims": (_declared_dims([1, 0, 2 ** 31, 2 ** 31]), ResourceLimitError,
                              "ONNXLENS_MAX_INPUT_ELEMENTS"),
    "loop of 10^12 trips": (_loop_bomb, ResourceLimitError, "1,000,000,000,000 iterations"),
    "20,001 nodes": (_too_many_nodes, ResourceLimitError, "20,001 nodes, above the limit of 20,000"),
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


BAD_ARRAYS = {
    "strings": (np.array([["a"]]), "dtype <U1"),
    "bytes": (np.array([b"ab"]), "dtype |S2"),
    "complex": (np.zeros((1, 3, 8, 8), np.complex64), "dtype complex64"),
    "structured": (np.zeros(2, dtype=[("a", "f4")]), "dtype |V4"),
    "empty batch": (np.zeros((0, 3, 8, 8), np.float32), "no rows"),
    "NaN": (np.full((2, 3, 8, 8), np.nan, np.float32), "row(s) 0, 1 hold NaN or infinite values"),
    "beyond float32": (np.full((1, 3, 8, 8), 1e39), "row(s) 0 hold NaN or infinite values"),
}


@pytest.mark.parametrize("case", BAD_ARRAYS, ids=list(BAD_ARRAYS))
def test_bad_arrays_get_one_line(case, tmp_path, save, cli):
    array, phrase = BAD_ARRAYS[case]
    path = save(conv_classifier())
    with pytest.raises(errors.InputShapeError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        Explainer(path, device="cpu").explain(array)
    np.save(tmp_path / "x.npy", array)
    result = cli("explain", path, "--input", tmp_path / "x.npy", "--out", tmp_path / "e.npz")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("onnxlens: error: ") and phrase in result.stderr


def test_an_empty_npy_file_is_one_line(tmp_path, save, cli):
    (tmp_path / "x.npy").write_bytes(b"")
    result = cli("explain", save(conv_classifier()), "--input", tmp_path / "x.npy", "--out", tmp_path / "e.npz")
    assert result.returncode == 1 and result.stderr.startswith("onnxlens: error: cannot read")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("method, param, phrase", [
    ("smoothgrad", "sigma=nan", "must be finite, got nan"),
    ("integrated_gradients", "steps=1000000000", "1,000,000,000, above the limit of 100,000"),
    ("rise", "masks=200000", "set ONNXLENS_MAX_PARAMETER_COUNT to raise it"),
])
def test_parameters_are_finite_and_capped(method, param, phrase, tmp_path, save, cli):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32))
    result = cli("explain", save(conv_classifier()), "--input", tmp_path / "x.npy", "--out", tmp_path / "e.npz",
                 "--method", method, "--param", param)
    assert result.returncode == 1 and phrase in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_limit_is_raised_or_lowered_by_its_variable(save, monkeypatch):
    explainer = Explainer(save(conv_classifier()), device="cpu")
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    monkeypatch.setenv("ONNXLENS_MAX_PARAMETER_COUNT", "8")
    with pytest.raises(ResourceLimitError, match="is 9, above the limit of 8"):
        explainer.explain(x, "integrated_gradients", steps=9)
    assert explainer.explain(x, "integrated_gradients", steps=8).attribution.shape == x.shape


def test_image_bombs_are_refused_from_the_header(tmp_path, save, cli):
    from PIL import Image

    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")
    result = cli("explain", save(conv_classifier()), "--input", tmp_path / "big.png", "--out", tmp_path / "e.npz",
                 env={"ONNXLENS_MAX_IMAGE_PIXELS": "1000000"})
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "(3000×3000) is 9,000,000 pixels, above the limit of 1,000,000" in result.stderr


def _external(tensor: TensorProto, location: str, offset: int = 0, length: int = 4) -> TensorProto:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _function_constant_model(location: str, offset: int = 0, length: int = 4) -> onnx.ModelProto:
    """x → local.AddK (a model-local function whose Constant keeps its value externally) → y."""
    k = _external(numpy_helper.from_array(np.ones(1, np.float32), "k"), location, offset, length)
    function = helper.make_function("local", "AddK", ["a"], ["b"], [
        helper.make_node("Constant", [], ["k"], value=k), helper.make_node("Add", ["a", "k"], ["b"])],
        opset_imports=[helper.make_opsetid("", 17)])
    model = make_model([helper.make_node("AddK", ["x"], ["y"], domain="local")], [vi("x", [1, 3, 8, 8])],
                       [vi("y", [1, 3, 8, 8])], opset=17)
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.functions.append(function)
    return model


def test_external_data_of_a_function_constant_is_checked(tmp_path, monkeypatch):
    """A canary beside the working directory and one outside the model's folder: neither is
    read, whatever the working directory; data inside the folder loads."""
    folder, elsewhere = tmp_path / "model", tmp_path / "cwd"
    folder.mkdir(), elsewhere.mkdir()
    canary = np.float32(1234.5).tobytes()
    (elsewhere / "secret.bin").write_bytes(canary)
    (tmp_path / "outside.bin").write_bytes(canary)
    monkeypatch.chdir(elsewhere)
    for location, error, phrase in (("secret.bin", errors.MissingExternalDataError, "missing"),
                                    ("../outside.bin", errors.UnsafeExternalDataError, "leaves the model's folder")):
        onnx.save(_function_constant_model(location), folder / "m.onnx")
        with pytest.raises(error, match=phrase):
            import_model(folder / "m.onnx")
    (folder / "k.bin").write_bytes(np.float32(2.0).tobytes())
    onnx.save(_function_constant_model("k.bin"), folder / "m.onnx")
    from onnxlens.graph_ops.load import load_model
    loaded = load_model(folder / "m.onnx")
    assert loaded.external_data == ("k.bin",)
    constant = loaded.model.functions[0].node[0].attribute[0].t
    assert numpy_helper.to_array(constant).tolist() == [2.0]


def test_external_data_offset_and_length_stay_in_the_file(tmp_path):
    (tmp_path / "k.bin").write_bytes(b"\0" * 8)
    onnx.save(_function_constant_model("k.bin", offset=6, length=4), tmp_path / "m.onnx")
    with pytest.raises(errors.UnsafeExternalDataError, match="reads bytes 6..10 of 'k.bin', which has 8"):
        import_model(tmp_path / "m.onnx")


def test_external_data_of_a_sparse_initializer_is_refused(tmp_path):
    (tmp_path / "v.bin").write_bytes(b"\0" * 16)
    model = conv_classifier()
    values = _external(numpy_helper.from_array(np.ones(1, np.float32), "s"), "v.bin")
    indices = numpy_helper.from_array(np.zeros(1, np.int64), "s_indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [4]))
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(errors.UnsafeExternalDataError, match="sparse tensor"):
        import_model(tmp_path / "m.onnx")


def test_hostile_strings_never_reach_the_terminal_raw(tmp_path, save, cli):
    """Escape codes and newlines in an input name, a node name and metadata: a successful
    inspect (text and JSON) and explain print them escaped, and no line forges onnxlens's."""
    evil = "\x1b]0;retitled\x07\x1b[2J\nonnxlens: error: forged"
    model = conv_classifier()
    old = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = [evil if name == old else name for name in node.input]
    model.graph.input[0].name = model.graph.node[0].name = evil
    model.metadata_props.add(key=evil, value=evil)
    model.doc_string = model.producer_name = evil
    path = save(model)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32))
    for args in (("inspect", path), ("inspect", path, "--json"), ("inspect", path, "--layers"),
                 ("explain", path, "--input", tmp_path / "x.npy", "--out", tmp_path / "e.npz")):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        text = result.stdout + result.stderr
        assert "\x1b" not in text and "\x07" not in text
        assert not any(line.startswith("onnxlens: error: forged") for line in text.splitlines())
