"""Tests of the hypothesis strategies in lrp_num.testing: valid shapes, domains, coverage."""

import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from lrp_num import testing
from lrp_num.layers import AvgPool2d, Conv2d, Dense, MaxPool2d, SumPool2d


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


# -- dtype, batches, positive output, pooling, torch networks (lrp_num.testing for downstream suites)

def _pools(network):
    return [type(layer) for layer in network.layers if isinstance(layer, (SumPool2d, AvgPool2d, MaxPool2d))]


@settings(max_examples=300)
@given(testing.networks(kind="conv", pooling=True))
def test_pooling_is_present_whenever_asked(network):
    assert len(_pools(network)) == 1  # 54 of 300 draws had none before the conv was sized for it


@given(st.sampled_from(["max", "avg", "sum", ("avg", "sum")]).flatmap(
    lambda kind: testing.networks(kind="conv", pooling=kind).map(lambda n: (kind, n))))
def test_pooling_type_is_the_one_asked_for(case):
    kind, network = case
    names = (kind,) if isinstance(kind, str) else kind
    assert _pools(network) and _pools(network)[0] in [testing.POOLING[name] for name in names]


def test_pooling_never_and_sometimes():
    find(testing.networks(kind="conv"), lambda n: not _pools(n))
    find(testing.networks(kind="conv"), lambda n: bool(_pools(n)))
    find(testing.networks(kind="conv", pooling=False), lambda n: True)
    with pytest.raises(ValueError, match="pooling must be"):
        testing.networks(kind="conv", pooling="median")


def _linear(network):
    return [layer for layer in network.layers if isinstance(layer, (Dense, Conv2d))]


@given(st.sampled_from(["float32", "float64"]).flatmap(
    lambda dtype: st.booleans().flatmap(lambda positive: testing.networks_with_inputs(
        domain="R^n", batch=3, dtype=dtype, positive_output=positive)).map(lambda c: (dtype, c))))
def test_float32_draws_are_float32_numbers_above_the_minimum_magnitude(case):
    dtype, (network, x, _, _) = case
    assert x.shape == (3, *network.input_shape)
    factors = np.concatenate([layer.weight.ravel() for layer in _linear(network)] + [x.ravel()])
    biases = np.concatenate([layer.bias for layer in _linear(network)])
    for values in (factors, biases):
        assert np.array_equal(values.astype(dtype).astype(np.float64), values)  # exactly numbers of dtype
    # weights and inputs are multiplied: magnitude >= min_magnitude; biases are only added: normal numbers
    assert (np.abs(factors[factors != 0]) >= testing.min_magnitude(dtype)).all()
    assert (np.abs(biases[biases != 0]) >= np.finfo(dtype).smallest_normal).all()
    assert np.isfinite(network.forward(x.astype(dtype))).all()


def test_the_minimum_magnitude_holds_in_its_dtype():
    assert testing.TINY == testing.min_magnitude("float64") == 1e-100
    assert np.float32(1e-100) == 0  # why float32 needs its own
    for dtype in testing.DTYPES:
        tiny = np.dtype(dtype).type(testing.min_magnitude(dtype))
        assert tiny ** 3 >= np.finfo(dtype).smallest_normal
    assert testing.dtype_name("torch.float32") == "float32" and testing.dtype_name(np.float64) == "float64"
    with pytest.raises(ValueError, match="dtype must be"):
        testing.dtype_name("float16")
    find(testing.inputs((4,), "R^n", dtype="float32"), lambda x: (np.abs(x[x != 0]) < 1e-6).any())


@given(testing.networks_with_inputs(domain="orthant", batch=4, positive_output=True))
def test_positive_output_makes_every_largest_output_positive(case):
    network, x, _, _ = case
    assert (network.forward(x).max(axis=1) >= 0.5).all()


@given(testing.networks_with_inputs(domain="box", batch=2, dtype="float32"))
def test_box_inputs_stay_in_the_box_in_float32(case):
    network, x, lower, upper = case
    assert x.shape == (2, *network.input_shape)
    assert (lower <= x).all() and (x <= upper).all()
    assert np.array_equal(x.astype(np.float32).astype(np.float64), x)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
@given(st.sampled_from(["float32", "float64"]).flatmap(
    lambda dtype: testing.torch_networks(dtype=dtype).map(lambda c: (dtype, c))))
def test_torch_networks_are_modules_with_a_batch(case):
    import torch

    dtype, (model, x) = case
    assert isinstance(model, torch.nn.Module) and not model.training
    assert x.dtype == getattr(torch, dtype) and 1 <= len(x) <= 4
    assert next(model.parameters()).dtype == x.dtype
    with torch.no_grad():
        y = model(x)
    assert (y.max(dim=1).values >= 0.5).all()  # positive_output=True by default
    network = testing.from_torch(model, tuple(x.shape[1:]))
    np.testing.assert_allclose(network.forward(x.double().numpy()), y.double().numpy(),
                               rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-5 if dtype == "float32" else 1e-12)


def test_the_ci_profile_keeps_the_filter_health_checks():
    ci = settings.get_profile("ci")
    assert HealthCheck.filter_too_much not in ci.suppress_health_check
    assert HealthCheck.too_slow in ci.suppress_health_check  # the only one suppressed: the reference is slow


def test_the_former_module_names_stay_importable_and_the_package_imports_lazily():
    import subprocess
    import sys

    former = ("BIAS_KINDS", "DOMAINS", "TINY", "biases", "boxes", "dense_layers", "inputs", "near_zero_layers",
              "networks", "networks_with_inputs", "residual_networks", "_array", "_floats", "_signed", "_values")
    for name in former:
        assert getattr(testing, name) is getattr(testing.strategies, name)
    code = ("import sys, lrp_num.testing, lrp_num.testing.pytest_plugin\n"
            "assert 'hypothesis' not in sys.modules and 'torch' not in sys.modules, 'imported eagerly'\n"
            "from lrp_num.testing import networks\n"
            "assert 'hypothesis' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
