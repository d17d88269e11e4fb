"""The generated root-point diagnostics against a direct check of the root point, exactly.

The replica follows the definition (Montavon et al. 2017, Sec. 3-4) and shares no code with the
generator or the derivations: the search direction v_ij of each rule is written out by hand,
t* = z_j / sum_i v_ij w_ij and x~ = x - t* v_j are computed in exact fractions from the float64
inputs, and x~ is tested against the domain coordinate by coordinate.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from lrp_num import explain_details
from lrp_num.errors import KernelArgumentError
from lrp_num.engine.kernels import load_condition
from lrp_num.layers import Conv2d, Dense, ReLU
from lrp_num.engine.network import Sequential

GAMMA = 0.3


def _direction(rule: str, x: list, w: list, lower: list, upper: list) -> list:
    """v_ij of one neuron (x_i, w_ij, l_i, h_i as Fractions), from the rule's definition."""
    if rule == "zplus":  # v = x 1[w > 0]
        return [xi if wi > 0 else Fraction(0) for xi, wi in zip(x, w)]
    if rule == "gamma":  # v = x (1 + gamma 1[w > 0])
        g = Fraction(GAMMA)
        return [xi * (1 + g) if wi > 0 else xi for xi, wi in zip(x, w)]
    if rule == "zbox":  # v = (x - l) 1[w > 0] + (x - h) 1[w < 0]: unconnected inputs stay
        return [xi - li if wi > 0 else xi - hi if wi < 0 else Fraction(0)
                for xi, wi, li, hi in zip(x, w, lower, upper)]
    raise ValueError(rule)


def _direct(rule: str, weight, bias, x_batch, lower=None, upper=None):
    """(inside, active) of every neuron from x~ = x - t* v_j, in exact arithmetic."""
    batch, (n_in, n_out) = x_batch.shape[0], weight.shape
    inside = np.zeros((batch, n_out), dtype=bool)
    active = np.zeros((batch, n_out), dtype=bool)
    for s in range(batch):
        x = [Fraction(float(v)) for v in x_batch[s]]
        lo = hi = None
        if lower is not None:
            lo = [Fraction(float(v)) for v in np.broadcast_to(lower, n_in)]
            hi = [Fraction(float(v)) for v in np.broadcast_to(upper, n_in)]
        for j in range(n_out):
            w = [Fraction(float(v)) for v in weight[:, j]]
            z = sum(xi * wi for xi, wi in zip(x, w)) + Fraction(float(bias[j]))
            v = _direction(rule, x, w, lo, hi)
            slope = sum(vi * wi for vi, wi in zip(v, w))
            active[s, j] = z > 0
            if not active[s, j] or slope <= 0:
                continue  # inactive, or no root point along the direction (t* <= 0 or none)
            t = z / slope
            root = [xi - t * vi for xi, vi in zip(x, v)]
            assert sum(ri * wi for ri, wi in zip(root, w)) + Fraction(float(bias[j])) == 0
            if rule == "zbox":
                inside[s, j] = all(a <= r <= b for a, r, b in zip(lo, root, hi))
            else:
                inside[s, j] = all(r >= 0 for r in root)
    return inside, active


def _layer(rule: str, seed: int, n_in: int = 6, n_out: int = 40, batch: int = 4):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(n_in, n_out))
    bias = rng.normal(size=n_out) * (6.0 if rule == "zbox" else 1.0)
    if rule == "zbox":
        lower, upper = -1 - rng.random(n_in), 1 + rng.random(n_in)
        x = lower + (upper - lower) * rng.random((batch, n_in))
        return weight, bias, x, {"lower": lower, "upper": upper}
    x = np.abs(rng.normal(size=(batch, n_in)))
    x[rng.random(x.shape) < 0.2] = 0.0
    return weight, bias, x, {}


@pytest.mark.parametrize("rule", ["zplus", "zbox", "gamma"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_condition_agrees_with_the_root_point_neuron_by_neuron(rule, seed):
    weight, bias, x, bounds = _layer(rule, seed)
    parameters = {"gamma": GAMMA} if rule == "gamma" else {}
    condition = load_condition(rule)
    inside, active = condition(Dense(weight, bias), x, **parameters, **bounds)
    assert inside.shape == active.shape == (x.shape[0], weight.shape[1])
    assert inside.dtype == active.dtype == bool
    direct_inside, direct_active = _direct(rule, weight, bias, x, bounds.get("lower"),
                                           bounds.get("upper"))
    np.testing.assert_array_equal(active, direct_active)
    np.testing.assert_array_equal(inside[active], direct_inside[active])
    # both verdicts occur among active neurons, so the comparison is not vacuous
    assert direct_inside[active].any() and not direct_inside[active].all()


def test_a_root_point_on_the_boundary_is_inside():
    # z+: b + sum_i x_i w_ij^- = 1 - 1 = 0; t* = 2 / 2 = 1, x~ = (0, 1), on the orthant's face
    weight, bias, x = np.array([[1.0], [-1.0]]), np.array([1.0]), np.array([[2.0, 1.0]])
    inside, active = load_condition("zplus")(Dense(weight, bias), x)
    assert active.tolist() == [[True]] and inside.tolist() == [[True]]
    assert _direct("zplus", weight, bias, x)[0].tolist() == [[True]]


@pytest.mark.parametrize("rule", ["lrp0", "w2", "flat"])
def test_real_space_rules_are_always_inside(rule):
    weight, bias, x, _ = _layer("lrp0", 3)
    x = x - 0.5
    inside, active = load_condition(rule)(Dense(weight, bias), x)
    z = x @ weight + bias
    # in R^n the root point is always in the domain once it exists, t* > 0: sum_i q_ij > 0 and,
    # for flat, the unit-weight neuron's own pre-activation sum_i x_i + b_j > 0
    exists = {"lrp0": x @ weight > 0, "w2": np.broadcast_to((weight ** 2).sum(axis=0) > 0, z.shape),
              "flat": x.sum(axis=1, keepdims=True) + bias > 0}[rule]
    np.testing.assert_array_equal(inside, exists)
    np.testing.assert_array_equal(active, z > 0)
    assert inside.shape == z.shape and inside.flags.writeable and active.any()


def test_conv_layers_and_per_sample_bounds():
    """A convolution whose kernel covers the image is a dense layer over the flattened input."""
    rng = np.random.default_rng(5)
    channels, size, n_out = 2, 3, 30
    kernel = rng.normal(size=(n_out, channels, size, size))
    bias = rng.normal(size=n_out) * 4
    lower = -1 - rng.random((channels, size, size))
    upper = 1 + rng.random((channels, size, size))
    x = lower + (upper - lower) * rng.random((3, channels, size, size))
    condition = load_condition("zbox")
    inside, active = condition(Conv2d(kernel, bias), x, lower=lower, upper=upper)
    assert inside.shape == (3, n_out, 1, 1)
    dense = Dense(kernel.reshape(n_out, -1).T, bias)
    dense_inside, dense_active = condition(dense, x.reshape(3, -1), lower=lower.reshape(-1),
                                           upper=upper.reshape(1, -1))
    np.testing.assert_array_equal(active.reshape(3, -1), dense_active)
    np.testing.assert_array_equal(inside.reshape(3, -1), dense_inside)


def test_box_condition_needs_the_bounds():
    weight, bias, x, bounds = _layer("zbox", 6)
    with pytest.raises(KernelArgumentError, match="lower"):
        load_condition("zbox")(Dense(weight, bias), x)
    with pytest.raises(KernelArgumentError, match="broadcast"):
        load_condition("zbox")(Dense(weight, bias), x, lower=bounds["lower"][:2],
                               upper=bounds["upper"])


def test_load_condition_exists_only_for_rules_with_a_closed_form_condition():
    for rule in ("zplus", "zbox", "gamma", "lrp0", "w2", "flat"):
        assert callable(load_condition(rule))
    for rule in ("epsilon", "alphabeta", "bias_neuron", "maxpool"):
        assert load_condition(rule) is None


def test_explain_reports_the_valid_fraction_over_active_neurons():
    """A network small enough to check by hand, with the z+ rule at both dense layers.

    Sample 1, x = (1, 2). Layer 0: z = (4, 1.5, -4). Neuron 1 is active with b + sum x w^- = 1 > 0
    (outside), neuron 2 active with 0.5 - 1 <= 0 (inside), neuron 3 inactive: 1/2. Layer 2 sees
    (4, 1.5, 0): z = (1, -3.5); neuron 1 active with 0 + 1.5 * (-2) <= 0 (inside): 1/1.
    Sample 2, x = 0: neurons 1 and 2 are active through their bias alone, sum_i x_i w_ij^+ = 0,
    so no root point exists along the direction: 0/2. Layer 2 sees (1, 0.5, 0), z = (0, -1.5):
    no active neuron; a layer without active neurons reports 1.
    """
    first = Dense(np.array([[1.0, -1.0, 1.0], [1.0, 1.0, -2.0]]), np.array([1.0, 0.5, -1.0]))
    second = Dense(np.array([[1.0, -1.0], [-2.0, 1.0], [5.0, 5.0]]), np.array([0.0, -1.0]))
    network = Sequential([first, ReLU(), second])
    x = np.array([[1.0, 2.0], [0.0, 0.0]])
    details = explain_details(network, x, rule="zplus")
    assert details.layers[0].root_point_valid.tolist() == [0.5, 0.0]
    assert details.layers[1].root_point_valid is None
    assert details.layers[2].root_point_valid.tolist() == [1.0, 1.0]
    gamma = explain_details(network, x, rule="gamma", gamma=1.0)
    # gamma = 1: layer 0 neuron 1: 2 b + sum x w^- = 2 > 0 (outside); neuron 2: 1 - 1 = 0 (inside)
    assert gamma.layers[0].root_point_valid.tolist() == [0.5, 0.0]
    assert explain_details(network, x, rule="epsilon").layers[0].root_point_valid is None
