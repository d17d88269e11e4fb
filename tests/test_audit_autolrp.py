"""lrp audit --library autolrp: autoLRP 0.2.0 against its profile (the bias split off by
magnitude, one eps everywhere) and DTD; a corrupted run and what the profile does not model
are flagged at their layer.

Needs torch and autoLRP (``pip install --no-deps autolrp==0.2.0``); skipped cleanly without them.
"""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("autolrp")

from lrp_num.audit import audit_library  # noqa: E402
from lrp_num.engine.network import Sequential  # noqa: E402
from lrp_num.errors import LRPError  # noqa: E402
from lrp_num.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU  # noqa: E402

from audit_models import dense_model  # noqa: E402

DPS = 30
TOL = 1e-9


def conv_model(seed=1, pool=MaxPool2d):
    rng = np.random.default_rng(seed)
    layers = [Conv2d(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), padding=1), ReLU(), pool(2),
              Conv2d(rng.normal(size=(4, 3, 2, 2)), rng.normal(size=4)), ReLU(), Flatten(),
              Dense(rng.normal(size=(16, 3)), rng.normal(size=3) + 2.0)]
    return Sequential(layers, input_shape=(2, 6, 6)), rng.normal(size=(2, 2, 6, 6))


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "alphabeta"])
def test_autolrp_follows_its_profile_on_a_dense_model(rule):
    network, x = dense_model()
    report = audit_library(network, x, "autolrp", rule=rule, dps=DPS, tolerance=TOL)
    assert report.ok, report.verdicts
    assert max(a.own_relative for a in report.layers) < TOL
    assert report.layers[0].dtd_relative > 1e-3  # the magnitude split is a convention of its own


def test_autolrp_follows_its_profile_on_a_conv_model_with_max_pooling():
    network, x = conv_model()
    report = audit_library(network, x, "autolrp", rule="zplus", dps=DPS, tolerance=TOL)
    assert report.ok, report.verdicts


def test_the_bias_split_is_what_makes_autolrp_match(monkeypatch):
    """Without the magnitude convention (the bias in no denominator and keeping nothing) the
    first layer from the top with a bias deviates."""
    import dataclasses

    from lrp_num.audit import profiles

    plain = dataclasses.replace(profiles.AUTOLRP, conventions=dataclasses.replace(profiles.AUTOLRP.conventions,
                                                                                  bias="dtd"))
    monkeypatch.setitem(profiles.PROFILES, "autolrp", plain)
    network, x = dense_model()
    report = audit_library(network, x, "autolrp", rule="epsilon", dps=DPS, tolerance=TOL)
    assert not report.ok
    assert max(a.index for a in report.layers if a.own_relative > TOL) == 4


def test_average_pooling_is_flagged_at_the_pooling_layer():
    """autoLRP routes average pooling by the plain gradient (R / k each), which the profile
    states and does not model: the deviation starts at the pooling layer, the layers above match."""
    network, x = conv_model(pool=AvgPool2d)
    report = audit_library(network, x, "autolrp", rule="epsilon", dps=DPS, tolerance=TOL)
    layer = {a.index: a for a in report.layers}
    assert not report.ok
    assert layer[3].own_relative < TOL and layer[2].own_relative > 1e-3


def test_a_corrupted_autolrp_rule_is_named_at_the_top_layer():
    network, x = dense_model(seed=2)
    report = audit_library(network, x, "autolrp", rule="epsilon", dps=DPS, tolerance=TOL,
                           overrides={"AddmmBackward": lambda: ("gamma", {"gamma": 0.5})})
    assert not report.ok
    assert max(a.index for a in report.layers if a.own_relative > TOL) == 4


def test_autolrp_limits_are_clear_errors():
    network, x = dense_model()
    with pytest.raises(LRPError):
        audit_library(network, x, "autolrp", rule="epsilon", parameters={"epsilon": 0.1}, dps=DPS)
    with pytest.raises(LRPError):
        audit_library(network, x, "autolrp", rule="gamma", dps=DPS)
    with pytest.raises(LRPError):
        audit_library(network, x, "autolrp", composite="epsilon-plus", dps=DPS)


def test_cli_library_autolrp(capsys, monkeypatch):
    import importlib.util

    from lrp_num.cli import main

    assert main(["audit", "--library", "autolrp", "--model", "digits-mlp", "--rule", "zplus", "--sample", "0",
                 "--json", "--dps", "30"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["profile"] == "autoLRP-0.2.0"
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "autolrp" else find_spec(name, *a))
    assert main(["audit", "--library", "autolrp", "--model", "digits-mlp", "--rule", "zplus", "--sample", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "autolrp" in err[0]
