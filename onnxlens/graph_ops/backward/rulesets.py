"""Named rule sets that modify backpropagation through ReLU (Springenberg et al. 2015; Zeiler &
Fergus 2014), as Captum's GuidedBackprop and Deconvolution do for ``nn.ReLU``."""

from __future__ import annotations

from onnxlens.graph_ops.backward.overrides import RuleSet, by_op


def guided_relu(ctx):
    """Guided Backprop: the ordinary ReLU gradient, then only its positive part."""
    g = ctx.g
    return [g.op("Relu", g.keep_where(ctx.ct, g.op("Greater", ctx.outputs[0], g.const(0.0))))]


def deconv_relu(ctx):
    """DeconvNet: ReLU applied to the cotangent, ignoring the forward mask."""
    return [ctx.g.op("Relu", ctx.ct)]


GUIDED_BACKPROP = RuleSet(name="guided_backprop").with_rule(by_op("Relu"), guided_relu)
DECONVNET = RuleSet(name="deconvnet").with_rule(by_op("Relu"), deconv_relu)
