"""explain's checks of its arguments and of the relevance it returns (review findings)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lrp_num import Conventions, Sequential, explain, explain_details, load_builtin
from lrp_num.engine.conventions import BIAS_CONVENTIONS
from lrp_num.errors import (DomainError, KernelArgumentError, LRPError, MissingBoundsError,
                            NonFiniteError, ShapeError, UnknownRuleError)
from lrp_num.engine.kernels import known_rules, layer_kernels, load_kernel, load_module
from lrp_num.layers import Conv2d, Dense, Flatten, Identity, MaxPool2d, ReLU, SumPool2d

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def mlp():
    return load_builtin("digits-mlp")


def test_missing_bounds_error_lives_in_errors_and_explain():
    from lrp_num.engine.explain import MissingBoundsError as alias
    assert alias is MissingBoundsError and issubclass(MissingBoundsError, LRPError)


# 1, 13: the input box ----------------------------------------------------------------------

@pytest.mark.parametrize("domain", [(0, np.inf), (-np.inf, np.inf)])
def test_unbounded_box_is_an_error_not_nan(mlp, domain):
    with pytest.raises(NonFiniteError, match="finite"):
        explain(mlp.network, mlp.test_images[:2], composite="deep-taylor", input_domain=domain)


@pytest.mark.parametrize(("domain", "error", "message"), [
    ((np.zeros(3), 1), ShapeError, "does not fit inputs of shape"),
    (("a", "b"), ShapeError, "numbers or numeric arrays"),
    ((0, 1, 2), ShapeError, "pair"),
    ("box", ShapeError, "pair"),
])
def test_bad_input_domains_are_documented_errors(mlp, domain, error, message):
    with pytest.raises(error, match=message):
        explain(mlp.network, mlp.test_images[:2], composite="deep-taylor", input_domain=domain)


def test_box_of_image_shape_applies_through_flatten():
    dense = Dense(RNG.standard_normal((4, 3)), RNG.standard_normal(3))
    flat = Sequential([Flatten(), Identity(), dense])
    x = RNG.random((2, 1, 2, 2))
    r = explain(flat, x, rule="zbox", input_domain=(np.zeros((1, 2, 2)), np.ones((1, 2, 2))),
                target=np.ones((2, 3)))
    r_direct = explain(Sequential([dense]), x.reshape(2, 4), rule="zbox", input_domain=(0, 1),
                       target=np.ones((2, 3)))
    np.testing.assert_allclose(r.reshape(2, 4), r_direct)


# 21, 22: where the box applies, and inputs outside it ---------------------------------------

def test_box_does_not_apply_after_a_pooling_layer():
    net = Sequential([SumPool2d(2), Flatten(), Dense(RNG.standard_normal((4, 3)), RNG.standard_normal(3))])
    x = RNG.random((2, 1, 4, 4))
    with pytest.raises(MissingBoundsError, match="SumPool2d"):
        explain(net, x, composite="deep-taylor", input_domain=(0, 1))
    assert np.isfinite(explain(net, x, composite="deep-taylor")).all()  # w2 at the input


def test_inputs_outside_the_box_are_a_domain_error(mlp):
    x = mlp.test_images[:2] * 3 - 1
    with pytest.raises(DomainError, match="outside the declared input domain"):
        explain_details(mlp.network, x, composite="deep-taylor", input_domain=mlp.input_domain)
    # rules that do not use the box do not check it
    explain(mlp.network, x, composite="epsilon-plus", input_domain=mlp.input_domain)
    # inputs on the boundary, within rounding, are inside
    edge = np.clip(mlp.test_images[:2], 0, 1)
    edge[0, 0], edge[1, 0] = 1 + 1e-16, -1e-17
    explain(mlp.network, edge, composite="deep-taylor", input_domain=mlp.input_domain)


# 2: rule parameters and non-finite relevance -------------------------------------------------

@pytest.mark.parametrize(("rule", "parameters", "message"), [
    ("gamma", {"gamma": float("nan")}, "finite"),
    ("gamma", {"gamma": -1.0}, ">= 0"),
    ("epsilon", {"epsilon": -0.25}, ">= 0"),
    ("epsilon", {"epsilon": float("inf")}, "finite"),
    ("alphabeta", {"alpha": 2.0, "beta": -1.0}, ">= 0"),
    ("alphabeta", {"alpha": float("inf"), "beta": 1.0}, "finite"),
    ("gamma", {"gamma": "0.25"}, "must be a number"),
    ("gamma", {"gamma": np.ones(2)}, "must be a number"),
])
def test_invalid_rule_parameters(mlp, rule, parameters, message):
    with pytest.raises(KernelArgumentError, match=message):
        explain(mlp.network, mlp.test_images[:2], rule=rule, **parameters)


def test_float32_overflow_is_an_error_naming_the_layer():
    net = Sequential([Dense(np.array([[1e-20, 0.0], [0.0, 1.0]]), np.array([1.0, 0.0])), ReLU(),
                      Dense(np.array([[1.0], [1.0]]), np.array([0.0]))])
    x = np.array([[1e-20, 1.0]], dtype=np.float32)
    with np.errstate(all="ignore"):
        for rule in ("zplus", "lrp0"):
            with pytest.raises(NonFiniteError, match=r"layer 0 .*float32 overflow"):
                explain(net, x, rule=rule)
    assert np.isfinite(explain(net, x.astype(np.float64), rule="zplus")).all()


def test_empty_batch_is_a_shape_error(mlp):
    with pytest.raises(ShapeError, match="empty"):
        explain(mlp.network, np.ones((0, 64)), rule="zplus")


# 3: parameters with a composite --------------------------------------------------------------

def test_rule_parameters_with_a_composite_are_an_error(mlp):
    with pytest.raises(KernelArgumentError, match="a composite sets its own"):
        explain(mlp.network, mlp.test_images[:2], composite="epsilon-plus", epsilon=100.0)


# 11: layer kernels are not rules ------------------------------------------------------------

def test_layer_kernels_are_not_rules(mlp):
    assert set(layer_kernels()) == {"maxpool", "softmax", "product_uniform", "matmul_epsilon", "matmul_cp"}
    assert not set(layer_kernels()) & set(known_rules())
    assert callable(load_kernel("maxpool"))
    with pytest.raises(UnknownRuleError, match="not a rule.*zplus"):
        explain(mlp.network, mlp.test_images[:2], rule="maxpool")
    from lrp_num import Composite, LayerRule
    composite = Composite("bad", lambda *_: LayerRule("maxpool"))
    with pytest.raises(UnknownRuleError, match="not a rule"):
        explain(mlp.network, mlp.test_images[:2], composite=composite)


def test_epsilon_gamma_box_without_a_box_is_missing_bounds(mlp):
    with pytest.raises(MissingBoundsError, match="input_domain"):
        explain(mlp.network, mlp.test_images[:2], composite="epsilon-gamma-box")


# 7, 8: conventions ----------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [-1, float("nan"), float("inf"), "1e-6", None])
def test_bad_eps_is_a_kernel_argument_error(eps):
    with pytest.raises(KernelArgumentError, match="eps"):
        Conventions(eps=eps)


@pytest.mark.parametrize("bias", BIAS_CONVENTIONS)
@pytest.mark.parametrize("rule", [r for r in known_rules() if load_module(r).NEURON == "linear"])
@pytest.mark.parametrize("stabilise", ["zero", "everywhere"])
def test_every_convention_runs_every_rule(bias, rule, stabilise):
    """Every rule for linear neurons (the Add rules are run on graphs in test_graph.py)."""
    dense = Dense(RNG.standard_normal((5, 3)), RNG.standard_normal(3))
    conv = Sequential([Conv2d(RNG.standard_normal((3, 2, 2, 2)), RNG.standard_normal(3)), Flatten()])
    x = RNG.random((2, 5))
    conventions = Conventions(bias=bias, stabilise=stabilise)
    r = explain(Sequential([dense]), x, rule=rule, target=np.ones((2, 3)), conventions=conventions,
                input_domain=(0, 1))
    assert r.shape == x.shape and np.isfinite(r).all()
    xc = RNG.random((2, 2, 2, 2))
    rc = explain(conv, xc, rule=rule, target=np.ones((2, 3)), conventions=conventions,
                 input_domain=(0, 1))
    assert rc.shape == xc.shape and np.isfinite(rc).all()


def test_captum_alpha_beta_puts_the_bias_in_the_positive_term():
    dense = Dense(np.array([[1.0, -1.0], [2.0, 0.5]]), np.array([0.5, 0.25]))
    x = np.array([[1.0, 2.0]])
    r = explain(Sequential([dense]), x, rule="alphabeta", alpha=1.0, beta=0.0,
                target=np.ones((1, 2)), conventions=Conventions(bias="captum"))
    z_plus = np.maximum(x.T * dense.weight, 0)
    expected = (z_plus / (z_plus.sum(0) + dense.bias)).sum(1)
    np.testing.assert_allclose(r[0], expected)


# 6 and the kernel cache: user kernel folders ----------------------------------------------------

def _write_user_kernel(folder, scale: float) -> None:
    """A user 'zplus' kernel that scales the shipped result (enough to tell the two apart)."""
    folder.mkdir(exist_ok=True)
    (folder / "zplus.py").write_text(
        "from lrp_num.engine.kernels import load_kernel\n"
        "BOUNDS = ()\nN_TERMS = 1\n"
        "def relevance(op, x, relevance_out, *, eps=1e-06, stabilise='zero', bias_shares=None):\n"
        f"    return {scale!r} * load_kernel('zplus')(op, x, relevance_out, eps=eps, stabilise=stabilise,"
        " bias_shares=bias_shares)\n")


def test_kernel_folder_falls_back_to_shipped_kernels_for_pooling_and_other_rules(tmp_path):
    cnn = load_builtin("digits-cnn")
    x = cnn.test_images[:1]
    _write_user_kernel(tmp_path / "k", 1.0)
    assert any(isinstance(layer, MaxPool2d) for layer in cnn.network.layers)
    np.testing.assert_allclose(explain(cnn.network, x, rule="zplus", kernel_folder=tmp_path / "k"),
                               explain(cnn.network, x, rule="zplus"))
    np.testing.assert_allclose(explain(cnn.network, x, rule="w2", kernel_folder=tmp_path / "k"),
                               explain(cnn.network, x, rule="w2"))
    with pytest.raises(UnknownRuleError, match="no kernel folder"):
        explain(cnn.network, x, rule="zplus", kernel_folder=tmp_path / "absent")


def test_changed_user_kernels_are_reloaded(tmp_path, mlp):
    x = mlp.test_images[:1]
    shipped = explain(mlp.network, x, rule="zplus")
    _write_user_kernel(tmp_path / "k", 1.0)
    np.testing.assert_allclose(explain(mlp.network, x, rule="zplus", kernel_folder=tmp_path / "k"), shipped)
    _write_user_kernel(tmp_path / "k", 2.0)
    path = tmp_path / "k" / "zplus.py"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later regeneration
    np.testing.assert_allclose(explain(mlp.network, x, rule="zplus", kernel_folder=tmp_path / "k"),
                               8 * shipped)  # three Dense layers: 2**3


# 20: generated kernels check their box bounds ---------------------------------------------------

def test_zbox_kernel_rejects_bounds_that_do_not_fit():
    kernel = load_kernel("zbox")
    dense = Dense(np.ones((4, 3)), np.zeros(3))
    x = RNG.random((2, 4))
    with pytest.raises(KernelArgumentError, match="does not broadcast"):
        kernel(dense, x, np.ones((2, 3)), lower=np.zeros(3), upper=1)
    with pytest.raises(KernelArgumentError, match="numeric"):
        kernel(dense, x, np.ones((2, 3)), lower="a", upper=1)
    r = kernel(dense, x, np.ones((2, 3)), lower=np.zeros((2, 4)), upper=np.ones(4))
    assert r.shape == x.shape


def test_non_finite_relevance_is_named_at_the_node_where_it_first_appears():
    # layer 2's z+ denominator underflows in float32 (1e-20 * 1e-20): its relevance overflows
    # to Inf, which every layer below turns into NaN or Inf; the third input is 0, so layer 0
    # also meets a zero denominator under (NaN) relevance with eps = 0
    identity = np.eye(3)
    net = Sequential([Dense(identity, np.zeros(3)), ReLU(),
                      Dense(np.array([[1e-20, 0.0], [0.0, 1.0], [1.0, 0.0]]), np.array([1.0, 0.0])),
                      ReLU(), Dense(np.array([[1.0], [1.0]]), np.array([0.0]))])
    x = np.array([[1e-20, 1.0, 0.0]], dtype=np.float32)
    with np.errstate(all="ignore"):
        with pytest.raises(NonFiniteError, match=r"below layer 2 .*float32 overflow"):
            explain(net, x, rule="zplus")
        # without the stabiliser layer 0 would raise ZeroDenominatorError on the NaN arriving
        # there: the first problem on the way down is still the one reported
        with pytest.raises(NonFiniteError, match=r"below layer 2 "):
            explain(net, x, rule="zplus", conventions=Conventions(eps=0.0))
        with pytest.raises(NonFiniteError, match=r"below layer 2 "):  # by_sign: checked node by node
            explain(net, x, rule="zplus", conventions=Conventions(by_sign=True))
    assert np.isfinite(explain(net, x.astype(np.float64), rule="zplus")).all()
