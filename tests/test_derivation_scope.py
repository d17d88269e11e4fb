"""Rules say when they are applied outside the sign of z_j their derivation covers.

Each derivation knows the sign of the pre-activation z_j it is derived for
(:attr:`lrp_sym.derivation.Derivation.z_sign`); the generator writes it into the kernel as
``Z_SIGN`` and the engine raises :class:`lrp_num.errors.DerivationScopeWarning` where relevance
arrives at neurons of the other sign (issue 16: zennit's Gamma on a negative logit).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lrp_num import explain
from lrp_num.engine.composites import Composite, LayerRule
from lrp_num.engine.conventions import Conventions
from lrp_num.engine.kernels import load_module
from lrp_num.engine.network import Sequential
from lrp_num.errors import DerivationScopeWarning
from lrp_num.layers import Dense, ReLU
from lrp_sym.registry import load_declarations

#: issue 16's example: two inputs, one output with weights 1 and -2, no bias; z = -1 at x = (1, 1)
ISSUE_NETWORK = Sequential([Dense(np.array([[1.0], [-2.0]]), np.zeros(1))], input_shape=(2,))
ISSUE_X = np.array([[1.0, 1.0]])
ZENNIT_LIKE = Conventions(bias="zennit", eps=1e-6, stabilise="everywhere", by_sign=True)


@pytest.mark.parametrize("name, z_sign", [("gamma_split", "positive"), ("gamma_split_negative", "negative"),
                                          ("epsilon", "any"), ("alphabeta", "any"), ("zplus", "positive"),
                                          ("add_z", "any")])
def test_the_kernel_constant_is_the_derivations_z_sign(name, z_sign):
    derivation = load_declarations()[name].derive()
    assert derivation.z_sign == z_sign
    assert load_module(name).Z_SIGN == z_sign


def test_gamma_split_on_the_issues_negative_logit_warns_and_names_its_counterpart():
    with pytest.warns(DerivationScopeWarning, match=r"gamma_split .*z_j > 0.*layer 0.*gamma_split_negative"):
        relevance = explain(ISSUE_NETWORK, ISSUE_X, rule="gamma_split", gamma=0.25)
    np.testing.assert_allclose(relevance, [[5 / 3, -8 / 3]])


def test_by_sign_applies_the_counterpart_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DerivationScopeWarning)
        relevance = explain(ISSUE_NETWORK, ISSUE_X, rule="gamma_split", gamma=0.25, conventions=ZENNIT_LIKE)
    # zennit 0.5.1's Gamma: (2/3, -5/3) less its stabiliser 1e-6 on |d| = 1.5
    np.testing.assert_allclose(relevance, [[2 / 3, -5 / 3]], rtol=1e-5)


@pytest.mark.parametrize("rule", ["zplus", "w2", "lrp0", "gamma", "flat"])
def test_root_point_rules_warn_on_a_negative_explained_output(rule):
    with pytest.warns(DerivationScopeWarning, match=f"rule {rule} is derived for neurons with z_j > 0"):
        explain(ISSUE_NETWORK, ISSUE_X, rule=rule)


@pytest.mark.parametrize("rule", ["zplus", "gamma_split", "epsilon", "alphabeta"])
def test_no_warning_inside_the_derivation(rule):
    positive = Sequential([Dense(np.array([[1.0], [2.0]]), np.zeros(1))], input_shape=(2,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DerivationScopeWarning)
        explain(positive, ISSUE_X, rule=rule)
        if rule in ("epsilon", "alphabeta"):  # defined for both signs
            explain(ISSUE_NETWORK, ISSUE_X, rule=rule)


def test_a_hidden_neuron_with_negative_z_that_receives_relevance_is_flagged():
    """flat above a ReLU gives relevance to inactive neurons too; z+ below them is outside DTD."""
    weight = np.array([[1.0, -1.0], [1.0, -1.0]])  # hidden z = (2, -2) at x = (1, 1)
    network = Sequential([Dense(weight, np.zeros(2)), ReLU(), Dense(np.ones((2, 1)), np.zeros(1))],
                         input_shape=(2,))
    rules = {0: LayerRule("zplus", {}), 2: LayerRule("flat", {})}
    composite = Composite("zplus-below-flat", lambda index, layer, first, box: rules[index])
    with pytest.warns(DerivationScopeWarning, match="at layer 0 Dense"):
        explain(network, ISSUE_X, composite=composite)
    rules[2] = LayerRule("zplus", {})  # z+ above passes nothing to x_j = 0: inside the derivation
    with warnings.catch_warnings():
        warnings.simplefilter("error", DerivationScopeWarning)
        explain(network, ISSUE_X, composite=composite)


def test_the_warning_can_be_made_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DerivationScopeWarning)
        with pytest.raises(DerivationScopeWarning):
            explain(ISSUE_NETWORK, ISSUE_X, rule="zplus")


@pytest.mark.filterwarnings("default::lrp_num.errors.DerivationScopeWarning")  # pyproject ignores it elsewhere
def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    from lrp_num.cli import main
    from lrp_num import load_builtin

    network = load_builtin("digits-mlp").network
    x = np.random.default_rng(0).random((1, 64)) * 16
    target = int(np.argmin(network.forward(x)[0]))  # a negative logit
    np.save(tmp_path / "x.npy", x)
    assert main(["explain", "--model", "digits-mlp", "--input", str(tmp_path / "x.npy"), "--rule", "zplus",
                 "--target", str(target), "--out", str(tmp_path / "r.npy")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [line for line in err if line.startswith("lrp explain: warning: rule zplus is derived for")]
    assert len(err) == 1 and "layer 4 Dense(16 -> 10)" in err[0]
