"""lrp verify and the engine-vs-reference agreement on whole networks."""

import json

import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, target
from hypothesis import strategies as st

from lrp_num import reference as ref
from lrp_num import testing
from lrp_num.cli import main
from lrp_num.errors import ZeroDenominatorError
from lrp_num.engine.explain import explain
from lrp_num.verify import U, near_max_pool_ties, rounding_bound

RULES = ["w2", "zplus", "lrp0", "gamma", "flat", "epsilon", "alphabeta", "bias_neuron"]


def _case(rule):
    domain = "orthant" if rule in ("zplus", "gamma") else "R^n"
    return testing.networks_with_inputs(domain=domain)


@pytest.mark.parametrize("rule", RULES)
@given(data=st.data())
def test_engine_agrees_with_reference_on_networks(rule, data):
    """|R_engine - R_ref| <= the first-order rounding bound, on random MLPs and conv nets."""
    network, x, _, _ = data.draw(_case(rule))
    # the same output for both (float64 outputs can tie where the exact ones do not)
    c = int(np.argmax(network.forward(x[None]).ravel()))
    try:
        engine = explain(network, x[None], rule=rule, target=c)[0].ravel()
        (result,) = ref.explain_trace(network, x, rule=rule, dps=40, target=c)
    except ZeroDenominatorError:
        assume(False)
    # winner-take-all is discontinuous at near-ties: another winner in float64 is no rounding error
    assume(not near_max_pool_ties(ref.prepare(network, x.shape), result))
    exact = ref.to_float(result.relevance)
    bound = rounding_bound(result, ref.prepare(network, x.shape), x) + 2 * U * np.abs(exact)
    error = np.abs(engine - exact)
    target(float(np.max(error / np.maximum(bound, 1e-300))), label="error / bound")
    scale = float(np.abs(exact).max()) or 1.0
    target(float(error.max() / np.spacing(scale)), label="ulps of max |R|")
    assert (error <= bound + 1e-300).all(), (error, bound, engine, exact, _parameters(network))


def _parameters(network):
    return [(type(layer).__name__, getattr(layer, "weight", None), getattr(layer, "bias", None))
            for layer in network.layers]


@pytest.mark.parametrize("rule", ["w2", "zplus", "lrp0", "flat"])
@given(data=st.data())
def test_float64_conservation_within_the_rounding_bound(rule, data):
    """|sum R_engine - (f_c(x) - absorbed)| <= sum_p bound_p + the forward rounding of f_c, on
    orthant inputs with non-positive biases, where the exact rule passes down all of f_c but what
    the biases and stabilisers keep (``absorbed``, summed at high precision by the reference)."""
    network, x, _, _ = data.draw(testing.networks_with_inputs(domain="orthant", bias="nonpositive"))
    (result,) = ref.explain_trace(network, x, rule=rule, dps=40)
    absorbed = float(mpmath.fsum(t.absorbed_bias + t.absorbed_stabiliser for t in result.traces))
    engine = explain(network, x[None], rule=rule)[0]
    f = float(network.forward(x[None]).ravel().max())
    bound = rounding_bound(result, ref.prepare(network, x.shape), x)
    slack = 4 * U * (abs(f) + abs(absorbed) + np.abs(engine).sum())
    assert abs(engine.sum() - (f - absorbed)) <= bound.sum() + slack + 1e-300


def test_verify_passes_on_the_digits_mlp(capsys):
    assert main(["verify", "--model", "digits-mlp", "--samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "verification passed" in out and "deep-taylor" in out and "zplus" in out


def test_verify_json(capsys):
    assert main(["verify", "--model", "digits-mlp", "--rules", "zplus", "deep-taylor", "--json",
                 "--samples", "1", "--dps", "30"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] and [row["name"] for row in report["rows"]] == ["zplus", "deep-taylor"]
    assert report["rows"][0]["max_error_over_bound"] <= 1


@pytest.mark.parametrize("argv, message", [
    (["--rules", "nope"], "unknown rule or composite"),
    (["--dps", "5"], "--dps must be from 20 to 10000"),
    (["--samples", "0"], "--samples must be at least"),
    (["--model", "/no/such/model.npz"], "no model file"),
    (["--model", "digits-mlp", "--rules", "zbox"], "first linear layer only"),
])
def test_verify_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(["verify", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_verify_fails_when_the_engine_is_wrong(monkeypatch, capsys):
    """A perturbation of 1e-9 relative in the engine is far outside the rounding bound."""
    from lrp_num.engine import explain as engine  # the module (lrp_num.explain is the function)
    original = engine.explain_details

    def perturbed(*args, **kwargs):
        explanation = original(*args, **kwargs)
        explanation.relevance = explanation.relevance * (1 + 1e-9)
        return explanation

    monkeypatch.setattr(engine, "explain_details", perturbed)
    assert main(["verify", "--model", "digits-mlp", "--rules", "zplus", "--samples", "1"]) == 1
    assert "FAIL: agreement" in capsys.readouterr().out


def test_reference_speed_on_the_digits_models():
    """The reference is fast enough to verify: the digits MLP well under 5 s per input."""
    import time

    from lrp_num.io.model_io import load_builtin

    model = load_builtin("digits-mlp")
    start = time.perf_counter()
    ref.explain(model.network, model.test_images[:1], composite="deep-taylor",
                input_domain=model.input_domain, target=[int(model.test_labels[0])])
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_engine_root_point_fractions_match_the_direct_check(name):
    """The engine's per-layer valid fraction (derived condition, float64) equals the direct check
    of x~ at 50 digits for every (layer, sample) on the built-in models, for the rules whose root
    point search uses the neuron itself (flat's unit-weight neuron is reported separately)."""
    from lrp_num.engine.explain import explain_details
    from lrp_num.io.model_io import load_builtin
    from lrp_num.verify import _compare_root_points

    model = load_builtin(name)
    x, labels = model.test_images[:2], model.test_labels[:2]
    for rule in ["w2", "zplus", "lrp0", "gamma"]:
        explanation = explain_details(model.network, x, rule=rule, target=labels, diagnostics=True)
        results = ref.explain_trace(model.network, x, rule=rule, target=labels)
        compared, mismatches, _ = _compare_root_points(explanation, results)
        assert compared > 0 and mismatches == [], (rule, compared, mismatches)


def test_verify_labels_every_check_required_or_informational(capsys):
    """JSON: each check has status pass/FAIL/info; positivity is informational for lrp0 and
    required for deep-taylor; the other checks are required and pass on the digits MLP."""
    assert main(["verify", "--model", "digits-mlp", "--rules", "lrp0", "deep-taylor", "--json",
                 "--samples", "1", "--dps", "30"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    status = {row["name"]: {check["name"]: check["status"] for check in row["checks"]} for row in report["rows"]}
    assert status["lrp0"]["positivity"] == "info" and status["deep-taylor"]["positivity"] == "pass"
    for row in status.values():
        assert all(row[name] == "pass" for name in ("agreement", "forward", "conservation", "balance", "root points"))


def test_verify_markdown_and_text_mark_informational_checks(capsys):
    assert main(["verify", "--model", "digits-mlp", "--rules", "lrp0", "--markdown", "--samples", "1",
                 "--dps", "30"]) == 0
    out = capsys.readouterr().out
    assert "| lrp0 | ok |" in out and "positivity info" in out and "(info)" in out
    assert main(["verify", "--model", "digits-mlp", "--rules", "lrp0", "--samples", "1", "--dps", "30"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("lrp0 "))
    assert line.split()[6].endswith("i")  # the neg column: informational for lrp0
