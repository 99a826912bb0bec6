"""Frequency analysis of maps and of the first layer's filters."""

import numpy as np
import pytest

from conftest import MODELS
from onnxlens import Explainer
from onnxlens.evaluation import MetricError, evaluate
from onnxlens.evaluation.frequency import (
    filter_frequency_response,
    first_conv_filters,
    high_frequency_share,
    radial_power_spectrum,
)


def test_smooth_and_speckled_maps():
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.sin(2 * np.pi * xx / 32)[None]  # 1/32 cycles per pixel
    checker = ((xx + yy) % 2).astype(float)[None]  # the highest frequency there is
    assert high_frequency_share(smooth)[0] < 1e-9 and high_frequency_share(checker)[0] > 0.999
    assert high_frequency_share(np.ones((1, 8, 8)))[0] == 0.0  # no structure, no energy
    centres, power = radial_power_spectrum(np.concatenate([smooth, np.sin(2 * np.pi * xx / 4)[None]]))
    assert abs(centres[power[0].argmax()] - 1 / 32) < 0.03 and abs(centres[power[1].argmax()] - 0.25) < 0.03
    with pytest.raises(MetricError, match="cutoff"):
        high_frequency_share(smooth, cutoff=1.5)


def test_filter_responses():
    box = np.ones((1, 1, 3, 3)) / 9
    laplace = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], float)[None, None]
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], float)[None, None]
    r = filter_frequency_response(np.concatenate([box, laplace, sobel]))
    low, high, edge = r["high_frequency_share"]
    assert low < 0.2 < edge and high > 0.6 and r["response"].shape == (3, 32, 32)
    assert r["response"][0, 16, 16] == pytest.approx(1.0)  # a box passes DC most (DC at the centre)
    flipped = filter_frequency_response(sobel[..., ::-1, ::-1])  # cross-correlation vs convolution
    np.testing.assert_allclose(flipped["response"], r["response"][2:], atol=1e-12)


def test_first_layer_and_metric():
    explainer = Explainer(MODELS / "shapes_cnn.onnx", device="cpu")
    name, weights = first_conv_filters(explainer.engine)
    assert weights.shape[1:] == (3, 3, 3) and name
    x = np.load(MODELS / "samples" / "shapes" / "test.npz")["x"][:4]
    results = evaluate(explainer, x, ["gradient", "gradcam"], ["high_frequency"], baselines=())
    shares = {k: v["mean"] for k, v in results["metrics"]["high_frequency"]["results"].items()}
    assert shares["gradient"] > shares["gradcam"]  # raw gradients speckle; Grad-CAM is upsampled and smooth
