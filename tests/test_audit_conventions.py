"""Conventions an attribution is audited against: the bias as a neuron (Bach et al. 2015) and a
user's own convention file (``--convention``). Each correct convention passes; each defect,
computed the way a faulty implementation would, is flagged. No torch needed.

The textbook attributions are computed here by a plain NumPy replica of the paper's formulas,
sharing no code with the engine or the reference.
"""

import numpy as np
import pytest

from lrp_num.audit import audit_attribution
from lrp_num.engine.network import Sequential
from lrp_num.layers import Dense, ReLU

DPS = 30
TOL = 1e-9


def dense_model(seed=0):
    """A 6-5-4-3 ReLU net with biases of both signs; inputs of both signs."""
    rng = np.random.default_rng(seed)
    layers = [Dense(rng.normal(size=(6, 5)), rng.normal(size=5)), ReLU(),
              Dense(rng.normal(size=(5, 4)), rng.normal(size=4)), ReLU(),
              Dense(rng.normal(size=(4, 3)), rng.normal(size=3) + 2.0)]
    return Sequential(layers, input_shape=(6,)), rng.normal(size=(3, 6))


def textbook_lrp(network, x, targets, layer_rule):
    """Bach et al. 2015's backward pass: ReLU passes relevance, each Dense applies ``layer_rule``."""
    activations = network.forward_trace(np.asarray(x, dtype=np.float64))  # the input of every layer, then f(x)
    relevance = np.zeros_like(activations[-1])
    rows = np.arange(len(x))
    relevance[rows, targets] = activations[-1][rows, targets]
    for layer, a in zip(reversed(network.layers), reversed(activations[:-1])):
        if isinstance(layer, Dense):
            relevance = layer_rule(a, layer.weight, layer.bias, relevance)
    return relevance


def ratio(numerator, denominator):
    """numerator / denominator with 0 / 0 = 0 (the paper's convention for an empty group)."""
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def bach_alpha_beta(alpha, beta, swapped_bias=False):
    """Eq. (60): z_j^+- = sum_i (x_i w_ij)^+- + b_j^+- (the bias neuron), no stabiliser.

    ``swapped_bias``: a defect, b_j^- in the positive group and b_j^+ in the negative one.
    """
    def rule(a, w, b, upper):
        z = a[:, :, None] * w[None]                                  # z_ij, (batch, i, j)
        zp, zn = np.maximum(z, 0), np.minimum(z, 0)
        bp, bn = np.maximum(b, 0), np.minimum(b, 0)
        if swapped_bias:
            bp, bn = bn, bp
        dp, dn = zp.sum(axis=1) + bp, zn.sum(axis=1) + bn
        return (alpha * zp * ratio(upper, dp)[:, None] - beta * zn * ratio(upper, dn)[:, None]).sum(axis=2)
    return rule


def bach_epsilon(eps):
    """Eq. (58): z_j = sum_i x_i w_ij + b_j, R_i = sum_j z_ij / (z_j + eps sign(z_j)) R_j."""
    def rule(a, w, b, upper):
        z = a @ w + b
        d = z + eps * np.where(z >= 0, 1.0, -1.0)
        return a * ((upper / d) @ w.T)
    return rule


def targets_of(network, x):
    return network.forward(x).argmax(axis=1)


@pytest.mark.parametrize("alpha,beta", [(2.0, 1.0), (1.0, 0.0)])
def test_textbook_alpha_beta_with_the_bias_as_a_neuron_passes_and_is_identified(alpha, beta):
    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    relevance = textbook_lrp(network, x, targets, bach_alpha_beta(alpha, beta))
    report = audit_attribution(network, x, relevance, rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               parameters={"alpha": alpha, "beta": beta})
    assert report.ok, report.verdicts
    assert "bias-neuron" in report.verdicts[0]
    matched = {a.library_rule: a.own_relative for a in report.layers}
    assert matched["bias-neuron (Bach et al. 2015)"] < TOL
    assert matched["zennit-0.5.1"] > TOL  # zennit's 1e-6 stabiliser everywhere is another convention


def test_textbook_epsilon_with_the_bias_as_a_neuron_passes():
    network, x = dense_model(seed=2)
    targets = targets_of(network, x)
    relevance = textbook_lrp(network, x, targets, bach_epsilon(0.01))
    report = audit_attribution(network, x, relevance, rule="epsilon", target=targets, dps=DPS, tolerance=TOL,
                               parameters={"epsilon": 0.01}, library="bias-neuron")
    assert report.ok, report.verdicts
    assert report.layers[0].own_relative < TOL


def test_alpha_beta_with_the_bias_neuron_in_the_wrong_group_is_flagged():
    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    faulty = textbook_lrp(network, x, targets, bach_alpha_beta(1.0, 0.0, swapped_bias=True))
    report = audit_attribution(network, x, faulty, rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               parameters={"alpha": 1.0, "beta": 0.0})
    assert not report.ok
    assert min(a.own_relative for a in report.layers) > 1e-3 and report.layers[0].dtd_relative > 1e-3
