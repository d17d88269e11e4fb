"""The generated kernels use only the Python array API standard (checked with array-api-strict).

array-api-strict is a namespace that implements the standard and nothing else: a kernel that
called a NumPy-only function or method, indexed in a NumPy-only way or mixed dtypes would fail
here. Each kernel runs on strict arrays through a layer operator that hands its arrays to the
NumPy layer and back, and must give what it gives on NumPy arrays.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from lrp_num._generated import RULES
from lrp_num.engine.kernels import load_module
from lrp_num.layers import Dense, MaxPool2d

xps = pytest.importorskip("array_api_strict")


def to_numpy(a) -> np.ndarray:
    return np.from_dlpack(a)


class StrictOperator:
    """A NumPy layer seen through strict arrays: the kernel's own code runs in the standard."""

    def __init__(self, layer) -> None:
        self.layer = layer

    def forward(self, a, g="identity"):
        return xps.asarray(self.layer.forward(to_numpy(a), g))

    def transpose(self, s, g="identity"):
        return xps.asarray(self.layer.transpose(to_numpy(s), g))

    def bias_like(self, z, g="identity"):
        return xps.asarray(np.array(self.layer.bias_like(to_numpy(z), g)))

    def patches(self, x):
        return xps.asarray(np.ascontiguousarray(self.layer.patches(to_numpy(x))))

    def unpatch(self, r):
        return xps.asarray(self.layer.unpatch(to_numpy(r)))


def _layer_and_inputs(seed: int):
    rng = np.random.default_rng(seed)
    layer = Dense(rng.normal(size=(5, 4)), rng.normal(size=4) - 0.5)
    x = rng.uniform(0.1, 1.0, size=(3, 5))
    relevance_out = rng.uniform(0.0, 1.0, size=(3, 4))
    bounds = {"lower": np.zeros(5), "upper": np.full(5, 1.5)}
    return layer, x, relevance_out, bounds


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("shares", [None, "positive"])
def test_ratio_kernel_runs_on_strict_arrays_and_equals_numpy(rule, shares):
    module = load_module(rule)
    layer, x, relevance_out, bounds = _layer_and_inputs(sum(map(ord, rule)))
    keywords = {"eps": 1e-6, "stabilise": "everywhere"}
    if shares is not None:
        keywords["bias_shares"] = (shares,) * module.N_TERMS
    if module.BOUNDS:
        keywords.update(bounds)
    if module.NEURON == "sum":  # an addition: addends stacked on axis 1, the unit-weight operator
        from lrp_num.layers import Add
        layer = Add.operator(5)
        x = x[:, :, None]
        relevance_out = relevance_out[:, :1]
        keywords.pop("bias_shares", None)
    expected = module.relevance(layer, x, relevance_out, **keywords)
    strict_keywords = {k: (xps.asarray(v) if isinstance(v, np.ndarray) else v)
                       for k, v in keywords.items()}
    result = module.relevance(StrictOperator(layer), xps.asarray(x), xps.asarray(relevance_out),
                              **strict_keywords)
    assert isinstance(result, type(xps.asarray(0.0)))
    np.testing.assert_allclose(to_numpy(result), expected, rtol=1e-13, atol=1e-15)
    condition = getattr(module, "root_point_in_domain", None)
    if condition is not None:
        arguments = {k: v for k, v in strict_keywords.items() if k in ("lower", "upper")}
        inside, active = condition(StrictOperator(layer), xps.asarray(x), **arguments)
        inside_np, active_np = condition(layer, x, **{k: v for k, v in keywords.items()
                                                      if k in ("lower", "upper")})
        assert inside.dtype == xps.bool and active.dtype == xps.bool
        np.testing.assert_array_equal(to_numpy(inside), inside_np)
        np.testing.assert_array_equal(to_numpy(active), active_np)


def test_strict_zero_denominator_still_raises():
    """The run time's error path (count of lost relevance) is standard code too."""
    from lrp_num.errors import ZeroDenominatorError
    layer = Dense(np.zeros((2, 2)))
    x, relevance_out = xps.asarray(np.ones((1, 2))), xps.asarray(np.ones((1, 2)))
    with pytest.raises(ZeroDenominatorError, match="2 denominator"):
        load_module("lrp0").relevance(StrictOperator(layer), x, relevance_out, eps=0.0)


def test_maxpool_kernel_runs_on_strict_arrays_and_splits_ties():
    x = np.array([[[[1.0, 3.0, 3.0, 0.0], [2.0, 3.0, 1.0, 1.0]]]])  # a 3-way tie in window 1
    pool = MaxPool2d(2, 2, padding=(0, 1), ceil_mode=True)
    relevance_out = np.arange(1.0, 1.0 + pool(x).size).reshape(pool(x).shape)
    module = load_module("maxpool")
    expected = module.relevance(pool, x, relevance_out)
    result = module.relevance(StrictOperator(pool), xps.asarray(x), xps.asarray(relevance_out))
    np.testing.assert_array_equal(to_numpy(result), expected)
    assert float(xps.sum(result)) == pytest.approx(relevance_out.sum())


def test_batchnorm_kernels_run_on_strict_arrays():
    rng = np.random.default_rng(3)
    gamma, beta, mean = rng.normal(size=(3, 4))
    var = rng.uniform(0.5, 2.0, size=4)
    weight, bias = rng.normal(size=(6, 4)), rng.normal(size=4)
    fold = importlib.import_module("lrp_num._generated.batchnorm_fold").fold_batchnorm
    affine = importlib.import_module("lrp_num._generated.affine_channel").affine_from_batchnorm
    arrays = [xps.asarray(a) for a in (weight, bias, gamma, beta, mean, var)]
    for strict, plain in zip(fold(*arrays, 1e-5), fold(weight, bias, gamma, beta, mean, var, 1e-5)):
        np.testing.assert_array_equal(to_numpy(strict), plain)
    for strict, plain in zip(affine(*arrays[2:], 1e-5), affine(gamma, beta, mean, var, 1e-5)):
        np.testing.assert_array_equal(to_numpy(strict), plain)
