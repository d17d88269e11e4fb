"""lrp audit: zennit and captum against their profiles and DTD; corrupted runs are caught.

Needs torch, zennit and captum (the "audit" extra plus ``pip install --no-deps zennit==0.5.1``);
skipped cleanly without them.
"""

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")

from lrp_num import explain  # noqa: E402
from lrp_num.audit import audit_attribution, audit_library  # noqa: E402
from lrp_num.audit.zennit_adapter import import_zennit  # noqa: E402
from lrp_num.engine.conventions import DTD  # noqa: E402
from lrp_num.errors import DomainError  # noqa: E402
from lrp_num.layers import Dense  # noqa: E402
from lrp_num.engine.network import Sequential  # noqa: E402
from lrp_num.audit.profiles import CAPTUM, ZENNIT  # noqa: E402

try:
    zennit = import_zennit()
except ImportError:  # pragma: no cover - zennit is installed separately
    pytest.skip("zennit is not installed", allow_module_level=True)

from audit_models import conv_model, dense_model  # noqa: E402

DPS = 30
TOL = 1e-9


def positive_targets(network, x):
    output = network.forward(x)
    return output.argmax(axis=1) if np.all(output.max(axis=1) > 0) else pytest.skip("no positive output")


@pytest.mark.parametrize("rule", ["zplus", "epsilon", "gamma", "alphabeta", "w2", "flat"])
def test_zennit_follows_its_profile_on_a_dense_model(rule):
    network, x = dense_model()
    report = audit_library(network, x, "zennit", rule=rule, dps=DPS, tolerance=TOL)
    assert report.ok and report.verdict == "matches" and report.exit_status == 0, report.verdicts
    assert max(a.own_relative for a in report.layers) < TOL


@pytest.mark.parametrize("pool", ["max", "avg", "sum"])
@pytest.mark.parametrize("rule", ["zplus", "epsilon", "gamma"])
def test_zennit_follows_its_profile_on_a_conv_model_with_batch_norm(rule, pool):
    network, x = conv_model(pool=pool)
    report = audit_library(network, x, "zennit", rule=rule, dps=DPS, tolerance=TOL)
    assert max(a.own_relative for a in report.layers) < TOL, report.verdicts
    # zennit's merged BatchNorm keeps dividing by sqrt(1 + eps): the audit says so
    assert any("SequentialMergeBatchNorm" in line for line in report.verdicts)


@pytest.mark.parametrize("model", [dense_model, lambda: conv_model(batch_norm=False, pool="avg")])
@pytest.mark.parametrize("rule", ["zplus", "epsilon", "gamma"])
def test_captum_follows_its_profile(rule, model):
    network, x = model()
    report = audit_library(network, x, "captum", rule=rule, dps=DPS, tolerance=TOL)
    assert max(a.own_relative for a in report.layers) < TOL
    # captum's z+ and gamma (x w^+, no input split) on these mixed-sign inputs are rules outside
    # their domain: that is the one finding
    assert report.findings == ([] if rule == "epsilon" else ["outside-domain"]), report.verdicts


@pytest.mark.parametrize("rule", ["zplus", "epsilon", "gamma"])
def test_captum_batch_norm_is_modelled_as_a_layer_of_its_own(rule, monkeypatch):
    """captum gives BatchNorm2d its own EpsilonRule instead of merging it: the profile models that
    (a depthwise 1x1 layer under lrp0 with captum's conventions), so captum matches it; without
    that model (the folded network a merging library explains) layer 0 deviates."""
    import dataclasses

    from lrp_num.audit import profiles

    network, x = conv_model(batch_norm=True, pool="avg")
    report = audit_library(network, x, "captum", rule=rule, dps=DPS, tolerance=TOL)
    assert max(a.own_relative for a in report.layers) < TOL
    # captum's z+ and gamma on mixed-sign inputs stay rules outside their domain
    assert report.findings == ([] if rule == "epsilon" else ["outside-domain"]), report.verdicts
    monkeypatch.setitem(profiles.PROFILES, "captum", dataclasses.replace(CAPTUM, library_layers=None))
    folded = audit_library(network, x, "captum", rule=rule, dps=DPS, tolerance=TOL)
    assert not folded.ok and "deviates-from-convention" in folded.findings
    assert next(a for a in folded.layers if a.index == 0).own_relative > TOL


def test_batch_norms_within_the_rounding_bound(monkeypatch):
    """Under the float64 rounding bound (no --tolerance): captum's batch norm, modelled as a layer
    of its own, needs no allowance; zennit's merged batch norm leaves 1 / sqrt(1 + eps_bn) behind
    its stabiliser, which the profile's model error covers, and without it the audit would flag
    a correct zennit run."""
    import dataclasses

    from lrp_num.audit import profiles

    network, x = conv_model(batch_norm=True, pool="avg")
    assert CAPTUM.model_error == 0.0
    captum = audit_library(network, x, "captum", rule="epsilon", dps=DPS)
    assert captum.ok, captum.verdicts
    zennit = audit_library(network, x, "zennit", rule="zplus", dps=DPS)
    assert zennit.ok, zennit.verdicts
    monkeypatch.setitem(profiles.PROFILES, "zennit", dataclasses.replace(ZENNIT, model_error=0.0))
    exact = audit_library(network, x, "zennit", rule="zplus", dps=DPS)
    assert "deviates-from-convention" in exact.findings


def test_captum_batch_norm_terms_count_at_the_layer_it_is_folded_into():
    """captum's batch norm is a layer of its own in the network its profile explains: the causes
    read from that network's traces belong to our folded layers (the batch norm's bias to the conv
    before it), so each layer's causes account for what it absorbs beyond DTD, nothing "dropped"."""
    network, x = conv_model(batch_norm=True, pool="avg")
    report = audit_library(network, x, "captum", rule="zplus", dps=DPS, tolerance=TOL)
    assert report.findings == ["outside-domain"], report.verdicts
    for audit in report.layers:
        assert "dropped" not in [c.kind for c in audit.causes], (audit.index, audit.causes)
        bias = sum(c.share for c in audit.causes if c.kind == "bias")
        assert bias == pytest.approx(audit.absorbed_profile - audit.absorbed_dtd, abs=1e-9)
    assert any(c.kind == "bias" for c in report.layers[0].causes)


@pytest.mark.parametrize("library,profile", [("zennit", ZENNIT), ("captum", CAPTUM)])
def test_reported_dtd_difference_equals_the_engine_under_each_convention(library, profile):
    network, x = dense_model(seed=3)
    x = np.abs(x)  # the engine applies z+ on its domain x >= 0 only (DomainError elsewhere)
    targets = positive_targets(network, x)
    report = audit_library(network, x, library, rule="zplus", target=targets, dps=DPS, tolerance=TOL)
    mapping = profile.rule("zplus")
    own = explain(network, x, rule=mapping.reference_rule, target=targets, conventions=profile.conventions)
    dtd = explain(network, x, rule=mapping.dtd_rule, target=targets, conventions=DTD)
    at_input = next(a for a in report.layers if a.index == 0)
    assert at_input.dtd_deviation == pytest.approx(np.abs(own - dtd).max(), rel=1e-9)
    assert at_input.dtd_deviation > 1e-3  # the bias share makes a real difference


@pytest.mark.parametrize("library", ["zennit", "captum"])
def test_zplus_on_negative_inputs_is_outside_its_domain(library):
    """Both apply z+ to mixed-sign inputs; zennit's ZPlus is the input-split generalisation that
    holds there (its verdict stands), captum's x w^+ is z+ outside its domain (exit 1)."""
    network, x = dense_model(seed=3)
    assert (x < 0).any()
    with pytest.raises(DomainError, match="rule zplus is derived for the orthant"):
        explain(network, x, rule="zplus")
    report = audit_library(network, x, library, rule="zplus", dps=DPS, tolerance=TOL)
    layer = {a.index: a for a in report.layers}
    assert layer[0].outside_domain == np.count_nonzero(x < 0) and layer[0].domain == "orthant"
    assert layer[0].generalisation == "zplus_split" and layer[0].outside_relevance > 0
    assert layer[2].outside_domain == 0 and layer[2].generalisation is None
    assert layer[0].applied_outside_domain == (library == "captum")
    assert ("outside-domain" in report.findings) == (library == "captum")
    assert report.ok == (library == "zennit"), report.verdicts
    inside = audit_library(network, np.abs(x), library, rule="zplus", dps=DPS, tolerance=TOL)
    assert inside.ok and all(a.outside_domain == 0 for a in inside.layers), inside.verdicts


def _doubling_zplus():
    rule = zennit.rules.ZPlus()
    reducer = rule.reducer
    rule.reducer = lambda inputs, gradients: 2 * reducer(inputs, gradients)
    return rule


@pytest.mark.parametrize("corrupt,kind", [
    (_doubling_zplus, "doubled"),
    (lambda: zennit.rules.ZPlus(zero_params=["bias"]), "bias dropped"),
])
def test_corrupted_zennit_layer_is_named(corrupt, kind):
    network, x = dense_model(seed=4)
    report = audit_library(network, x, "zennit", rule="zplus", dps=DPS, tolerance=TOL, overrides={2: corrupt})
    assert not report.ok and report.exit_status == 1
    assert report.deviation_starts_at == 2, (kind, report.verdicts)
    if kind == "doubled":
        assert "conservation" in report.findings
    layer = {a.index: a for a in report.layers}
    assert layer[4].own_relative < TOL and layer[2].own_relative > 1e-3


def test_corrupted_captum_layer_is_named():
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule

    network, x = dense_model(seed=5)
    report = audit_library(network, x, "captum", rule="zplus", dps=DPS, tolerance=TOL,
                           overrides={4: lambda: Alpha1_Beta0_Rule(set_bias_to_zero=True)})
    assert not report.ok
    assert report.deviation_starts_at == 4, report.verdicts


def test_saved_attribution_matches_and_a_corrupted_one_is_flagged():
    network, x = dense_model(seed=6)
    targets = positive_targets(network, x)
    relevance = explain(network, x, rule="zplus_split", target=targets, conventions=ZENNIT.conventions)
    good = audit_attribution(network, x, relevance, rule="zplus", target=targets, dps=DPS, tolerance=TOL)
    assert good.ok and "zennit-0.5.1" in good.matched
    corrupted = relevance.copy()
    corrupted[0, 2] *= 3.0
    bad = audit_attribution(network, x, corrupted, rule="zplus", target=targets, dps=DPS, tolerance=TOL)
    assert not bad.ok and not bad.matched
    assert "no-known-convention" in bad.findings and "conservation" in bad.findings


def test_cli_audit_json_and_attribution(tmp_path, capsys):
    from lrp_num.cli import main

    assert main(["audit", "--library", "zennit", "--model", "digits-mlp", "--rule", "epsilon",
                 "--sample", "0", "--json", "--dps", "30"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["profile"] == "zennit-0.5.1" and len(report["layers"]) == 3
    bad = tmp_path / "r.npy"
    np.save(bad, np.ones((1, 64)))
    assert main(["audit", "--attribution", str(bad), "--model", "digits-mlp", "--rule", "zplus",
                 "--sample", "0", "--json", "--dps", "30"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "fails" and "no-known-convention" in report["findings"]


def test_cli_without_torch_says_what_to_install(monkeypatch, capsys):
    from lrp_num.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    assert main(["audit", "--library", "zennit", "--model", "digits-mlp", "--rule", "zplus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'lrp-toolkit[audit]'" in err[0]


def test_zbox_only_on_the_first_layer():
    from lrp_num.errors import LRPError

    network, x = dense_model()
    with pytest.raises(LRPError, match="first linear layer"):
        audit_library(network, x, "zennit", rule="zbox", input_domain=(-3 * np.ones(6), 3 * np.ones(6)))


def test_import_zennit_leaves_no_torchvision_placeholder():
    import importlib.util

    assert zennit.rules.ZPlus is not None
    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules


def _gamma_below_flat():
    """gamma on the first Dense, flat above it: flat gives relevance to every hidden neuron,
    those with z_j < 0 and (a zero weight column, zero bias) z_j = 0 included."""
    from lrp_num.engine.composites import Composite, LayerRule

    rules = {0: LayerRule("gamma", {"gamma": 0.25}), 2: LayerRule("flat", {}), 4: LayerRule("epsilon", {})}
    return Composite("gamma-below-flat", lambda index, layer, first, box: rules[index])


def test_zennit_gamma_at_zero_and_negative_z_is_modelled(monkeypatch):
    """zennit's Gamma masks the upper relevance by z_j > 0 / z_j < 0 (zennit/rules.py): the
    profile's by_sign reproduces it; without it (gamma_split on every neuron) layer 0 deviates."""
    import dataclasses

    from lrp_num.audit import profiles

    network, x = dense_model(seed=7)
    first = network.layers[0]
    weight, bias = first.weight.copy(), first.bias.copy()
    weight[:, 1], bias[1] = 0.0, 0.0  # z_1 = 0 for every input
    layers = [Dense(weight, bias)] + list(network.source_layers[1:])
    network = Sequential(layers, input_shape=(6,))
    z = network.layers[0].forward(x, "identity") + bias
    assert (z < 0).any() and (z == 0).any()
    composite = _gamma_below_flat()
    report = audit_library(network, x, "zennit", composite=composite, dps=DPS, tolerance=TOL)
    assert max(a.own_relative for a in report.layers) < TOL, report.verdicts
    plain = dataclasses.replace(ZENNIT, conventions=dataclasses.replace(ZENNIT.conventions, by_sign=False))
    monkeypatch.setitem(profiles.PROFILES, "zennit", plain)
    unmodelled = audit_library(network, x, "zennit", composite=composite, dps=DPS, tolerance=TOL)
    layer = {a.index: a for a in unmodelled.layers}
    assert layer[2].own_relative < TOL and layer[0].own_relative > 1e-3


def test_zennit_gamma_on_the_issues_negative_logit_is_its_profile_not_gamma_split():
    """Issue 16: W = ((1), (-2)), b = 0, x = (1, 1), the explained logit z = -1. zennit's Gamma
    swaps w+ and w- there: (2/3, -5/3), which the profile (by_sign: gamma_split_negative)
    reproduces in the engine, the reference and the audit; gamma_split alone gives (5/3, -8/3)."""
    from lrp_num.errors import DerivationScopeWarning
    from lrp_num.reference import api as reference

    network = Sequential([Dense(np.array([[1.0], [-2.0]]), np.zeros(1))], input_shape=(2,))
    x = np.array([[1.0, 1.0]])
    linear = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        linear.weight[:] = torch.tensor([[1.0, -2.0]])
        linear.bias[:] = 0.0
    model = torch.nn.Sequential(linear)
    composite = zennit.composites.LayerMapComposite([(torch.nn.Linear, zennit.rules.Gamma(gamma=0.25))])
    inputs = torch.tensor(x, requires_grad=True)
    with composite.context(model) as modified:
        output = modified(inputs)
        (library,) = torch.autograd.grad(output, inputs, grad_outputs=output)
    library = library.numpy()
    np.testing.assert_allclose(library, [[2 / 3, -5 / 3]], rtol=1e-5)
    ours = explain(network, x, rule="gamma_split", conventions=ZENNIT.conventions)
    exact = reference.explain(network, x, rule="gamma_split", conventions=ZENNIT.conventions, dps=DPS)
    np.testing.assert_allclose(ours, library, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(exact, dtype=float), library, rtol=1e-14)
    report = audit_library(network, x, "zennit", rule="gamma", dps=DPS, tolerance=TOL)
    assert report.ok and max(a.own_relative for a in report.layers) < TOL, report.verdicts
    with pytest.warns(DerivationScopeWarning):
        plain = explain(network, x, rule="gamma_split")
    assert np.abs(plain - library).max() > 0.9


@pytest.mark.parametrize("library", ["zennit", "captum"])
def test_exact_max_pool_ties_audit_against_the_first_maximum(library, monkeypatch):
    """Issue 16: torch's max-pooling gradient, and so zennit and captum, give a window's tied
    maxima all to the first; the profiles say so (maxpool_ties="first"), so inputs with exact
    ties audit as any other; with the derived split the max-pooling layer deviates."""
    import dataclasses

    from lrp_num.audit import profiles
    from lrp_num.layers import Conv2d, Flatten, MaxPool2d, ReLU

    rng = np.random.default_rng(3)
    copy = Conv2d(np.ones((2, 1, 1, 1)), np.zeros(2))  # the channel twice, unchanged: ties stay exact
    network = Sequential([copy, ReLU(), MaxPool2d(2), Flatten(),
                          Dense(rng.uniform(0.5, 1.5, (8, 3)), np.array([1.0, 2.0, 3.0]))], input_shape=(1, 4, 4))
    x = rng.integers(0, 3, (2, 1, 4, 4)).astype(float)  # values 0, 1, 2: most windows hold a tie
    windows = x.reshape(2, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(2, 4, 4)
    assert (np.sum(windows == windows.max(axis=-1, keepdims=True), axis=-1) > 1).any()
    for rule in ("epsilon", "zplus"):
        report = audit_library(network, x, library, rule=rule, dps=DPS, tolerance=TOL)
        assert report.verdict == "matches" and max(a.own_relative for a in report.layers) < TOL, report.verdicts
    profile = profiles.PROFILES[library]
    split = dataclasses.replace(profile, conventions=dataclasses.replace(profile.conventions, maxpool_ties="split"))
    monkeypatch.setitem(profiles.PROFILES, library, split)
    report = audit_library(network, x, library, rule="epsilon", dps=DPS, tolerance=TOL)
    assert report.verdict == "fails" and max(a.own_relative for a in report.layers) > 1e-3
