"""``lrp verify --local``: the layer-local check against the mpmath and the arb reference (issue 13)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys

import numpy as np
import pytest

import lrp_num
from lrp_num.cli import main
from lrp_num.engine import explain as engine
from lrp_num.errors import LRPError, MissingDependencyError, ShapeError
from lrp_num.verify_local import format_local_table, verify_local
import lrp_num.verify_local as verify_local_module


@pytest.fixture(scope="module")
def resnet():
    return lrp_num.load_builtin("digits-resnet")


#: both high-precision paths; the arb path needs python-flint (the certified extra) and skips without it
PATHS = [pytest.param("arb", marks=pytest.mark.skipif(importlib.util.find_spec("flint") is None,
                                                       reason="the arb path needs python-flint")), "mpmath"]


def check(model, neurons=4, path=None, **method):
    method = method or {"composite": "deep-taylor"}
    return verify_local(model.network, model.test_images[0], input_domain=model.input_domain,
                        target=int(model.test_labels[0]), neurons=neurons, path=path, **method)


@pytest.mark.parametrize("path", PATHS)
def test_correct_engine_passes_every_node(resnet, path):
    report = check(resnet, path=path)
    assert report.ok, format_local_table(report)
    assert report.path == path and {row.reference for row in report.layers} == {path}
    names = [row.name for row in report.layers]
    assert "block1.add" in names and "block2.shortcut" in names and "fc" in names
    for row in report.layers:
        assert row.sampled == min(4, row.nonzero)
        assert row.error_over_bound <= 1 and row.leak == 0
        assert row.rule == row.engine_rule
    # real comparisons were made: some nodes had errors of a few ulps, none of them zero everywhere
    assert any(row.max_ulps > 0 for row in report.layers)


def _mutated(index, factor):
    original = engine._apply_node_rule

    def mutated(layer, inputs, above, choice, conventions, box, node_index, *rest):
        lower, valid = original(layer, inputs, above, choice, conventions, box, node_index, *rest)
        if node_index == index:
            lower = [relevance * factor for relevance in lower]
        return lower, valid

    return mutated


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["block2.conv1", "block1.add"])
def test_a_relative_error_of_1e9_at_one_node_is_caught_there_only(resnet, monkeypatch, name, path):
    index = resnet.network.index(name)
    monkeypatch.setattr(engine, "_apply_node_rule", _mutated(index, 1 + 1e-9))
    report = check(resnet, path=path)
    failed = [row.name for row in report.layers if not row.ok]
    assert failed == [name], format_local_table(report)
    row = next(row for row in report.layers if row.name == name)
    assert "agreement" in row.failures() and row.error_over_bound > 1e3
    assert not report.ok


@pytest.mark.parametrize("path", PATHS)
def test_a_wrong_rule_at_one_node_is_caught_there_only(resnet, monkeypatch, path):
    index = resnet.network.index("block2.conv2")
    planned = verify_local_module._engine_plan

    def wrong_plan(*args):
        plan = dict(planned(*args))
        plan[index] = dataclasses.replace(plan[index], rule="lrp0")
        return plan

    monkeypatch.setattr(verify_local_module, "_engine_plan", wrong_plan)
    report = check(resnet, path=path)
    failed = {row.name: row.failures() for row in report.layers if not row.ok}
    assert list(failed) == ["block2.conv2"], format_local_table(report)
    assert "agreement" in failed["block2.conv2"] and "rule (engine lrp0)" in failed["block2.conv2"]


def test_k_beyond_the_outputs_is_clamped_and_conservation_is_then_required(resnet):
    report = check(resnet, neurons=10 ** 6)
    assert report.ok, format_local_table(report)
    for row in report.layers:
        assert row.sampled == row.nonzero <= row.outputs
        assert row.absorbed_exact and row.conservation_required
        assert row.conservation_over_bound <= 1
    # the stem's z^B neurons on the black background have slope 0: their relevance is absorbed
    stem = report.layers[0]
    assert stem.absorbed > 1e3 * stem.conservation_bound


@pytest.mark.parametrize("neurons", [2, 10 ** 6])
def test_conservation_check_fails_where_relevance_is_created(resnet, monkeypatch, neurons):
    """A 1e-9 relative error at one node fails that node's float64 conservation check too, on
    a sample (the absorbed relevance known from the neurons without terms) or on every neuron."""
    index = resnet.network.index("block2.conv2")
    monkeypatch.setattr(engine, "_apply_node_rule", _mutated(index, 1 + 1e-9))
    report = check(resnet, neurons=neurons)
    row = next(row for row in report.layers if row.name == "block2.conv2")
    assert row.conservation_required and "conservation" in row.failures()
    assert all("conservation" not in other.failures() for other in report.layers if other is not row)


def test_absorbed_relevance_of_neurons_without_terms_equals_the_references(resnet):
    """The neurons without a non-zero term (z^B on the black background, z+ where every input
    with a positive weight is 0) give all of R_j to the stabiliser: what the support test finds
    on a sample of 4 equals what the reference sums over every neuron."""
    sampled, whole = check(resnet, neurons=4), check(resnet, neurons=10 ** 6)
    for part, every in zip(sampled.layers, whole.layers):
        assert part.absorbed_exact and part.conservation_required
        assert part.absorbed == pytest.approx(every.absorbed, rel=1e-12, abs=1e-300)
    absorbing = {row.name for row in whole.layers if row.absorbed > 0}
    assert absorbing == {"stem", "block2.shortcut"}
    assert sampled.ok and whole.ok


def test_sample_is_seeded(resnet):
    first = check(resnet, neurons=3)
    again = check(resnet, neurons=3)
    other = verify_local(resnet.network, resnet.test_images[0], composite="deep-taylor",
                         input_domain=resnet.input_domain, neurons=3, seed=7)
    assert [r.max_ulps for r in first.layers] == [r.max_ulps for r in again.layers]
    assert first.seed == 0 and other.seed == 7
    assert [r.max_ulps for r in first.layers] != [r.max_ulps for r in other.layers]


def test_formula_rules_and_their_absorbed_relevance():
    model = lrp_num.load_builtin("digits-mlp")
    report = check(model, neurons=3, composite="epsilon-plus")
    assert report.ok, format_local_table(report)
    assert {row.rule for row in report.layers} == {"epsilon"}
    top = report.layers[-1]  # one neuron with relevance: sampled whole, the check is required
    assert top.absorbed_exact and top.conservation_required and top.absorbed != 0
    assert not report.layers[0].conservation_required  # 3 of many: the absorbed relevance is estimated


@pytest.mark.parametrize("arguments, error", [
    ({"neurons": 0}, LRPError), ({"neurons": 2.5}, LRPError), ({"path": "interval"}, LRPError),
    ({"seed": -1}, LRPError),
])
def test_bad_arguments_are_clear_errors(resnet, arguments, error):
    with pytest.raises(error):
        verify_local(resnet.network, resnet.test_images[0], composite="deep-taylor", **arguments)


def test_one_input_only(resnet):
    with pytest.raises(ShapeError, match="one input"):
        verify_local(resnet.network, resnet.test_images[:2], composite="deep-taylor")


def test_cli_local_json(capsys):
    status = main(["verify", "--local", "--neurons", "2", "--model", "digits-mlp", "--rules", "zplus",
                   "--samples", "1", "--json"])
    out = capsys.readouterr().out
    assert status == 0
    (report,) = json.loads(out)
    assert report["neurons"] == 2 and report["method"] == "zplus" and report["ok"]
    assert all(layer["status"] == "pass" and layer["sampled"] <= 2 for layer in report["layers"])


def test_cli_local_table_and_failure_exit(capsys, monkeypatch):
    assert main(["verify", "--local", "--neurons", "2", "--model", "digits-cnn", "--samples", "1"]) == 0
    assert "local verification passed" in capsys.readouterr().out
    monkeypatch.setattr(engine, "_apply_node_rule", _mutated(2, 1 + 1e-9))
    assert main(["verify", "--local", "--neurons", "2", "--model", "digits-cnn", "--samples", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: agreement" in out and "local verification FAILED" in out


@pytest.mark.parametrize("argv, message", [
    (["verify", "--neurons", "4"], "--local"),
    (["verify", "--local", "--neurons", "0"], "at least 1"),
    (["verify", "--local", "--local-seed", "-3", "--model", "digits-mlp"], "seed"),
])
def test_cli_flag_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_small_resnet18_from_the_builder():
    pytest.importorskip("torch")
    from lrp_num.io.torch_architectures import resnet18
    from lrp_num.io.torch_import import from_torch_module

    graph = from_torch_module(resnet18(num_classes=10, width=4, stem="cifar").double(), (3, 8, 8))
    x = np.random.default_rng(0).random((3, 8, 8))
    report = verify_local(graph, x, neurons=3, composite="epsilon-plus")
    assert report.ok, format_local_table(report)
    assert sum(row.rule == "add_z" for row in report.layers) == 8


# -- the arb path ---------------------------------------------------------------------------------

def _both_references(monkeypatch):
    """Record, for every node the arb path checks, the mpmath reference and the arb balls."""
    from lrp_num.certified.balls import from_mpf

    pairs = []
    original = verify_local_module._check_node_arb

    def recording(*arguments):
        balls = verify_local_module._arb_reference(*arguments)
        if balls is not None:
            exact = verify_local_module._mpmath_reference(*arguments)
            pairs.append((arguments[0].name, [from_mpf(value) for value in exact.values], balls.values,
                          exact.absorbed, balls.absorbed))
        return original(*arguments)

    monkeypatch.setattr(verify_local_module, "_check_node_arb", recording)
    return pairs


def _assert_inside(pairs):
    assert pairs
    for name, exact, balls, absorbed_exact, absorbed_balls in pairs:
        assert len(exact) == len(balls), name
        for value, ball in zip(exact, balls):
            assert ball.contains(value), (name, value, ball)
            assert float(ball.rad()) <= 1e-40 * (abs(float(ball.mid())) + 1e-300), (name, ball)
        assert absorbed_balls == pytest.approx(absorbed_exact, rel=1e-15, abs=1e-300), name


@pytest.mark.parametrize("name, method", [
    ("digits-resnet", {"composite": "deep-taylor"}), ("digits-resnet", {"composite": "epsilon-plus"}),
    ("digits-cnn", {"composite": "epsilon-gamma-box"}), ("digits-cnn", {"rule": "w2"}),
    ("digits-cnn", {"rule": "flat"}), ("digits-mlp", {"composite": "deep-taylor"}),
    ("digits-resnet", {"composite": "alpha2-beta1"}), ("digits-resnet", {"rule": "zplus_split"}),
])
def test_arb_balls_contain_the_mpmath_reference_on_the_digits_models(monkeypatch, name, method):
    pytest.importorskip("flint")
    pairs = _both_references(monkeypatch)
    report = check(lrp_num.load_builtin(name), neurons=5, path="arb", **method)
    assert report.ok, format_local_table(report)
    assert {row.reference for row in report.layers} == {"arb"}
    assert len(pairs) == len(report.layers)
    _assert_inside(pairs)


def test_arb_balls_contain_the_mpmath_reference_on_a_small_resnet(monkeypatch):
    pytest.importorskip("flint")
    pytest.importorskip("torch")
    from lrp_num.io.torch_architectures import resnet18
    from lrp_num.io.torch_import import from_torch_module

    graph = from_torch_module(resnet18(num_classes=10, width=4, stem="cifar").double(), (3, 8, 8))
    x = np.random.default_rng(0).random((3, 8, 8))
    pairs = _both_references(monkeypatch)
    report = verify_local(graph, x, neurons=3, composite="deep-taylor", path="arb")
    assert report.ok, format_local_table(report)
    assert sum(row.rule == "add_z" for row in report.layers) == 8
    _assert_inside(pairs)


def test_arb_path_with_negative_batchnorm_scales(monkeypatch):
    """A batch norm with gamma < 0 flips the sign of its rows' weights: z+ then takes w^- of the
    layer's own weights on those rows (the arb path's per-row swap), as mpmath's fold does."""
    pytest.importorskip("flint")
    from lrp_num.layers import BatchNorm, Conv2d, Dense, Flatten, ReLU

    rng = np.random.default_rng(3)
    gamma = np.array([1.5, -0.7, 0.9, -1.2])
    network = lrp_num.Sequential([
        Conv2d(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4) * 0.1, padding=(1, 1)),
        BatchNorm(gamma, rng.normal(size=4) * 0.1, rng.normal(size=4) * 0.1, rng.random(4) + 0.5), ReLU(),
        Conv2d(rng.normal(size=(3, 4, 3, 3)), -np.abs(rng.normal(size=3)) * 0.1),
        BatchNorm(-gamma[:3], rng.normal(size=3) * 0.1, rng.normal(size=3) * 0.1, rng.random(3) + 0.5), ReLU(),
        Flatten(), Dense(rng.normal(size=(27, 5)), np.zeros(5))], input_shape=(2, 5, 5))
    x = rng.random((2, 5, 5))
    pairs = _both_references(monkeypatch)
    report = verify_local(network, x, neurons=6, rule="zplus", path="arb")
    assert report.ok, format_local_table(report)
    _assert_inside(pairs)
    assert len(pairs) == 3


def test_rules_without_a_matrix_form_take_mpmath_on_the_arb_path():
    pytest.importorskip("flint")
    report = check(lrp_num.load_builtin("digits-mlp"), neurons=3, path="arb", rule="gamma_split")
    assert report.ok and report.path == "arb"
    assert {row.reference for row in report.layers} == {"mpmath"}
    assert "(mpmath)" in format_local_table(report)


@pytest.mark.parametrize("bias", ["neuron", "captum"])
def test_gamma_split_under_the_neuron_and_captum_conventions(bias):
    """gamma_split's derivation holds its bias b + gamma b^+; the engine must not add b_j again
    (it did: 1e14 ulps at every node)."""
    from lrp_num.engine.conventions import Conventions

    report = check(lrp_num.load_builtin("digits-mlp"), neurons=3, path="mpmath", rule="gamma_split",
                   conventions=Conventions(bias=bias))
    assert report.ok, format_local_table(report)
    assert len(report.layers) == 3 and all(row.max_ulps < 1e3 for row in report.layers)


def test_two_product_is_exact():
    from fractions import Fraction

    from lrp_num.certified.sampled import two_product

    rng = np.random.default_rng(0)
    a = rng.normal(size=200) * 10.0 ** rng.integers(-30, 30, size=200)
    b = rng.normal(size=200)
    p, e = two_product(a, b)
    for ai, bi, pi, ei in zip(a, b, p, e):
        assert Fraction(pi) + Fraction(ei) == Fraction(ai) * Fraction(bi)
        assert pi == ai * bi


def test_cli_path_flag(capsys):
    pytest.importorskip("flint")
    for path in ("arb", "mpmath"):  # python-flint is required above
        status = main(["verify", "--local", "--neurons", "2", "--model", "digits-mlp", "--rules", "zplus",
                       "--samples", "1", "--json", "--path", path])
        (report,) = json.loads(capsys.readouterr().out)
        assert status == 0 and report["path"] == path
        assert {layer["reference"] for layer in report["layers"]} == {path}
    assert main(["verify", "--model", "digits-mlp", "--path", "arb"]) == 2
    err = capsys.readouterr().err
    assert "--local" in err and len(err.strip().splitlines()) == 1


def test_without_python_flint(monkeypatch, capsys, resnet):
    monkeypatch.setitem(sys.modules, "flint", None)  # import flint now raises ImportError
    with pytest.raises(MissingDependencyError, match="python-flint"):
        check(resnet, path="arb")
    assert check(resnet, neurons=2).path == "mpmath"
    assert main(["verify", "--local", "--path", "arb", "--model", "digits-mlp", "--neurons", "2"]) == 2
    err = capsys.readouterr().err
    assert "python-flint" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("conventions", [{"bias": "zennit"}, {"bias": "neuron"}, {"bias": "captum"},
                                         {"stabilise": "everywhere", "eps": 1e-3}])
@pytest.mark.parametrize("rule", ["w2", "zplus", "zbox", "gamma", "lrp0", "epsilon", "bias_neuron", "flat",
                                  "alphabeta", "zplus_split"])
def test_arb_path_under_other_conventions(monkeypatch, conventions, rule):
    """The bias share v_0j b_j of each convention and a stabiliser at every neuron, on a small
    convolution, average pooling and a dense layer: the balls contain the mpmath values."""
    pytest.importorskip("flint")
    from lrp_num.engine.conventions import Conventions
    from lrp_num.layers import AvgPool2d, Conv2d, Dense, Flatten, ReLU

    rng = np.random.default_rng(1)
    network = lrp_num.Sequential([
        Conv2d(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4) * 0.1, padding=(1, 1)), ReLU(),
        AvgPool2d((2, 2), (1, 1)), Flatten(), Dense(rng.normal(size=(64, 5)), rng.normal(size=5) * 0.1)],
        input_shape=(2, 5, 5))
    x = rng.random((2, 5, 5))
    pairs = _both_references(monkeypatch)
    # z^B only at the input: the deep-taylor composite (z^B, then z+)
    method = {"composite": "deep-taylor"} if rule == "zbox" else {"rule": rule}
    report = verify_local(network, x, neurons=5, path="arb", conventions=Conventions(**conventions),
                          input_domain=(0.0, 1.0) if rule == "zbox" else None, **method)
    assert report.ok, format_local_table(report)
    assert [row.reference for row in report.layers] == ["arb"] * 3
    _assert_inside(pairs)
