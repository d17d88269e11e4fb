"""The checks that lrp_num.explain, the mpmath reference, verify and the audit share (issue 9).

Each bad argument is refused by the engine and the reference with the same documented error
type; dps has one range (lrp_num.checks.MIN_DPS .. MAX_DPS); z+ and LRP-gamma refuse negative
inputs, as their derivations (the orthant) say; alpha-beta under the captum bias convention is
the same in the engine and the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import lrp_num.reference as ref
import lrp_num.reference.symbolic as sym
from lrp_num import Conventions, Sequential, explain, load_builtin
from lrp_num.audit.compare import audit_attribution, audit_library, check_tolerance
from lrp_num.checks import MAX_DPS, MIN_DPS, check_dps
from lrp_num.cli import main
from lrp_num.errors import (DomainError, KernelArgumentError, LRPError, NonFiniteError,
                            PrecisionError, ShapeError, TargetError)
from lrp_num.engine.kernels import known_rules, load_module
from lrp_num.layers import Dense, ReLU
from lrp_num.verify import verify

RNG = np.random.default_rng(9)


def small_network() -> Sequential:
    """4 - 3 - 2 with a ReLU: hidden inputs are >= 0 whatever the input's sign."""
    return Sequential([Dense(RNG.normal(size=(4, 3)), RNG.normal(size=3)), ReLU(),
                       Dense(RNG.normal(size=(3, 2)), RNG.normal(size=2) + 2.0)], input_shape=(4,))


NETWORK = small_network()
X = RNG.uniform(0.1, 1.0, size=(2, 4))
#: f(x) = sum_i x_i - 1/2: a root along the gradient for the whole-function Taylor decomposition
AFFINE = Sequential([Dense(np.ones((4, 1)), np.array([-0.5]))], input_shape=(4,))


# -- 1. dps: one range, checked everywhere -----------------------------------------------------

BAD_DPS = [True, 1.5, 50.0, -5, 0, MIN_DPS - 1, MAX_DPS + 1, 1_000_000, "50", None]


@pytest.mark.parametrize("dps", BAD_DPS)
def test_check_dps_refuses_what_is_not_an_integer_in_range(dps):
    with pytest.raises(PrecisionError, match=f"{MIN_DPS} to {MAX_DPS}"):
        check_dps(dps)


def test_check_dps_accepts_python_and_numpy_integers_in_range():
    assert check_dps(MIN_DPS) == MIN_DPS and check_dps(np.int64(MAX_DPS)) == MAX_DPS
    assert type(check_dps(np.int32(50))) is int


REFERENCE_ENTRY_POINTS = {
    "explain": lambda dps: ref.explain(NETWORK, X, rule="zplus", dps=dps),
    "explain_trace": lambda dps: ref.explain_trace(NETWORK, X, rule="zplus", dps=dps),
    "forward": lambda dps: ref.forward(NETWORK, X, dps=dps),
    "gradient": lambda dps: ref.gradient(NETWORK, X, dps=dps),
    "sensitivity": lambda dps: ref.sensitivity(NETWORK, X, dps=dps),
    "whole_function_taylor": lambda dps: ref.whole_function_taylor(AFFINE, X[0], dps=dps),
    "root_point_membership": lambda dps: ref.root_point_membership(NETWORK, X, rule="zplus", dps=dps),
    "symbolic dense_relevance": lambda dps: sym.dense_relevance(
        "zplus", NETWORK.layers[0].weight, NETWORK.layers[0].bias, X[0], np.ones(3), dps=dps),
    "symbolic domain_condition_values": lambda dps: sym.domain_condition_values(
        "zplus", NETWORK.layers[0].weight, NETWORK.layers[0].bias, X[0], dps=dps),
    "verify": lambda dps: verify(NETWORK, X, rules=("zplus",), composites=(), dps=dps),
}


@pytest.mark.parametrize("entry", REFERENCE_ENTRY_POINTS)
@pytest.mark.parametrize("dps", [1.5, -5, 0, True, 1_000_000])
def test_every_reference_entry_point_refuses_bad_dps(entry, dps):
    with pytest.raises(PrecisionError):
        REFERENCE_ENTRY_POINTS[entry](dps)


@pytest.mark.parametrize("entry", ["explain", "forward", "gradient", "whole_function_taylor"])
def test_reference_entry_points_run_at_the_lower_bound_with_a_numpy_integer(entry):
    REFERENCE_ENTRY_POINTS[entry](np.int64(MIN_DPS))


def _one_line_exit_2(argv, capsys, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("dps", ["0", "-5", "19", "1000000"])
def test_cli_dps_out_of_range_is_one_line_exit_2(capsys, dps):
    _one_line_exit_2(["verify", "--model", "digits-mlp", "--dps", dps], capsys,
                     f"--dps must be from {MIN_DPS} to {MAX_DPS}")
    _one_line_exit_2(["audit", "--attribution", "unused.npy", "--model", "digits-mlp", "--rule", "zplus",
                      "--dps", dps], capsys, f"--dps must be from {MIN_DPS} to {MAX_DPS}")


@pytest.mark.parametrize("command", [["verify"], ["audit", "--attribution", "R.npy", "--rule", "zplus"]])
def test_cli_dps_that_is_not_an_integer_is_refused_by_the_parser(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--dps", "1.5"])
    assert exit_info.value.code == 2
    assert "invalid int value: '1.5'" in capsys.readouterr().err


# -- 2. the engine and the reference refuse the same bad input with the same type --------------

def _with_nan(x):
    x = x.copy()
    x[0, 1] = np.nan
    return x


BAD_CALLS = [
    ("NaN input", dict(x=_with_nan(X), rule="zplus"), NonFiniteError),
    ("Inf input", dict(x=X * np.inf, rule="w2"), NonFiniteError),
    ("empty batch", dict(x=np.ones((0, 4)), rule="zplus"), ShapeError),
    ("string input", dict(x=np.array([["a"] * 4] * 2), rule="zplus"), ShapeError),
    ("0-d input", dict(x=np.float64(1.0), rule="zplus"), ShapeError),
    ("wrong sample shape", dict(x=np.ones((2, 5)), rule="zplus"), ShapeError),
    ("gamma = -1", dict(rule="gamma", gamma=-1.0), KernelArgumentError),
    ("gamma = NaN", dict(rule="gamma", gamma=float("nan")), KernelArgumentError),
    ("epsilon = Inf", dict(rule="epsilon", epsilon=float("inf")), KernelArgumentError),
    ("beta < 0", dict(rule="alphabeta", alpha=2.0, beta=-1.0), KernelArgumentError),
    ("parameter a string", dict(rule="gamma", gamma="0.25"), KernelArgumentError),
    ("parameter a bool", dict(rule="gamma", gamma=True), KernelArgumentError),
    ("parameter an array", dict(rule="epsilon", epsilon=np.ones(2)), KernelArgumentError),
    ("unknown parameter", dict(rule="zplus", gamma=1.0), KernelArgumentError),
    ("parameters with a composite", dict(composite="deep-taylor", epsilon=1.0), KernelArgumentError),
    ("target out of range", dict(rule="zplus", target=7), TargetError),
    ("negative target", dict(rule="zplus", target=-1), TargetError),
    ("float target index", dict(rule="zplus", target=1.5), TargetError),
    ("one index for a batch of two", dict(rule="zplus", target=[0]), TargetError),
    ("explicit relevance of the wrong shape", dict(rule="zplus", target=np.ones((2, 3))), TargetError),
    ("explicit relevance with NaN", dict(rule="zplus", target=np.full((2, 2), np.nan)), NonFiniteError),
    ("unbounded box", dict(composite="deep-taylor", input_domain=(0, np.inf)), NonFiniteError),
    ("box of the wrong shape", dict(composite="deep-taylor", input_domain=(np.zeros(3), 1)), ShapeError),
    ("not a box", dict(composite="deep-taylor", input_domain=(0, 1, 2)), ShapeError),
    ("inputs outside the box", dict(x=X + 5, composite="deep-taylor", input_domain=(0, 1)), DomainError),
    ("z+ at negative inputs", dict(x=X - 0.5, rule="zplus"), DomainError),
    ("gamma at negative inputs", dict(x=X - 0.5, rule="gamma"), DomainError),
]


@pytest.mark.parametrize(("arguments", "error"), [case[1:] for case in BAD_CALLS],
                         ids=[case[0] for case in BAD_CALLS])
@pytest.mark.parametrize("implementation", ["engine", "reference"])
def test_engine_and_reference_refuse_the_same_bad_input(implementation, arguments, error):
    arguments = dict(arguments)
    x = arguments.pop("x", X)
    function = explain if implementation == "engine" else ref.explain
    with np.errstate(invalid="ignore"), pytest.raises(error):
        function(NETWORK, x, **arguments)


def test_reference_nan_input_is_no_longer_zero_relevance():
    with pytest.raises(NonFiniteError, match="NaN"):
        ref.explain(NETWORK, _with_nan(X), rule="lrp0")


# -- 3. the audit checks dps, tolerance and rule parameters before any work --------------------

@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf"), 1.0, 2.0, "1e-7", True, None])
def test_check_tolerance_refuses_what_is_not_in_0_to_1(tolerance):
    with pytest.raises(KernelArgumentError, match="tolerance"):
        check_tolerance(tolerance)


def test_check_tolerance_accepts_0_and_small_values():
    assert check_tolerance(0) == 0.0 and check_tolerance(np.float32(1e-7)) == pytest.approx(1e-7)


AUDIT_MISTAKES = [
    (dict(rule="zplus", dps=0), PrecisionError),
    (dict(rule="zplus", dps=10**6), PrecisionError),
    (dict(rule="zplus", tolerance=-1.0), KernelArgumentError),
    (dict(rule="gamma", parameters={"gamma": -1.0}), KernelArgumentError),
    (dict(rule="epsilon", parameters={"epsilon": float("nan")}), KernelArgumentError),
    (dict(rule="zplus", parameters={"gamma": 1.0}), KernelArgumentError),
    (dict(composite="deep-taylor", parameters={"gamma": 1.0}), KernelArgumentError),
]


@pytest.mark.parametrize(("arguments", "error"), AUDIT_MISTAKES)
def test_audit_api_refuses_bad_arguments(arguments, error):
    mlp = load_builtin("digits-mlp")
    x = mlp.test_images[:1]
    with pytest.raises(error):
        audit_attribution(mlp.network, x, np.zeros_like(x), input_domain=mlp.input_domain, **arguments)
    # the library is never run: the checks come first (no torch needed to see them)
    with pytest.raises(error):
        audit_library(mlp.network, x, "zennit", input_domain=mlp.input_domain, **arguments)


@pytest.mark.parametrize(("flags", "message"), [
    (["--rule", "gamma", "--gamma", "-1"], "parameter gamma must be >= 0"),
    (["--rule", "epsilon", "--epsilon", "nan"], "parameter epsilon must be finite"),
    (["--rule", "zplus", "--tolerance", "-1"], "tolerance must be a relative deviation"),
    (["--rule", "zplus", "--tolerance", "nan"], "tolerance must be a relative deviation"),
    (["--composite", "deep-taylor", "--gamma", "2"], "a composite sets its own"),
    (["--rule", "zplus", "--dps", "0"], "--dps must be from"),
])
def test_cli_audit_refuses_bad_arguments_in_one_line(tmp_path, capsys, flags, message):
    mlp = load_builtin("digits-mlp")
    attribution = tmp_path / "R.npy"
    np.save(attribution, np.zeros_like(mlp.test_images[:1]))
    _one_line_exit_2(["audit", "--attribution", str(attribution), "--model", "digits-mlp", "--sample", "0",
                      *flags], capsys, message)


# -- 4. rules derived for the orthant refuse negative inputs ------------------------------------

def test_every_generated_kernel_declares_its_derivations_domain():
    from lrp_sym.registry import load_declarations

    declarations = load_declarations(None)
    for rule in known_rules():
        declared = getattr(declarations[rule], "domain", None)  # the Add rules: on their derivation
        domain = declared if declared is not None else declarations[rule].derive().domain
        assert load_module(rule).DOMAIN == domain.name, rule
    assert {rule for rule in known_rules() if load_module(rule).DOMAIN == "orthant"} == {"zplus", "gamma"}


@pytest.mark.parametrize("rule", ["zplus", "gamma"])
@pytest.mark.parametrize("implementation", ["engine", "reference"])
def test_orthant_rule_at_negative_input_names_layer_rule_domain_count_and_alternatives(implementation, rule):
    x = X.copy()
    x[0, :3] = -1.0  # three negative values in the batch
    function = explain if implementation == "engine" else ref.explain
    with pytest.raises(DomainError) as error:
        function(NETWORK, x, rule=rule)
    message = str(error.value)
    assert f"layer 0 ({NETWORK.layers[0]!r}): rule {rule} is derived for the orthant x >= 0" in message
    assert "negative" in message
    for alternative in ("w2", "zbox", "zplus_split", "epsilon", "lrp0"):
        assert alternative in message
    if implementation == "engine":  # the engine sees the whole batch, the reference one sample
        assert "3 of its 8 input value(s)" in message


def test_orthant_check_applies_to_hidden_layers_without_relu():
    """A linear layer fed by another without ReLU between can get negative inputs too."""
    network = Sequential([Dense(-np.eye(2), np.zeros(2)), Dense(np.ones((2, 1)), np.ones(1))],
                         input_shape=(2,))
    x = np.array([[1.0, 2.0]])
    for function in (explain, ref.explain):
        with pytest.raises(DomainError, match=r"layer 1 .*rule zplus"):
            function(network, x, rule="zplus", target=0)


@pytest.mark.parametrize("rule", ["w2", "lrp0", "epsilon", "zplus_split", "alphabeta", "flat"])
def test_rules_for_inputs_of_either_sign_still_run_there(rule):
    x = X - 0.5
    engine = explain(NETWORK, x, rule=rule)
    reference = ref.to_float(ref.explain(NETWORK, x, rule=rule))
    np.testing.assert_allclose(engine, reference, rtol=1e-9, atol=1e-12 * np.abs(reference).max())


@pytest.mark.parametrize("composite", ["deep-taylor", "epsilon-plus", "epsilon-gamma-box", "alpha2-beta1"])
@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn"])
def test_composites_on_the_built_in_models_meet_no_negative_input(model, composite):
    loaded = load_builtin(model)
    relevance = explain(loaded.network, loaded.test_images[:2], composite=composite,
                        input_domain=loaded.input_domain)
    assert np.isfinite(relevance).all()


def test_deep_taylor_keeps_working_on_mixed_sign_inputs_without_a_box():
    """w2 at the input, z+ above a ReLU: every z+ layer sees non-negative inputs."""
    x = X - 0.5
    engine = explain(NETWORK, x, composite="deep-taylor")
    reference = ref.to_float(ref.explain(NETWORK, x, composite="deep-taylor"))
    np.testing.assert_allclose(engine, reference, rtol=1e-9, atol=1e-12 * np.abs(reference).max())


# -- 5. alpha-beta under the captum convention ---------------------------------------------------

def test_alphabeta_under_captum_bias_agrees_between_engine_and_reference():
    """W = ((1), (-1)), b = -1, x = (1, 1): the captum convention puts the unmodified b in the
    positive term, whose denominator x_1 w_1^+ + b = 1 - 1 is then 0 and becomes eps = 1e-6
    (stabilise="zero"): R = (2 * -1 / 1e-6, -1 * -1 * -1 / -1) = (-2e6, 1). The negative term has
    no bias and its denominator is -1. The reference had given the bias b^- to the negative term
    (the "neuron" convention), which lrp_num.engine.conventions documents only for neuron and zennit."""
    network = Sequential([Dense(np.array([[1.0], [-1.0]]), np.array([-1.0]))], input_shape=(2,))
    x = np.array([[1.0, 1.0]])
    captum = Conventions(bias="captum")
    engine = explain(network, x, rule="alphabeta", conventions=captum)
    reference = ref.to_float(ref.explain(network, x, rule="alphabeta", conventions=captum))
    np.testing.assert_allclose(engine, [[-2.0 / captum.eps, 1.0]], rtol=1e-15)
    # within the rounding bound of lrp verify
    report = verify(network, x, rules=("alphabeta",), composites=(), conventions=captum)
    assert report.ok and report.rows[0].max_error_over_bound <= 1.0, report.rows[0].checks
    np.testing.assert_allclose(engine, reference, rtol=1e-15)
    # under "neuron" both groups get their part of the bias: b^- = -1 joins the negative group
    neuron = Conventions(bias="neuron")
    np.testing.assert_allclose(explain(network, x, rule="alphabeta", conventions=neuron), [[-2.0, 0.5]])
    np.testing.assert_allclose(ref.to_float(ref.explain(network, x, rule="alphabeta", conventions=neuron)),
                               [[-2.0, 0.5]])


def test_lrp_error_is_the_base_of_every_new_check():
    assert issubclass(PrecisionError, LRPError) and issubclass(DomainError, LRPError)


def test_verify_reports_an_orthant_rule_on_negative_inputs_as_not_applicable():
    """Engine and reference both refuse z+ on negative inputs: that is agreement, not a failure."""
    from lrp_num.verify import format_table

    report = verify(NETWORK, X - 0.5, rules=("zplus", "w2"), composites=())
    zplus, w2 = report.rows
    assert zplus.outside_domain is not None and "rule zplus is derived for the orthant" in zplus.outside_domain
    assert [c.name for c in zplus.checks] == ["domain"] and zplus.checks[0].holds
    assert w2.outside_domain is None and report.ok
    assert "zplus                not applicable: layer 0" in format_table(report)


def test_verify_fails_when_only_the_engine_refuses(monkeypatch):
    monkeypatch.setitem(ref.ROOT_POINT_RULES, "zplus", "R^n")  # a reference that forgot the domain
    report = verify(NETWORK, X - 0.5, rules=("zplus",), composites=())
    assert not report.ok and not report.rows[0].checks[0].holds
