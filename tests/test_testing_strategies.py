"""Tests of the hypothesis strategies in lrp_num.testing: valid shapes, domains, coverage."""

import numpy as np
from hypothesis import find, given
from hypothesis import strategies as st

from lrp_num import testing
from lrp_num.layers import Conv2d, Dense, MaxPool2d


@given(testing.networks())
def test_networks_have_valid_shapes_and_run(network):
    x = np.zeros((2, *network.input_shape))
    out = network.forward(x)
    assert out.shape == (2, *network.output_shape)
    assert 1 <= out.shape[1] <= 4


@given(st.sampled_from(testing.DOMAINS).flatmap(lambda d: testing.networks_with_inputs(domain=d).map(lambda r: (d, r))))
def test_inputs_respect_their_domain(case):
    domain, (network, x, lower, upper) = case
    assert x.shape == network.input_shape and np.isfinite(x).all()
    if domain == "orthant":
        assert (x >= 0).all()
    if domain == "box":
        assert (lower < upper).all() and (lower <= x).all() and (x <= upper).all()


@given(st.sampled_from(testing.BIAS_KINDS).flatmap(lambda k: testing.biases(5, k).map(lambda b: (k, b))))
def test_bias_kinds_have_their_sign(case):
    kind, bias = case
    checks = {"mixed": lambda b: (np.abs(b) <= 1).all(), "positive": lambda b: (b > 0).all(),
              "negative": lambda b: (b < 0).all(), "nonpositive": lambda b: (b <= 0).all(),
              "zero": lambda b: (b == 0).all()}
    assert bias.shape == (5,) and np.isfinite(bias).all()
    assert checks[kind](bias)


def test_mixed_biases_take_both_signs():
    # find raises NoSuchExample when no draw satisfies the condition
    bias = find(testing.biases(5, "mixed"), lambda b: (b > 0).any() and (b < 0).any())
    assert (bias > 0).any() and (bias < 0).any()


def _biases(network):
    return np.concatenate([layer.bias for layer in network.layers if isinstance(layer, (Dense, Conv2d))])


def test_networks_cover_both_bias_signs_conv_and_pooling():
    find(testing.networks(), lambda n: (_biases(n) > 0).any())
    find(testing.networks(), lambda n: (_biases(n) < 0).any())
    find(testing.networks(), lambda n: (_biases(n) > 0).any() and (_biases(n) < 0).any())
    find(testing.networks(kind="conv", pooling=True), lambda n: any(isinstance(l, MaxPool2d) for l in n.layers))
    find(testing.networks(kind="mlp"), lambda n: len(n.layers) >= 5)


@given(st.integers(1, 5).flatmap(lambda n: testing.near_zero_layers(n, 3)))
def test_near_zero_layers_put_neuron_0_near_its_hinge(case):
    layer, x = case
    z = float(layer(x[None])[0, 0])
    scale = 1.0 + float(np.abs(x) @ np.abs(layer.weight[:, 0]))
    assert abs(z) <= 1e-11 * scale
