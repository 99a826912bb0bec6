"""Feature maps in every layout: which tensors a layer method may read, how their axes lie, and
what the default is; attention internals are never candidates."""

import numpy as np
import onnx
import pytest
from onnx import helper

from builders import make_model, vi
from onnxlens import Explainer
from onnxlens.graph_ops.layers import MapLayout, map_layout
from onnxlens.methods.registry import MethodError

SIZE = (224, 224)


@pytest.mark.parametrize("shape, batch, want", [
    (("n", 512, 7, 7), "n", MapLayout("channels_first", (7, 7))),
    (("n", 7, 7, 768), "n", MapLayout("channels_last", (7, 7))),
    (("n", 16, 56, 56), "n", MapLayout("channels_first", (56, 56))),  # few channels: still channels-first
    (("n", 56, 56, 40), "n", MapLayout("channels_last", (56, 56))),
    (("n", 197, 192), "n", MapLayout("tokens", (14, 14), prefix=1)),  # ViT: a class token
    (("n", 198, 192), "n", MapLayout("tokens", (14, 14), prefix=2)),  # DeiT-distilled: class and distillation
    (("n", 49, 768), "n", MapLayout("tokens", (7, 7))),  # Swin, LeViT: no prefix
    ((197, "n", 192), "n", MapLayout("tokens", (14, 14), prefix=1, batch_axis=1)),  # inside torch's MHA
    ((4, 197, 192), 4, MapLayout("tokens", (14, 14), prefix=1)),
    (("n", 1, 1, 768), "n", None),  # a pooled vector laid out channels-last
    (("n", 768, 1, 1), "n", None),
    (("n", 192, 196), "n", None),  # [N, D, h·w]: 192 tokens would need a 12×16 grid
    (("n", 197, 3, 64), "n", None),  # heads split off the tokens
    (("n", 1000), "n", None),
    ((8, 512, 7, 7), "n", None),  # windows or patches folded into the batch
    (("n", 512, None, 7), "n", None),
])
def test_map_layout(shape, batch, want):
    assert map_layout(shape, batch, SIZE) == want


def test_odd_sizes_and_non_square_images_keep_their_maps():
    assert map_layout(("n", 2048, 8, 8), "n", (299, 299)).kind == "channels_first"  # Inception's valid paddings
    assert map_layout(("n", 512, 15, 20), "n", (480, 640)).grid == (15, 20)
    assert map_layout(("n", 512, 16, 21), "n", (481, 641)).grid == (16, 21)
    assert map_layout(("n", 7 * 4, 8), "n", (100, 64)).grid == (7, 4)  # patch 16, ceil


def test_every_layout_reads_as_channels_first():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((2, 5, 3, 4))
    tokens = maps.reshape(2, 5, 12).transpose(0, 2, 1)
    with_prefix = np.concatenate([rng.standard_normal((2, 2, 5)), tokens], axis=1)
    cases = [(MapLayout("channels_first", (3, 4)), maps),
             (MapLayout("channels_last", (3, 4)), maps.transpose(0, 2, 3, 1)),
             (MapLayout("tokens", (3, 4)), tokens),
             (MapLayout("tokens", (3, 4), prefix=2), with_prefix),
             (MapLayout("tokens", (3, 4), prefix=2, batch_axis=1), with_prefix.transpose(1, 0, 2))]
    for layout, a in cases:
        np.testing.assert_array_equal(layout.channels_first(a), maps, err_msg=str(layout))


def _attention_model(path, rng):
    """Patchify (4×4 tokens of width 8) → one attention head (queries, keys, values, softmax
    weights, output projection) with a residual → mean over tokens → linear head."""
    w = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.5  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "patch"], ["patches"], strides=[2, 2]),
             helper.make_node("Reshape", ["patches", "flat_shape"], ["flat"]),
             helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]),
             *[helper.make_node("MatMul", ["tokens", f"w{k}"], [k]) for k in "qkv"],
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"]),
             helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
             helper.make_node("Softmax", ["scaled"], ["weights"], axis=-1),
             helper.make_node("MatMul", ["weights", "v"], ["context"]),
             helper.make_node("MatMul", ["context", "wo"], ["projected"]),
             helper.make_node("Add", ["tokens", "projected"], ["block"]),
             helper.make_node("ReduceMean", ["block"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("Gemm", ["pooled", "fc"], ["logits"], transB=1)]
    weights = [("patch", w(8, 3, 2, 2)), ("flat_shape", np.array([0, 8, 16], np.int64)),
               *[(f"w{k}", w(8, 8)) for k in "qkvo"], ("scale", np.array(8 ** -0.5, np.float32)), ("fc", w(3, 8))]
    onnx.save(make_model(nodes, [vi("x", ["N", 3, 8, 8])], [vi("logits", ["N", 3])], weights, opset=13), path)


def test_attention_internals_are_no_candidates(tmp_path):
    rng = np.random.default_rng(0)
    _attention_model(tmp_path / "m.onnx", rng)
    explainer = Explainer(tmp_path / "m.onnx", device="cpu")
    candidates = explainer.engine.layers()
    assert [(c.name, str(c.layout)) for c in candidates] == [
        ("patches", "channels-first 4×4"), ("tokens", "tokens 0+4×4"), ("projected", "tokens 0+4×4"),
        ("block", "tokens 0+4×4")]  # not q, k, v, scores, weights or context
    x = rng.random((2, 3, 8, 8), dtype=np.float32)
    e = explainer.explain(x, "gradcam")
    assert e.params["layer"] == "block" and e.layer_map.shape == (2, 4, 4)
    assert explainer.explain(x, "eigencam").layer_map.shape == (2, 4, 4)


def test_no_feature_map_names_the_tensors_that_could_be_read(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),  # [N, 12, 1, 16]: no grid of the image
             helper.make_node("Relu", ["r"], ["relu"]),
             helper.make_node("Flatten", ["relu"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1)]
    weights = [("shape", np.array([0, 12, 1, 16], np.int64)), ("fc", rng.standard_normal((2, 192)).astype(np.float32))]
    onnx.save(make_model(nodes, [vi("x", ["N", 3, 8, 8])], [vi("logits", ["N", 2])], weights, opset=13),
              tmp_path / "m.onnx")
    explainer = Explainer(tmp_path / "m.onnx", device="cpu")
    x = rng.random((1, 3, 8, 8), dtype=np.float32)
    assert explainer.engine.layers() == []
    with pytest.raises(MethodError, match=r"no feature map .*'relu' \['N', 12, 1, 16\] \(pass one as layer=NAME\)"):
        explainer.explain(x, "gradcam")
    assert explainer.explain(x, "gradcam", layer="relu").layer_map.shape == (1, 1, 16)  # read as asked
