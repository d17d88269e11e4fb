"""The audit's verdicts: right (domains, dtype tolerances, the pointer) and saying why (causes,
exit status). Each defect class is a small model and a faulty attribution computed the way the
faulty implementation computes it; each correct convention passes. Assertions read the report's
fields (verdict, findings, per-layer values), never the wording of its lines.

Needs torch, zennit and captum; skipped cleanly without them.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")

from lrp_num import explain  # noqa: E402
from lrp_num.audit import audit_attribution, audit_library  # noqa: E402
from lrp_num.audit.compare import layer_plan, run_library  # noqa: E402
from lrp_num.audit.profiles import ZENNIT  # noqa: E402
from lrp_num.audit.zennit_adapter import import_zennit  # noqa: E402
from lrp_num.engine.network import Sequential  # noqa: E402
from lrp_num.layers import Dense, ReLU  # noqa: E402

try:
    zennit = import_zennit()
except ImportError:  # pragma: no cover - zennit is installed separately
    pytest.skip("zennit is not installed", allow_module_level=True)

from audit_models import conv_model, dense_model  # noqa: E402

DPS = 30


def _doubling_zplus():
    """zennit's ZPlus with its relevance doubled: a layer that creates relevance."""
    rule = zennit.rules.ZPlus()
    reducer = rule.reducer
    rule.reducer = lambda inputs, gradients: 2 * reducer(inputs, gradients)
    return rule


def _positive_model(seed=7):
    """A 6-5-4-3 ReLU net on non-negative inputs, positive biases (b^+ matters), positive outputs."""
    rng = np.random.default_rng(seed)
    network = Sequential([Dense(rng.normal(size=(6, 5)), rng.uniform(0.1, 0.5, 5)), ReLU(),
                          Dense(rng.normal(size=(5, 4)), rng.uniform(0.1, 0.5, 4)), ReLU(),
                          Dense(np.abs(rng.normal(size=(4, 3))), rng.uniform(0.5, 1.0, 3))], input_shape=(6,))
    return network, rng.uniform(0.0, 1.0, size=(2, 6))


# -- correct conventions pass under the derived bound --------------------------------------------

@pytest.mark.parametrize("rule", ["zplus", "epsilon", "gamma", "w2", "alphabeta"])
def test_correct_zennit_float64_runs_match_under_the_rounding_bound(rule):
    network, x = _positive_model()
    report = audit_library(network, x, "zennit", rule=rule, dps=DPS)
    assert report.verdict == "matches" and report.ok and report.exit_status == 0, report.verdicts
    assert report.findings == [] and report.dtype == "float64"
    assert all(a.own_over_bound <= 1 and 0 < a.bound_relative < 1e-9 for a in report.layers)


@pytest.mark.parametrize("library,rule", [("captum", "epsilon"), ("captum", "zplus"), ("zennit", "zplus")])
def test_correct_runs_on_a_conv_model_match(library, rule):
    network, x = conv_model(batch_norm=False, pool="avg")
    x = np.abs(x)  # on the orthant, z+ is in its domain
    report = audit_library(network, x, library, rule=rule, dps=DPS)
    assert report.ok and report.verdict == "matches", report.verdicts


# -- tolerances follow the dtype -----------------------------------------------------------------

@pytest.mark.parametrize("rule", ["zplus", "epsilon", "gamma"])
def test_a_correct_float32_zennit_run_is_not_flagged(rule):
    network, x = conv_model(batch_norm=True, pool="max")
    x = np.abs(x)
    report = audit_library(network, x, "zennit", rule=rule, dps=DPS, dtype="float32")
    assert report.dtype == "float32" and report.ok, report.verdicts
    deviation = max(a.own_relative for a in report.layers)
    assert deviation > 1e-9  # float32 rounding is visible, and the float32 bound covers it
    assert all(a.bound_relative > 1e-8 for a in report.layers)
    # the same run against a float64-sized tolerance is flagged: what the fixed 1e-7 did to
    # correct float32 runs on larger models
    strict_tolerance = audit_library(network, x, "zennit", rule=rule, dps=DPS, dtype="float32",
                                     tolerance=deviation / 10)
    assert not strict_tolerance.ok and "deviates-from-convention" in strict_tolerance.findings


def test_a_float32_run_with_a_wrong_layer_is_still_flagged():
    network, x = dense_model(seed=4)
    report = audit_library(network, np.abs(x), "zennit", rule="zplus", dps=DPS, dtype="float32",
                           overrides={2: _doubling_zplus})
    assert not report.ok and report.deviation_starts_at == 2 and "conservation" in report.findings


def test_a_saved_float32_attribution_is_judged_by_the_float32_bound():
    network, x = _positive_model()
    targets = network.forward(x).argmax(axis=1)
    relevance = explain(network, x.astype(np.float32), rule="zplus_split", target=targets,
                        conventions=ZENNIT.conventions)
    assert relevance.dtype == np.float32
    report = audit_attribution(network, x, relevance, rule="zplus", target=targets, library="zennit", dps=DPS)
    assert report.ok and report.dtype == "float32" and report.matched == ["zennit-0.5.1"], report.verdicts
    as_float64 = audit_attribution(network, x, relevance.astype(np.float64), rule="zplus", target=targets,
                                   library="zennit", dps=DPS)
    assert as_float64.dtype == "float64" and not as_float64.ok  # float32 rounding exceeds the float64 bound


# -- rules outside their domain ----------------------------------------------------------------

def test_a_saved_attribution_of_zplus_outside_its_domain_fails():
    """captum's z+ (x w^+) on inputs of both signs, saved and audited: it agrees only with a
    convention that evaluates z+ outside x >= 0, so the audit fails; zennit's input-split z+,
    the generalisation that holds there, passes."""
    network, x = dense_model(seed=3)
    targets = network.forward(x).argmax(axis=1)
    plan = layer_plan(network, "zplus", None, {}, False)
    captum_relevance = run_library("captum", network, x, plan, targets).relevance
    faulty = audit_attribution(network, x, captum_relevance, rule="zplus", target=targets, dps=DPS)
    assert faulty.matched == ["captum-0.9.0"] and "outside-domain" in faulty.findings
    assert faulty.verdict == "fails" and faulty.exit_status == 1
    zennit_relevance = run_library("zennit", network, x, plan, targets).relevance
    fine = audit_attribution(network, x, zennit_relevance, rule="zplus", target=targets, dps=DPS)
    assert fine.ok and "zennit-0.5.1" in fine.matched, fine.verdicts
    assert fine.layers[0].outside_domain == np.count_nonzero(x < 0)


def test_outside_domain_relevance_is_what_the_library_puts_there():
    network, x = dense_model(seed=3)
    report = audit_library(network, x, "captum", rule="zplus", dps=DPS)
    first = report.layers[0]
    f_c = np.abs(np.array(report.f_c))
    plan = layer_plan(network, "zplus", None, {}, False)
    relevance = run_library("captum", network, x, plan, network.forward(x).argmax(axis=1)).relevance
    carried = (np.where(x < 0, np.abs(relevance), 0.0).sum(axis=1) / f_c).max()
    assert first.outside_relevance == pytest.approx(carried, rel=1e-9)
    assert first.applied_outside_domain and first.generalisation == "zplus_split"
    # DTD is the generalisation there: captum departs from it at that layer
    assert first.dtd_over_bound > 1


# -- the pointer ---------------------------------------------------------------------------------

def test_the_pointer_names_the_largest_relative_deviation():
    """A slightly wrong stabiliser at the top layer (a small deviation, nearest the output) and a
    doubled layer 0 (relative deviation about 1): the pointer names layer 0."""
    network, x = dense_model(seed=4)
    x = np.abs(x)
    report = audit_library(network, x, "zennit", rule="zplus", dps=DPS,
                           overrides={4: lambda: zennit.rules.ZPlus(stabilizer=1e-3), 0: _doubling_zplus})
    layer = {a.index: a for a in report.layers}
    assert layer[4].own_over_bound > 1 and layer[4].own_relative < 0.1 < layer[0].own_relative
    assert report.deviation_starts_at == 4 and report.deviation_at == 0


# -- causes --------------------------------------------------------------------------------------

def test_causes_at_the_top_layer_are_the_bias_and_stabiliser_shares():
    """zennit's z+ at the top layer: R_j = f_c enters unchanged, so its bias b_j^+ absorbs
    b_j^+ / stab(d_j) f_c and the stabiliser eps / stab(d_j) f_c, d_j = sum_i a_i w_ij^+ + b_j^+
    (worked out here from the definition, apart from the audit)."""
    network, x = _positive_model()
    x = x[:1]
    report = audit_library(network, x, "zennit", rule="zplus", dps=DPS)
    assert report.ok and report.departs_from_dtd
    top = next(a for a in report.layers if a.index == 4)
    causes = {c.kind: c for c in top.causes}
    assert set(causes) == {"bias", "stabiliser"}
    a = network.forward_trace(x)[4][0]
    j = int(network.forward(x).argmax())
    layer = network.layers[4]
    d = a @ np.maximum(layer.weight[:, j], 0) + max(layer.bias[j], 0)
    stabilised = d + ZENNIT.conventions.eps
    assert causes["bias"].share == pytest.approx(max(layer.bias[j], 0) / stabilised, rel=1e-8)
    assert causes["stabiliser"].share == pytest.approx(ZENNIT.conventions.eps / stabilised, rel=1e-6)
    assert all(c.effect == "absorbs" for c in top.causes)


def test_a_missing_input_split_is_named_as_the_cause():
    network, x = dense_model(seed=3)
    report = audit_library(network, x, "captum", rule="zplus", dps=DPS)
    kinds = {c.kind for c in report.layers[0].causes}
    assert "missing-input-split" in kinds and "bias" in kinds
    moved = next(c for c in report.layers[0].causes if c.kind == "missing-input-split")
    assert moved.effect == "moves" and moved.share > 1e-3
    assert all(c.kind != "missing-input-split" for a in report.layers[1:] for c in a.causes)


def test_dtd_matching_rules_have_no_cause():
    network, x = _positive_model()
    report = audit_library(network, x, "zennit", rule="flat", dps=DPS)  # no bias, no split
    assert all(c.kind == "stabiliser" for a in report.layers for c in a.causes), report.verdicts


# -- exit status and --strict ------------------------------------------------------------------

def test_strict_fails_on_a_departure_from_dtd_and_a_match_never_exits_non_zero():
    network, x = _positive_model()
    plain = audit_library(network, x, "zennit", rule="zplus", dps=DPS)
    strict = audit_library(network, x, "zennit", rule="zplus", dps=DPS, strict=True)
    assert plain.ok and plain.departs_from_dtd and plain.exit_status == 0
    assert not strict.ok and strict.findings == ["departs-from-dtd"] and strict.exit_status == 1
    for report in (plain, strict):
        assert (report.verdict == "matches") == (report.exit_status == 0)
    flat = audit_library(network, x, "zennit", rule="flat", dps=DPS, strict=True)
    assert flat.departs_from_dtd == (flat.exit_status == 1)


def test_cli_exit_status_and_json_agree(capsys):
    from lrp_num.cli import main

    base = ["audit", "--library", "zennit", "--model", "digits-mlp", "--rule", "zplus", "--sample", "0",
            "--json", "--dps", "30"]
    for extra, expected in (([], 0), (["--strict"], 1), (["--dtype", "float32"], 0)):
        code = main(base + extra)
        report = json.loads(capsys.readouterr().out)
        assert code == expected == report["exit_status"], (extra, report["verdicts"])
        assert (report["verdict"] == "matches") == (code == 0)
        assert "rounding bound" in report["tolerance"]
