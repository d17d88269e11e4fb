"""Proof statuses that mean what they say: proved (symbolic), checked (sampling), refuted,
assumed, undecided; an empty sampling check is an error; the symbolic domain-condition proof;
``lrp derive --proof`` and the summary line; counterexample keys rendered as text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sympy import Le, Max, Min, S

import lrp_sym.proofs as proofs
import lrp_sym.ratio_rules as ratio_rules
import lrp_sym.root_point as root_point
from lrp_num.cli import main
from lrp_sym import BOX, ORTHANT, REAL_SPACE, RootPointRule, Status, indicator_positive, w_ij, x_i
from lrp_sym.commands.derive import summary_line
from lrp_sym.domain_proof import prove_domain_condition
from lrp_sym.numeric import DIGITS, sample_instance
from lrp_sym.proofs import EmptyCheckError, Proof, prove_zero
from lrp_sym.registry import load_declarations
from lrp_sym.render import render_rule_page
from lrp_sym.sums import over_inputs, sums_as_symbols
from lrp_sym.symbols import b, i, j, w, x

ROOT_POINT_RULES_WITH_A_DOMAIN = ("zplus", "zbox", "gamma", "sumpool", "avgpool")
ROOT_POINT_RULES_ON_RN = ("w2", "flat", "lrp0", "add_z", "add_zplus")


@pytest.fixture(scope="module")
def derived():
    declarations = load_declarations()
    names = ROOT_POINT_RULES_WITH_A_DOMAIN + ROOT_POINT_RULES_ON_RN + ("epsilon", "maxpool",
                                                                       "sensitivity", "taylor")
    return {name: declarations[name].derive() for name in names}


# -- statuses -------------------------------------------------------------------------------------

def test_status_has_checked_and_assumed():
    assert {status.value for status in Status} == {"proved", "checked", "refuted", "assumed",
                                                   "undecided"}


def test_no_sampling_argument_is_called_proved(derived):
    """Every proof whose status came from sampling records it and is checked or refuted."""
    sampled = [proof for derivation in derived.values() for proof in derivation.proofs
               if proof.sampling is not None]
    assert sampled
    for proof in sampled:
        assert proof.status in (Status.CHECKED, Status.REFUTED), proof.name
        assert proof.sampling.samples > 0 and proof.sampling.dps == DIGITS


def test_domain_check_is_checked_with_samples_seed_and_digits(derived):
    proof = derived["zplus"].proof("domain_check")
    assert proof.status is Status.CHECKED and proof.as_expected
    assert proof.sampling.seed == root_point.DOMAIN_CHECK_SEED
    assert f"{proof.sampling.samples} samples, seed {proof.sampling.seed}, {DIGITS} digits" \
        in proof.method


def test_prove_zero_without_simplification_is_checked_not_proved():
    # two spellings of sum_i x_i w_ij^+ that simplify() does not identify: only sampling
    # supports the claim, so it is checked, with the number of layers and the seed
    expr = (over_inputs(x[i] * Max(0, w[i, j]))
            - over_inputs(x[i] * w[i, j] * indicator_positive(w[i, j])))
    proof = prove_zero("spellings", "two spellings of one sum", expr,
                       lambda rng: sample_instance(REAL_SPACE, rng), seed=4)
    if proof.status is Status.PROVED:
        pytest.skip("this SymPy simplifies the expression")
    assert proof.status is Status.CHECKED and not proof.as_expected
    assert proof.sampling.samples == proofs.SEARCH_TRIALS and proof.sampling.seed == 4
    assert "60 samples, seed 4, 50 digits" in proof.method


# -- a check that examined nothing is an error ---------------------------------------------------

def test_domain_check_that_samples_nothing_raises(monkeypatch):
    monkeypatch.setattr(root_point, "DOMAIN_CHECK_TRIALS", 0)
    rule = RootPointRule("zplus_mutant", "z+", "", x_i * indicator_positive(w_ij), ORTHANT)
    with pytest.raises(EmptyCheckError, match="examined no instance"):
        rule.derive()


def test_filter_that_rejects_every_neuron_raises(monkeypatch):
    monkeypatch.setattr(RootPointRule, "_applies", staticmethod(lambda instance, derivation: False))
    rule = RootPointRule("zplus_mutant", "z+", "", x_i * indicator_positive(w_ij), ORTHANT)
    with pytest.raises(EmptyCheckError):
        rule.derive()


def test_ratio_positivity_that_samples_nothing_raises(monkeypatch):
    monkeypatch.setattr(ratio_rules, "POSITIVITY_TRIALS", 0)
    with pytest.raises(EmptyCheckError):
        load_declarations()["epsilon"].derive()


def test_counterexample_search_with_no_trials_raises(monkeypatch):
    monkeypatch.setattr(proofs, "SEARCH_TRIALS", 0)
    with pytest.raises(EmptyCheckError):
        prove_zero("claim", "b_j = 0", b[j], lambda rng: sample_instance(REAL_SPACE, rng))


def test_empty_check_in_the_cli_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(root_point, "STANDARD_CHECK_TRIALS", 0)
    assert main(["derive", "zplus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "domain_standard_check" in err[0] and "examined no instance" in err[0]


# -- the symbolic domain proof --------------------------------------------------------------------

@pytest.mark.parametrize("name", ROOT_POINT_RULES_WITH_A_DOMAIN)
def test_domain_condition_is_proved_symbolically(derived, name):
    derivation = derived[name]
    for key in ("domain", "domain_standard"):
        proof = derivation.proof(key)
        assert proof.status is Status.PROVED and proof.sampling is None, (key, proof.steps)
    steps = derivation.proof("domain").steps
    assert any("w_ij > 0" in step for step in steps) and any("w_ij < 0" in step for step in steps)
    assert any("least bound U*" in step for step in steps)


@pytest.mark.parametrize("name", ROOT_POINT_RULES_ON_RN)
def test_domain_on_rn_is_trivial_and_says_so(derived, name):
    proof = derived[name].proof("domain")
    assert proof.status is Status.PROVED and "R^n" in proof.method


def test_a_wrong_condition_is_not_proved(derived):
    """The proof compares with the condition it is given: a mutated condition fails."""
    results = derived["zplus"].results
    wrong = Le(b[j] + over_inputs(x[i] * w[i, j]), 0)  # sum x w instead of sum x w^-
    proof = prove_domain_condition(ORTHANT, results["direction"], w[i, j],
                                   results["preactivation"], results["step"], wrong)
    assert proof.status is Status.UNDECIDED
    right = prove_domain_condition(ORTHANT, results["direction"], w[i, j],
                                   results["preactivation"], results["step"],
                                   results["domain_condition"])
    assert right.status is Status.PROVED


def test_a_true_condition_on_a_constrained_domain_is_not_proved(derived):
    results = derived["zbox"].results
    proof = prove_domain_condition(BOX, results["direction"], w[i, j], results["preactivation"],
                                   results["step"], S.true)
    assert proof.status is Status.UNDECIDED


def test_sums_as_symbols_identify_spellings_of_one_sum():
    heaviside = over_inputs(x[i] * w[i, j] * indicator_positive(w[i, j]))
    maximum = over_inputs(x[i] * Max(0, w[i, j]))
    assert sums_as_symbols(heaviside - maximum) == 0
    assert sums_as_symbols(over_inputs(x[i] * w[i, j])) == sums_as_symbols(
        over_inputs(x[i] * Max(0, w[i, j])) + over_inputs(x[i] * Min(0, w[i, j])))


# -- the max-pooling limit and the sensitivity identity are derived ------------------------------

def test_maxpool_limit_steps_are_derived(derived):
    for name in ("winner_share", "loser_share"):
        proof = derived["maxpool"].proof(name)
        assert proof.status is Status.PROVED
        assert any("increasing" in step for step in proof.steps)
        assert not any("not confirmed" in step for step in proof.steps)


def test_sensitivity_norm_comes_from_the_layer_function(derived):
    proof = derived["sensitivity"].proof("gradient_norm")
    assert proof.status is Status.PROVED
    assert "Sum(a[j]*w[i, j], (j, 1, H))" in proof.steps[0]


def test_taylor_refutation_records_its_sampling(derived):
    proof = derived["taylor"].proof("residual_active_set_changes")
    assert proof.status is Status.REFUTED and proof.sampling.samples >= 1


# -- the command line -----------------------------------------------------------------------------

def test_derive_proof_prints_the_argument_step_by_step(capsys):
    assert main(["derive", "zbox", "--proof", "domain"]) == 0
    out = capsys.readouterr().out
    assert "status:    proved" in out
    assert re.search(r"^\s+1\. t\* = z_j / D", out, re.M)
    assert "least bound U* = 1" in out


def test_derive_proof_prints_sampling_of_a_check(capsys):
    assert main(["derive", "zplus", "--proof", "domain_check"]) == 0
    out = capsys.readouterr().out
    assert "status:    checked" in out and re.search(r"\d+ samples, seed 1, 50 digits", out)


def test_derive_unknown_proof_is_one_line_listing_the_names(capsys):
    assert main(["derive", "zplus", "--proof", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no proof 'nope'" in err[0] and "domain_standard_check" in err[0]


def test_derive_proof_needs_a_rule(capsys):
    assert main(["derive", "--proof", "domain"]) == 2
    assert "needs a rule" in capsys.readouterr().err


def test_summary_line_counts_every_status():
    made = [Proof("a", "", Status.PROVED), Proof("b", "", Status.CHECKED, Status.CHECKED),
            Proof("c", "", Status.REFUTED, Status.REFUTED), Proof("d", "", Status.ASSUMED),
            Proof("e", "", Status.UNDECIDED), Proof("f", "", Status.PROVED)]
    assert summary_line(made) == ("6 statements: 2 proved, 1 checked, 1 refuted (as expected), "
                                  "1 assumed, 1 undecided")
    made.append(Proof("g", "", Status.REFUTED, Status.PROVED))
    assert "2 refuted (1 not expected)" in summary_line(made)


# -- counterexample keys are text ----------------------------------------------------------------

_BOX_WITNESS = {"L": "-0.5", "Q": "0.25", "S": "0.1", "w[1, j]": "1.0"}
_RENDER_ZBOX = """
import sys
from lrp_sym.proofs import Proof, Status
from lrp_sym.registry import load_declarations
from lrp_sym.render import render_rule_page
derivation = load_declarations()["zbox"].derive()
derivation.proofs.append(Proof("witness", "a box counterexample", Status.REFUTED, Status.REFUTED,
                               "made up for the page", %r))
sys.stdout.write(render_rule_page(derivation, "derivations/z_box.py", "zbox"))
""" % (_BOX_WITNESS,)


def test_zbox_page_with_a_box_counterexample_is_reproducible(derived):
    """The box's coordinate symbol Q once rendered as SymPy's assumption object, with a new
    address in every process: the page rendered here and in another process must be equal."""
    import os
    import subprocess
    import sys

    derivation = derived["zbox"]
    derivation.proofs.append(Proof("witness", "a box counterexample", Status.REFUTED,
                                   Status.REFUTED, "made up for the page", dict(_BOX_WITNESS)))
    try:
        here = render_rule_page(derivation, "derivations/z_box.py", "zbox")
    finally:
        derivation.proofs.pop()
    assert "object at 0x" not in here and "AssumptionKeys" not in here
    assert "`Q = 0.25`" in here
    root = str(Path(__file__).resolve().parents[1])
    other = subprocess.run([sys.executable, "-c", _RENDER_ZBOX], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONPATH": root}).stdout
    assert other == here


def test_committed_zbox_page_has_no_object_address():
    from lrp_sym.registry import checkout_root
    page = checkout_root() / "docs" / "rules" / "zbox.md"
    assert "object at 0x" not in page.read_text()
