"""Conventions an attribution is audited against: the bias as a neuron (Bach et al. 2015) and a
user's own convention file (``--convention``). Each correct convention passes; each defect,
computed the way a faulty implementation would, is flagged. No torch needed.

The textbook attributions are computed here by a plain NumPy replica of the paper's formulas,
sharing no code with the engine or the reference.
"""

import numpy as np
import pytest

from lrp_num.audit import audit_attribution
from lrp_num.engine.network import Sequential
from lrp_num.layers import Dense

from audit_models import dense_model  # noqa: E402

DPS = 30
TOL = 1e-9


def textbook_lrp(network, x, targets, layer_rule):
    """Bach et al. 2015's backward pass: ReLU passes relevance, each Dense applies ``layer_rule``."""
    activations = network.forward_trace(np.asarray(x, dtype=np.float64))  # the input of every layer, then f(x)
    relevance = np.zeros_like(activations[-1])
    rows = np.arange(len(x))
    relevance[rows, targets] = activations[-1][rows, targets]
    for layer, a in zip(reversed(network.layers), reversed(activations[:-1])):
        if isinstance(layer, Dense):
            relevance = layer_rule(a, layer.weight, layer.bias, relevance)
    return relevance


def ratio(numerator, denominator):
    """numerator / denominator with 0 / 0 = 0 (the paper's convention for an empty group)."""
    safe = np.where(denominator == 0, 1.0, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


def bach_alpha_beta(alpha, beta, swapped_bias=False):
    """Eq. (60): z_j^+- = sum_i (x_i w_ij)^+- + b_j^+- (the bias neuron), no stabiliser.

    ``swapped_bias``: a defect, b_j^- in the positive group and b_j^+ in the negative one.
    """
    def rule(a, w, b, upper):
        z = a[:, :, None] * w[None]                                  # z_ij, (batch, i, j)
        zp, zn = np.maximum(z, 0), np.minimum(z, 0)
        bp, bn = np.maximum(b, 0), np.minimum(b, 0)
        if swapped_bias:
            bp, bn = bn, bp
        dp, dn = zp.sum(axis=1) + bp, zn.sum(axis=1) + bn
        return (alpha * zp * ratio(upper, dp)[:, None] - beta * zn * ratio(upper, dn)[:, None]).sum(axis=2)
    return rule


def bach_epsilon(eps):
    """Eq. (58): z_j = sum_i x_i w_ij + b_j, R_i = sum_j z_ij / (z_j + eps sign(z_j)) R_j."""
    def rule(a, w, b, upper):
        z = a @ w + b
        d = z + eps * np.where(z >= 0, 1.0, -1.0)
        return a * ((upper / d) @ w.T)
    return rule


def targets_of(network, x):
    return network.forward(x).argmax(axis=1)


@pytest.mark.parametrize("alpha,beta", [(2.0, 1.0), (1.0, 0.0)])
def test_textbook_alpha_beta_with_the_bias_as_a_neuron_passes_and_is_identified(alpha, beta):
    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    relevance = textbook_lrp(network, x, targets, bach_alpha_beta(alpha, beta))
    report = audit_attribution(network, x, relevance, rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               parameters={"alpha": alpha, "beta": beta})
    assert report.ok, report.verdicts
    assert "bias-neuron" in report.verdicts[0]
    matched = {a.library_rule: a.own_relative for a in report.layers}
    assert matched["bias-neuron (Bach et al. 2015)"] < TOL
    assert matched["zennit-0.5.1"] > TOL  # zennit's 1e-6 stabiliser everywhere is another convention


def test_textbook_epsilon_with_the_bias_as_a_neuron_passes():
    network, x = dense_model(seed=2)
    targets = targets_of(network, x)
    relevance = textbook_lrp(network, x, targets, bach_epsilon(0.01))
    report = audit_attribution(network, x, relevance, rule="epsilon", target=targets, dps=DPS, tolerance=TOL,
                               parameters={"epsilon": 0.01}, library="bias-neuron")
    assert report.ok, report.verdicts
    assert report.layers[0].own_relative < TOL


def test_alpha_beta_with_the_bias_neuron_in_the_wrong_group_is_flagged():
    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    faulty = textbook_lrp(network, x, targets, bach_alpha_beta(1.0, 0.0, swapped_bias=True))
    report = audit_attribution(network, x, faulty, rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               parameters={"alpha": 1.0, "beta": 0.0})
    assert not report.ok
    assert min(a.own_relative for a in report.layers) > 1e-3 and report.layers[0].dtd_relative > 1e-3


# -- a user's convention file ----------------------------------------------------------------

from lrp_num.audit.convention_file import load_convention  # noqa: E402
from lrp_num.errors import ConventionFileError  # noqa: E402

NEURON_TOML = """
name = "textbook alpha-beta"
bias = "neuron"

[stabiliser]
epsilon = 1e-12
where = "zero"

[rules]
alphabeta = { variant = "alphabeta", alpha = 2, beta = 1 }
"""


def captum_like_zplus(a, w, b, upper):
    """x w^+ over sum_i x_i w_ij^+ + b_j + 1e-9 sign: z+ with the full bias, stabilised everywhere."""
    wp = np.maximum(w, 0)
    d = a @ wp + b
    d = d + 1e-9 * np.where(d >= 0, 1.0, -1.0)
    return a * ((upper / d) @ wp.T)


def split_zplus(bias_in_denominator):
    """zennit-like z+ with the input split by sign: max(0, x w), b^+ or nothing, no stabiliser."""
    def rule(a, w, b, upper):
        z = np.maximum(a[:, :, None] * w[None], 0)
        d = z.sum(axis=1) + (np.maximum(b, 0) if bias_in_denominator else 0.0)
        return (z * ratio(upper, d)[:, None]).sum(axis=2)
    return rule


def test_a_toml_convention_file_is_the_same_mechanism_as_the_built_in_profile(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(NEURON_TOML)
    profile = load_convention(path)
    assert profile.name == "textbook alpha-beta"
    assert profile.conventions.bias == "neuron" and profile.conventions.stabilise == "zero"
    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    relevance = textbook_lrp(network, x, targets, bach_alpha_beta(2.0, 1.0))
    report = audit_attribution(network, x, relevance, rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               profiles=[profile])
    assert report.ok, report.verdicts
    assert report.profile == "textbook alpha-beta" and report.layers[0].own_relative < TOL
    faulty = textbook_lrp(network, x, targets, bach_alpha_beta(2.0, 1.0, swapped_bias=True))
    assert not audit_attribution(network, x, faulty, rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                                 profiles=[profile]).ok


@pytest.mark.parametrize("bias,where,variant,make", [
    ("denominator", "everywhere", "zplus", lambda: captum_like_zplus),
    ("zennit", "zero", "zplus_split", lambda: split_zplus(True)),
    ("none", "zero", "zplus_split", lambda: split_zplus(False)),
])
def test_json_convention_files_describe_each_variant(tmp_path, bias, where, variant, make):
    import json

    network, x = dense_model(seed=3)
    x = np.abs(x)
    targets = targets_of(network, x)
    relevance = textbook_lrp(network, x, targets, make())
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "bias": bias, "rules": {"zplus": variant},
                                "stabiliser": {"epsilon": 1e-9 if where == "everywhere" else 1e-12,
                                               "where": where}}))
    report = audit_attribution(network, x, relevance, rule="zplus", target=targets, dps=DPS, tolerance=TOL,
                               profiles=[load_convention(path)])
    assert report.ok, report.verdicts
    # the same attribution is flagged against a file describing another bias placement
    other = {"denominator": "none", "zennit": "denominator", "none": "denominator"}[bias]
    path.write_text(json.dumps({"name": "other", "bias": other, "rules": {"zplus": variant}}))
    flagged = audit_attribution(network, x, relevance, rule="zplus", target=targets, dps=DPS, tolerance=TOL,
                                profiles=[load_convention(path)])
    assert flagged.layers[0].own_relative > 1e-3  # (it may still match DTD, which the audit reports as such)
    assert flagged.ok == (bias == "none")


def test_a_convention_file_states_the_max_pool_tie_rule(tmp_path):
    path = tmp_path / "ties.toml"
    path.write_text('name = "torch-like"\nmax_pool_ties = "first"\n')
    assert load_convention(path).conventions.maxpool_ties == "first"
    path.write_text('name = "derived"\n')
    assert load_convention(path).conventions.maxpool_ties == "split"


@pytest.mark.parametrize("text", [
    'name = "x"\ncolour = "red"\n',                             # unknown top-level key
    'name = "x"\nbias = "sometimes"\n',                         # bias placement outside its choices
    'name = "x"\n[stabiliser]\nepsilon = -1\n',                  # negative stabiliser
    'name = "x"\n[stabiliser]\nepsilon = nan\n',                 # not finite
    'name = "x"\n[stabiliser]\nwhere = "often"\n',               # placement outside its choices
    'name = "x"\n[stabiliser]\nsign_of_zero = -1\n',             # sign(0) = -1 is not modelled
    'name = "x"\n[stabiliser]\nepsilom = 1e-6\n',                # misspelt key
    'name = "x"\n[rules]\nzplus = "zplus_fast"\n',               # unknown variant
    'name = "x"\n[rules]\nlrp9 = "lrp0"\n',                      # unknown rule
    'name = "x"\n[rules]\nzplus = { variant = "zplus", gamma = 1 }\n',  # parameter the variant lacks
    'name = "x"\n[rules]\ngamma = { variant = "gamma", gamma = true }\n',
    'bias = "neuron"\n',                                         # no name
    'name = "x"\nbias = \n',                                     # not TOML
    'name = "x"\nmax_pool_ties = "last"\n',                     # no such tie rule
])
def test_bad_convention_files_are_one_clear_error(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConventionFileError):
        load_convention(path)


def test_bad_json_and_missing_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", ')
    for path in (bad, tmp_path / "missing.toml", tmp_path):
        with pytest.raises(ConventionFileError):
            load_convention(path)
    bad.write_text('["name"]')
    with pytest.raises(ConventionFileError):
        load_convention(bad)


def test_cli_convention_file_and_its_errors(tmp_path, capsys):
    from lrp_num.cli import main

    network_file, attribution = tmp_path / "net.npz", tmp_path / "r.npy"
    from lrp_num.io.model_io import save_npz
    network, x = dense_model(seed=1)
    save_npz(network, network_file)
    np.save(tmp_path / "x.npy", x[:1])
    targets = targets_of(network, x[:1])
    np.save(attribution, textbook_lrp(network, x[:1], targets, bach_alpha_beta(2.0, 1.0)))
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(NEURON_TOML)
    bad.write_text(NEURON_TOML.replace('where = "zero"', 'where = "zero"\nclip = true'))
    common = ["audit", "--attribution", str(attribution), "--model", str(network_file), "--input",
              str(tmp_path / "x.npy"), "--rule", "alphabeta", "--dps", "30", "--tolerance", "1e-9"]
    assert main(common + ["--convention", str(good)]) == 0
    assert "textbook alpha-beta" in capsys.readouterr().out
    assert main(common + ["--convention", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "clip" in err[0]
    assert main(common + ["--convention", ""]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(common + ["--convention", str(good), "--for-library", "zennit"]) == 2  # one or the other
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# -- per-layer relevance files (--layers) ------------------------------------------------------

def textbook_trace(network, x, targets, layer_rule, faulty_layer=None, factor=1.0):
    """As :func:`textbook_lrp`, recording the relevance at every layer's input; the Dense layer
    ``faulty_layer`` multiplies what it passes down by ``factor`` (a defect at one layer)."""
    activations = network.forward_trace(np.asarray(x, dtype=np.float64))
    relevance = np.zeros_like(activations[-1])
    rows = np.arange(len(x))
    relevance[rows, targets] = activations[-1][rows, targets]
    trace = {len(network.layers): relevance}
    for k in reversed(range(len(network.layers))):
        layer = network.layers[k]
        if isinstance(layer, Dense):
            relevance = layer_rule(activations[k], layer.weight, layer.bias, relevance)
            if k == faulty_layer:
                relevance = factor * relevance
        trace[k] = relevance
    return trace


def save_layers(folder, trace, keep=lambda k: True):
    folder.mkdir()
    for k, value in trace.items():
        if k > 0 and keep(k):
            np.save(folder / f"layer_{k}.npy", value)


def test_layer_files_localise_a_deviation_to_its_layer(tmp_path):
    from lrp_num.audit.layer_files import read_layer_relevance

    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    trace = textbook_trace(network, x, targets, bach_alpha_beta(2.0, 1.0), faulty_layer=2, factor=1.5)
    save_layers(tmp_path / "layers", trace)
    layers = read_layer_relevance(tmp_path / "layers", network, x)
    assert sorted(layers) == [1, 2, 3, 4, 5]
    report = audit_attribution(network, x, trace[0], rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               layers=layers)
    assert not report.ok
    per_layer = {a.index: a for a in report.layers if not a.layer.startswith("input")}
    assert per_layer[4].own_relative < TOL and per_layer[2].own_relative > 0.1  # the fault is at layer 2
    assert max(k for k, a in per_layer.items() if a.own_relative > TOL) == 2
    good = textbook_trace(network, x, targets, bach_alpha_beta(2.0, 1.0))
    report = audit_attribution(network, x, good[0], rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               layers={k: v for k, v in good.items() if k > 0})
    assert report.ok, report.verdicts
    assert max(a.own_relative for a in report.layers if not a.layer.startswith("input")) < TOL


@pytest.mark.parametrize("problem", ["nan", "inf", "shape", "name", "index", "empty", "file"])
def test_bad_layer_files_are_one_line_errors(tmp_path, capsys, problem):
    from lrp_num.cli import main
    from lrp_num.io.model_io import save_npz

    network, x = dense_model(seed=1)
    x = x[:1]
    save_npz(network, tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", x)
    targets = targets_of(network, x)
    trace = textbook_trace(network, x, targets, bach_alpha_beta(2.0, 1.0))
    np.save(tmp_path / "r.npy", trace[0])
    folder = tmp_path / "layers"
    save_layers(folder, trace, keep=lambda k: problem != "empty")
    if problem in ("nan", "inf"):
        bad = trace[2].copy()
        bad[0, 1] = np.nan if problem == "nan" else np.inf
        np.save(folder / "layer_2.npy", bad)
    elif problem == "shape":
        np.save(folder / "layer_2.npy", np.ones(7))
    elif problem == "name":
        np.save(folder / "layer-2.npy", trace[2])
    elif problem == "index":
        np.save(folder / "layer_9.npy", trace[2])
    common = ["audit", "--attribution", str(tmp_path / "r.npy"), "--model", str(tmp_path / "net.npz"), "--input",
              str(tmp_path / "x.npy"), "--rule", "alphabeta", "--dps", "30", "--tolerance", "1e-9", "--layers",
              str(tmp_path / "r.npy" if problem == "file" else folder)]
    assert main(common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err


def test_cli_layers_localise(tmp_path, capsys):
    import json

    from lrp_num.cli import main
    from lrp_num.io.model_io import save_npz

    network, x = dense_model(seed=1)
    save_npz(network, tmp_path / "net.npz")
    np.save(tmp_path / "x.npy", x)
    targets = targets_of(network, x)
    trace = textbook_trace(network, x, targets, bach_alpha_beta(2.0, 1.0), faulty_layer=4, factor=0.5)
    np.save(tmp_path / "r.npy", trace[0])
    save_layers(tmp_path / "layers", trace)
    assert main(["audit", "--attribution", str(tmp_path / "r.npy"), "--model", str(tmp_path / "net.npz"),
                 "--input", str(tmp_path / "x.npy"), "--rule", "alphabeta", "--dps", "30", "--tolerance", "1e-9",
                 "--layers", str(tmp_path / "layers"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    rows = {row["index"]: row for row in report["layers"] if not row["layer"].startswith("input")}
    assert rows[4]["own_relative"] > 0.1 and 2 in rows and 0 in rows


# -- --plot ------------------------------------------------------------------------------------

def _digits_attribution(tmp_path, corrupt=False):
    from lrp_num import explain, load_builtin
    from lrp_num.audit.profiles import ZENNIT

    model = load_builtin("digits-mlp")
    x = model.test_images[:1]
    relevance = explain(model.network, x, rule="zplus_split", conventions=ZENNIT.conventions)
    if corrupt:
        relevance = relevance.copy()
        relevance[0, 20:28] *= -2.0
    np.save(tmp_path / "r.npy", relevance)
    return tmp_path / "r.npy"


@pytest.mark.parametrize("corrupt", [False, True])
def test_cli_plot_writes_a_png(tmp_path, capsys, corrupt):
    pytest.importorskip("matplotlib")
    from lrp_num.cli import main

    attribution = _digits_attribution(tmp_path, corrupt)
    picture = tmp_path / "audit.png"
    status = main(["audit", "--attribution", str(attribution), "--model", "digits-mlp", "--sample", "0",
                   "--rule", "zplus", "--dps", "30", "--plot", str(picture)])
    assert status == (1 if corrupt else 0), capsys.readouterr()
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staged leftovers


def test_plot_of_a_library_audit_per_layer(tmp_path):
    pytest.importorskip("matplotlib")
    from lrp_num.audit.plot import save_audit_plot

    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    trace = textbook_trace(network, x, targets, bach_alpha_beta(2.0, 1.0), faulty_layer=2, factor=1.5)
    report = audit_attribution(network, x, trace[0], rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               layers={k: v for k, v in trace.items() if k > 0})
    path = save_audit_plot(report, tmp_path / "layers.png", tolerance=TOL)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    from lrp_num.cli import main

    attribution = _digits_attribution(tmp_path)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    picture = tmp_path / "audit.png"
    assert main(["audit", "--attribution", str(attribution), "--model", "digits-mlp", "--sample", "0",
                 "--rule", "zplus", "--dps", "30", "--plot", str(picture)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "heatmap" in err[0]
    assert not picture.exists()


@pytest.mark.parametrize("name", ["audit.xyz", "missing/audit.png", "r.npy"])
def test_bad_plot_paths_are_refused_before_the_audit(tmp_path, capsys, name):
    pytest.importorskip("matplotlib")
    from lrp_num.cli import main

    attribution = _digits_attribution(tmp_path)
    before = attribution.read_bytes()
    assert main(["audit", "--attribution", str(attribution), "--model", "digits-mlp", "--sample", "0",
                 "--rule", "zplus", "--dps", "30", "--plot", str(tmp_path / name)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert attribution.read_bytes() == before


# -- the conventions the profiles added, engine against the mpmath reference ---------------------

@pytest.mark.parametrize("layer_kind", ["dense", "conv"])
@pytest.mark.parametrize("conventions,rule", [
    (dict(bias="zennit", eps=1e-6, stabilise="everywhere", by_sign=True), "gamma_split"),
    (dict(bias="magnitude", eps=1e-11, stabilise="everywhere"), "lrp0"),
    (dict(bias="magnitude", eps=1e-11, stabilise="everywhere"), "zplus_split"),
    (dict(bias="magnitude", eps=1e-3, stabilise="zero"), "alphabeta"),
])
def test_engine_follows_the_reference_under_by_sign_and_magnitude(layer_kind, conventions, rule):
    """Upper relevance on every neuron (z_j > 0, < 0 and = 0): the engine's derived kernels under
    the convention equal the mpmath reference, which shares no code with them."""
    from lrp_num import explain, reference
    from lrp_num.engine.conventions import Conventions
    from lrp_num.layers import Conv2d, Flatten

    rng = np.random.default_rng(11)
    if layer_kind == "dense":
        weight, bias = rng.normal(size=(5, 4)), rng.normal(size=4)
        weight[:, 2], bias[2] = 0.0, 0.0  # z_2 = 0
        network, x = Sequential([Dense(weight, bias)], input_shape=(5,)), rng.normal(size=(2, 5))
    else:
        weight, bias = rng.normal(size=(3, 2, 2, 2)), rng.normal(size=3)
        weight[1], bias[1] = 0.0, 0.0
        network = Sequential([Conv2d(weight, bias), Flatten()], input_shape=(2, 3, 3))
        x = rng.normal(size=(2, 2, 3, 3))
    x = np.abs(x) if rule == "lrp0" else x
    n_out = network.forward(x).shape[1]
    top = rng.normal(size=(len(x), n_out))
    chosen = Conventions(**conventions)
    engine = explain(network, x, rule=rule, target=top, conventions=chosen)
    exact = np.asarray(reference.explain(network, x, rule=rule, target=top, conventions=chosen, dps=30),
                       dtype=np.float64).reshape(engine.shape)
    assert np.abs(engine - exact).max() <= 1e-12 * max(1.0, np.abs(exact).max())
    plain = explain(network, x, rule=rule, target=top,
                    conventions=Conventions(**{**conventions, "bias": "dtd" if conventions["bias"] == "magnitude"
                                               else conventions["bias"], "by_sign": False}))
    assert np.abs(engine - plain).max() > 1e-3  # the convention changes the result here


# -- --layers after the merge with the verdicts (issue 12) ----------------------------------------

def dtd_alpha_beta(alpha, beta):
    """alpha-beta as derived (DTD conventions): z_ij^+- over sum_i z_ij^+-, no bias, 0 / 0 = 0."""
    def rule(a, w, b, upper):
        z = a[:, :, None] * w[None]
        zp, zn = np.maximum(z, 0), np.minimum(z, 0)
        return (alpha * zp * ratio(upper, zp.sum(axis=1))[:, None]
                - beta * zn * ratio(upper, zn.sum(axis=1))[:, None]).sum(axis=2)
    return rule


def test_a_deviating_layer_file_fails_the_audit_and_is_pointed_at(tmp_path):
    """The input relevance is right, one layer file is not: the per-layer comparison alone finds
    the deviation, fails the verdict and points at that layer."""
    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    good = textbook_trace(network, x, targets, bach_alpha_beta(2.0, 1.0))
    layers = {k: v for k, v in good.items() if k > 0}
    layers[2] = 1.5 * layers[2]
    report = audit_attribution(network, x, good[0], rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               layers=layers)
    assert "bias-neuron (Bach et al. 2015)" in report.matched  # at the input it matches
    assert not report.ok and report.exit_status == 1 and report.verdict == "fails"
    assert "deviates-from-convention" in report.findings
    assert report.deviation_at == 2
    values = report.to_dict()  # the JSON report: the exit status, not the arrays kept for --plot
    assert values["exit_status"] == 1 and "inputs" not in values
    assert report.inputs["library"].shape == x.shape and report.inputs["reference"].shape == x.shape


def test_layer_files_of_a_dtd_attribution_compare_with_dtd(tmp_path):
    """An attribution computed as derived (no library's bias convention) is closest to DTD; its
    layer files are compared with the DTD reference and match it."""
    network, x = dense_model(seed=1)
    targets = targets_of(network, x)
    trace = textbook_trace(network, x, targets, dtd_alpha_beta(2.0, 1.0))
    report = audit_attribution(network, x, trace[0], rule="alphabeta", target=targets, dps=DPS, tolerance=TOL,
                               layers={k: v for k, v in trace.items() if k > 0})
    assert report.matched == ["DTD"]
    assert report.ok, report.verdicts
    assert any(line.startswith("per layer (closest convention DTD)") for line in report.verdicts)
    per_layer = [a for a in report.layers if not a.layer.startswith("input")]
    assert per_layer and max(a.own_relative for a in per_layer) < TOL
