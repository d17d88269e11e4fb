"""Cross-rule identities: statuses, and the z^B limits checked numerically at 50 digits."""

from __future__ import annotations

import functools
import random

import mpmath
import pytest
from sympy import Max, Min, Rational

from lrp_sym import BOX, ORTHANT, Status
from lrp_sym.identities import IDENTITIES, _zero_in_every_case, prove_identities
from lrp_sym.numeric import sample_instance
from lrp_sym.registry import load_declarations
from lrp_sym.sums import over_inputs
from lrp_sym.symbols import gamma, h, i, j, l, w, x

EXPECTED = {
    "gamma_zero_is_lrp0": Status.PROVED,
    "gamma_infinity_is_zplus": Status.PROVED,
    "alphabeta_1_0_is_zplus": Status.PROVED,
    "flat_is_w2_unit_weights": Status.PROVED,
    "sumpool_is_lrp0_unit_weights": Status.PROVED,
    "zbox_l0_h_infinity_is_zplus": Status.REFUTED,
    "zbox_box_0_x_is_zplus": Status.PROVED,
}


@functools.lru_cache(maxsize=None)
def rules():
    declarations = load_declarations()
    return {name: declarations[name].derive()
            for name in ("alphabeta", "flat", "gamma", "lrp0", "sumpool", "w2", "zbox", "zplus")}


@functools.lru_cache(maxsize=None)
def identities():
    return {proof.name: proof for proof in prove_identities(rules())}


def test_every_identity_is_listed():
    assert set(identities()) == set(EXPECTED) and len(IDENTITIES) == len(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_identity_status(name):
    proof = identities()[name]
    assert proof.status is EXPECTED[name] and proof.expected is EXPECTED[name], proof.method
    if proof.status is Status.REFUTED:
        assert proof.counterexample


def test_zbox_h_infinity_reports_the_actual_limit():
    method = identities()["zbox_l0_h_infinity_is_zplus"].method
    assert "h_i w_ij^- / sum_i h_i w_ij^-" in method and "not z+" in method


def test_a_wrong_special_case_is_not_proved():
    q_gamma, q_zero = rules()["gamma"].results["q"], rules()["lrp0"].results["q"]
    assert not _zero_in_every_case(q_gamma.subs(gamma, 1) - q_zero)


def ratio(q, instance, index):
    return instance.evaluate(q, index) / instance.evaluate(over_inputs(q))


def test_zbox_with_huge_upper_bound_is_the_inhibitory_share():
    """l = 0, h = 10^30 eta: R_ij / R_j -> h_i w^- / sum h w^-, not x_i w^+ / sum x w^+."""
    q_box = rules()["zbox"].results["q"]
    rng = random.Random(8)
    with mpmath.workdps(50):
        instance = sample_instance(ORTHANT, rng, size=4)
        instance.values[w[1, j]], instance.values[w[2, j]] = Rational(1, 2), Rational(-3, 4)
        for m in range(1, 5):
            instance.values[l[m]] = Rational(0)
            instance.values[h[m]] = Rational(10) ** 30 * Rational(m, 3)
        inhibitory = Min(0, w[i, j]) * h[i]
        excitatory = Max(0, w[i, j]) * x[i]
        for m in range(1, 5):
            assert abs(ratio(q_box, instance, m) - ratio(inhibitory, instance, m)) < 1e-25
        assert ratio(excitatory, instance, 1) > 0.01 and abs(ratio(q_box, instance, 1)) < 1e-25


def test_zbox_on_the_box_zero_to_x_is_zplus_numerically():
    q_box, q_plus = rules()["zbox"].results["q"], rules()["zplus"].results["q"]
    rng = random.Random(9)
    with mpmath.workdps(50):
        for _ in range(5):
            instance = sample_instance(BOX, rng, size=3)
            for m in range(1, 4):
                instance.values[x[m]] = abs(instance.values[x[m]])
                instance.values[l[m]], instance.values[h[m]] = Rational(0), instance.values[x[m]]
            for m in range(1, 4):
                assert abs(instance.evaluate(q_box, m) - instance.evaluate(q_plus, m)) < 1e-40
