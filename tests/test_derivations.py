"""Every shipped derivation: proof statuses, and the DTD rules against the literature's closed forms.

Closed forms are those of FIELD_NOTES.md section 2 (Montavon et al. 2017, 2019). Each is checked
twice: as a SymPy identity (per sign case of w_ij, sums over i with symbolic n) and numerically
on random layers at 50 digits.
"""

from __future__ import annotations

import functools
import random

import mpmath
import pytest
from sympy import Expr, Max, Min, Rational, S, Sum, simplify

from lrp_sym import BOX, ORTHANT, REAL_SPACE, RootPointRule, Status, w_ij, x_i
from lrp_sym.numeric import LayerInstance, sample_instance
from lrp_sym.registry import load_declarations
from lrp_sym.sums import by_weight_sign, combine_sums, expand_sums, over_inputs
from lrp_sym.symbols import (R, b, bn_beta, bn_eps, bn_gamma, bn_mean, bn_var, gamma, h, i, j, l,
                             n, p, w, x)

DECLARATIONS = load_declarations()
NEW_RULES = {"sumpool", "avgpool", "lppool", "maxpool", "batchnorm", "sensitivity", "taylor",
             "add_z", "add_zplus", "add_epsilon", "affine_channel", "concat"}


@pytest.fixture(autouse=True)
def fifty_digits():
    """Arithmetic on the 50-digit values stays at 50 digits."""
    with mpmath.workdps(50):
        yield


@functools.lru_cache(maxsize=None)
def derived(name: str):
    return DECLARATIONS[name].derive()


def test_registry_has_every_rule():
    assert NEW_RULES | {"w2", "zplus", "zbox", "lrp0", "gamma", "flat", "epsilon", "alphabeta",
                        "bias_neuron"} <= set(DECLARATIONS)


@pytest.mark.parametrize("name", sorted(DECLARATIONS))
def test_every_proof_has_its_expected_status(name):
    derivation = derived(name)
    assert derivation.proofs and derivation.rows
    wrong = [(proof.name, proof.status.value, proof.expected.value, proof.method)
             for proof in derivation.proofs if not proof.as_expected]
    assert not wrong
    for proof in derivation.proofs:
        if proof.status is Status.REFUTED:
            assert proof.counterexample, proof.name


# -- closed forms of the DTD rules ----------------------------------------------------------------

W_PLUS, W_MINUS = Max(0, w[i, j]), Min(0, w[i, j])

#: rule -> (domain, q_ij, left side of "condition <= 0" or None for "always")
CLOSED_FORMS = {
    "w2": (REAL_SPACE, w[i, j] ** 2, None),
    "zplus": (ORTHANT, x[i] * W_PLUS, over_inputs(x[i] * W_MINUS) + b[j]),
    "zbox": (BOX, x[i] * w[i, j] - l[i] * W_PLUS - h[i] * W_MINUS,
             over_inputs(l[i] * W_PLUS + h[i] * W_MINUS) + b[j]),
    "lrp0": (REAL_SPACE, x[i] * w[i, j], None),
    "gamma": (ORTHANT, x[i] * (w[i, j] + gamma * W_PLUS),
              gamma * over_inputs(x[i] * W_MINUS) + (1 + gamma) * b[j]),
    "flat": (REAL_SPACE, S.One, None),
}


def closed_step(name: str) -> Expr:
    """t* = z_j / sum_i q_ij (the flat rule's z_j has unit weights)."""
    _, q, _ = CLOSED_FORMS[name]
    weights = S.One if name == "flat" else w[i, j]
    return (over_inputs(x[i] * weights) + b[j]) / over_inputs(q)


def zero_per_sign_case(expr: Expr) -> bool:
    """expr = sum_i f_i + rest with f_i = 0 in both sign cases of w_ij and rest = 0."""
    expr = expr.replace(lambda e: isinstance(e, Sum) and not e.function.has(i), lambda e: e.doit())
    summand, rest = combine_sums(expr)
    return simplify(rest) == 0 and all(value == 0 for _, value in by_weight_sign(summand))


def equivalent_conditions(derived_condition, closed_lhs) -> bool:
    """The same inequality "lhs <= 0" up to a positive factor (or both "always")."""
    if closed_lhs is None:
        return derived_condition is S.true
    lhs = expand_sums(derived_condition.lhs)
    factor = simplify(lhs.coeff(b[j]) / expand_sums(closed_lhs).coeff(b[j]))
    return bool(factor.is_positive) and zero_per_sign_case(lhs - factor * closed_lhs)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_closed_forms_symbolically(name):
    results = derived(name).results
    _, q, condition = CLOSED_FORMS[name]
    assert all(value == 0 for _, value in by_weight_sign(results["q"] - q))
    # t* = z_j / D: the derived denominator D equals sum_i q_ij
    denominator = simplify(results["preactivation"] / results["step"])
    assert zero_per_sign_case(denominator - over_inputs(q))
    assert equivalent_conditions(results["domain_condition"], condition)


def close(a, b_) -> bool:
    return abs(a - b_) <= mpmath.mpf(10) ** -40 * (1 + abs(a) + abs(b_))


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_closed_forms_numerically(name):
    results = derived(name).results
    domain, q, condition = CLOSED_FORMS[name]
    rng = random.Random(11)
    for trial in range(6):
        instance = sample_instance(domain, rng, size=3 + trial % 2)
        if instance.evaluate(over_inputs(q)) == 0:
            continue  # t* undefined: no input passes the direction
        assert close(instance.evaluate(results["step"]), instance.evaluate(closed_step(name)))
        for m in range(1, instance.size + 1):
            assert close(instance.evaluate(results["q"], m), instance.evaluate(q, m))
        if condition is not None:
            derived_lhs = instance.evaluate(results["domain_condition"].lhs)
            closed_lhs = instance.evaluate(condition)
            assert (derived_lhs <= 0) == (closed_lhs <= 0)


# -- the engine rejects what is wrong ---------------------------------------------------------------

def test_direction_leaving_the_orthant_is_refuted():
    derivation = RootPointRule("shifted", "x_i + 1 on the orthant", "", x_i + 1, ORTHANT).derive()
    assert derivation.proof("domain_standard").status is Status.REFUTED
    assert derivation.proof("domain_standard").counterexample
    assert derivation.proof("domain").status is not Status.PROVED


def test_w2_direction_on_the_orthant_is_not_proved_in_domain():
    derivation = RootPointRule("w2_orthant", "w^2 on the orthant", "", w_ij, ORTHANT).derive()
    assert derivation.proof("domain").status is Status.UNDECIDED  # no layer-level condition
    assert derivation.proof("domain_standard").status is Status.REFUTED
    assert not derivation.as_expected


def test_broken_positivity_claim_is_refuted():
    derivation = RootPointRule("zplus_broken", "z+ claimed with q = x w", "", x_i, ORTHANT).derive()
    assert derivation.results["q"] == x[i] * w[i, j]
    assert derivation.proof("positivity").status is Status.REFUTED
    assert not derivation.as_expected


# -- the new layers, numerically --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["sumpool", "avgpool"])
def test_pooling_is_the_z_rule(name):
    results = derived(name).results
    assert results["step"] == 1 and results["root_point"] == 0
    rng = random.Random(3)
    for _ in range(4):
        instance = sample_instance(ORTHANT, rng, size=4)
        total = sum(instance.evaluate(x[i], m) for m in range(1, 5))
        for m in range(1, 5):
            expected = instance.evaluate(x[i] * R[j], m) / total
            assert close(instance.evaluate(results["relevance"], m), expected)


def test_lp_pooling_conserves_for_random_p():
    relevance = derived("lppool").results["relevance"]
    rng = random.Random(4)
    for size in (2, 5):
        instance = sample_instance(ORTHANT, rng, size=size)
        for m in range(1, size + 1):
            instance.values[x[m]] += Rational(1, 10)
        passed = sum(instance.evaluate(relevance, m) for m in range(1, size + 1))
        assert close(passed, instance.evaluate(R[j]))


def test_max_pooling_shares_match_large_p():
    from lrp_sym.layers import m
    results = derived("maxpool").results
    assert results["winner_share"] == 1 / m and results["loser_share"] == 0
    share = derived("lppool").results["share"]
    values = [Rational(3), Rational(3), Rational(2), Rational(1, 2)]  # two tied maxima
    instance = LayerInstance(4, {x[k + 1]: v for k, v in enumerate(values)})
    instance.values[p] = Rational(400)
    shares = [instance.evaluate(share, k) for k in range(1, 5)]
    winner = results["winner_share"].subs(m, 2)
    assert abs(shares[0] - mpmath.mpf(winner.p) / winner.q) < 1e-40
    assert shares[2] < 1e-40 and shares[3] < 1e-40


def test_batchnorm_fold_numerically():
    results = derived("batchnorm").results
    assert not results["folded_weight"].has(x) and not results["folded_bias"].has(x)
    rng = random.Random(6)
    instance = sample_instance(REAL_SPACE, rng, size=3)
    instance.values.update({bn_gamma: Rational(3, 2), bn_beta: Rational(-1, 3),
                            bn_mean: Rational(1, 5), bn_var: Rational(2), bn_eps: Rational(1, 1000)})
    with mpmath.workdps(50):
        sigma = mpmath.sqrt(mpmath.mpf(2) + mpmath.mpf(1) / 1000)
        z = instance.evaluate(over_inputs(x[i] * w[i, j]) + b[j])
        direct = mpmath.mpf(3) / 2 * (z - mpmath.mpf(1) / 5) / sigma - mpmath.mpf(1) / 3
    assert close(instance.evaluate(results["folded"]), direct)
    assert close(instance.evaluate(results["folded_weight"], 2),
                 instance.evaluate(w[i, j], 2) * mpmath.mpf(3) / 2 / sigma)


def test_taylor_and_sensitivity_numerically():
    from lrp_sym.networks import B, W
    taylor, sensitivity = derived("taylor").results, derived("sensitivity").results
    instance = LayerInstance(3, {x[1]: Rational(1), x[2]: Rational(-1, 2), x[3]: Rational(2),
                                 W[1]: Rational(1, 3), W[2]: Rational(-1), W[3]: Rational(1, 4),
                                 B: Rational(1, 5)})
    value = instance.evaluate(taylor["network"])
    relevances = [instance.evaluate(taylor["relevance"], m) for m in range(1, 4)]
    assert close(sum(relevances), value)
    assert close(instance.evaluate(over_inputs(taylor["relevance"])), value)
    squares = [instance.evaluate(sensitivity["relevance_affine"], m) for m in range(1, 4)]
    assert close(sum(squares), mpmath.mpf(1) / 9 + 1 + mpmath.mpf(1) / 16)
    assert not close(sum(squares), value)


def test_sums_have_symbolic_width():
    for name, key in (("sumpool", "relevance"), ("avgpool", "preactivation"),
                      ("lppool", "relevance"), ("taylor", "step"), ("sensitivity", "squared_norm")):
        sums = derived(name).results[key].atoms(Sum)
        assert sums and any(s.limits == ((i, 1, n),) for s in sums), name
