"""Element-wise nonlinearities and LayerNorm / RMSNorm: derivation statuses, generated kernels
against the mpmath reference (50 digits), conservation and absorbed amounts, layers against torch,
and the engine on a small (batch, tokens, features) graph."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lrp_num.engine.composites import Composite, LayerRule
from lrp_num.engine.explain import explain_details
from lrp_num.engine.graph import Graph, Node
from lrp_num.engine.kernels import load_kernel
from lrp_num.errors import ShapeError, UnsupportedLayerError
from lrp_num.layers import GELU, Dense, Flatten, LayerNorm, RMSNorm, SiLU, Sigmoid, Tanh
from lrp_num.reference import transformer_nodes as reference

ACTIVATION_LAYERS = {"gelu": GELU(), "gelu_tanh": GELU("tanh"), "silu": SiLU(), "tanh": Tanh(),
                     "sigmoid": Sigmoid()}
RNG = np.random.default_rng(15)


def _float(values: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: float(v), otypes=[float])(values)


# -- derivations -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def derived():
    from lrp_sym.registry import load_declarations
    rules = load_declarations()
    return {name: rules[name].derive() for name in
            ("identity_nonlinear", "taylor_nonlinear", "norm_cp", "norm_full")}


def test_derivations_have_the_expected_statuses(derived):
    for derivation in derived.values():
        assert derivation.as_expected, [(p.name, p.status) for p in derivation.proofs
                                        if not p.as_expected]
    statuses = {p.name: p.status.value for d in derived.values() for p in d.proofs}
    assert statuses["conservation"] == "proved"  # identity rule, any g
    assert statuses["conservation_gelu"] == "refuted"  # Taylor: the remainder is lost
    assert statuses["root_point_sigmoid"] == "refuted"  # sigmoid has no root
    assert statuses["root_point_silu"] == "proved"
    assert statuses["remainder_order_sigmoid"] == "proved"
    assert statuses["positivity_sigmoid"] == "refuted"
    assert statuses["positivity_tanh"] == "proved"  # by the sign cases of x
    cp, full = derived["norm_cp"], derived["norm_full"]
    assert cp.proof("conservation_rmsnorm").status.value == "proved"
    assert cp.proof("conservation_layernorm").status.value == "refuted"
    assert cp.proof("passed_layernorm").status.value == "proved"
    assert full.proof("passed_layernorm").status.value == "proved"
    assert full.proof("conservation_rmsnorm").status.value == "refuted"


# -- element-wise kernels against the reference --------------------------------------------------

@pytest.mark.parametrize("activation", sorted(ACTIVATION_LAYERS))
@pytest.mark.parametrize("rule", ["identity_nonlinear", "taylor_nonlinear"])
def test_pointwise_kernel_matches_reference(rule, activation):
    x = RNG.normal(size=(2, 3, 5)) * 3
    x[0, 0, 0] = 0.0  # the root point: the kernel's limit value
    upper = RNG.uniform(-1, 1, size=x.shape)
    layer = ACTIVATION_LAYERS[activation]
    got = load_kernel(rule)(layer, x, upper)
    want = _float(reference.pointwise_relevance(rule, activation, x, upper))
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


def test_taylor_rule_absorbs_what_the_derivation_says():
    """R_out - R_in = c (g(0) + r(x)), c = R_out / g(x): the sigmoid loses c / 2 and more."""
    x = np.linspace(-3, 3, 13)
    upper = np.ones_like(x)
    g = Sigmoid()(x[None])[0]
    got = load_kernel("taylor_nonlinear")(Sigmoid(), x, upper)
    remainder = g - 0.5 - x / 4
    np.testing.assert_allclose(upper - got, upper / g * (0.5 + remainder), rtol=1e-12, atol=1e-15)
    identity = load_kernel("identity_nonlinear")(Sigmoid(), x, upper)
    np.testing.assert_array_equal(identity, upper)


def test_pointwise_kernel_refuses_an_unknown_activation():
    class Other:
        activation = "relu6"
    with pytest.raises(UnsupportedLayerError, match="relu6"):
        load_kernel("taylor_nonlinear")(Other(), np.ones(3), np.ones(3))


# -- normalisation kernels against the reference -------------------------------------------------

def _norm(norm: str, features: int = 5):
    weight, bias = RNG.normal(size=features), RNG.normal(size=features)
    return LayerNorm(weight, bias, eps=1e-3) if norm == "layernorm" else RMSNorm(weight, eps=1e-3)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("rule", ["norm_cp", "norm_full"])
def test_norm_kernel_matches_reference(rule, norm):
    layer = _norm(norm)
    x = RNG.normal(size=(2, 3, 5))
    upper = RNG.uniform(0.1, 1, size=x.shape)
    got = load_kernel(rule)(layer, x, upper)
    want = _float(reference.norm_relevance(rule, norm, x, layer.weight, layer.bias, layer.eps,
                                           upper))
    scale = np.abs(upper / layer(x)).max() * np.abs(x).max() * np.abs(layer.weight).max()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * scale)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_norm_forward_matches_reference(norm):
    layer = _norm(norm, 7)
    x = RNG.normal(size=(3, 7)) * 2
    want = _float(reference.norm_forward(norm, x, layer.weight, layer.bias, layer.eps))
    np.testing.assert_allclose(layer(x), want, rtol=1e-13, atol=1e-14)


def test_norm_conservation_and_bias_share():
    """norm_cp: sum R_in = sum c (y - beta) (RMSNorm: all of it); norm_full: only e / sigma^2."""
    x = RNG.normal(size=(4, 6))
    for layer in (_norm("layernorm", 6), _norm("rmsnorm", 6)):
        y = layer(x)
        upper = RNG.uniform(0.1, 1, size=x.shape)
        c = upper / y
        passed = (c * (y - layer.bias)).sum(axis=-1)
        cp = load_kernel("norm_cp")(layer, x, upper).sum(axis=-1)
        np.testing.assert_allclose(cp, passed, rtol=1e-10)
        if isinstance(layer, RMSNorm):
            np.testing.assert_allclose(cp, upper.sum(axis=-1), rtol=1e-10)
            sigma2 = (x**2).mean(axis=-1) + layer.eps
        else:
            assert not np.allclose(cp, upper.sum(axis=-1))
            sigma2 = x.var(axis=-1) + layer.eps
        full = load_kernel("norm_full")(layer, x, upper).sum(axis=-1)
        np.testing.assert_allclose(full, layer.eps / sigma2 * passed, rtol=1e-8, atol=1e-13)


def test_norm_layers_check_their_input():
    with pytest.raises(ShapeError, match="eps"):
        LayerNorm(np.ones(3), np.zeros(3), eps=0)
    with pytest.raises(ShapeError, match="features"):
        LayerNorm(np.ones(3), np.zeros(3))(np.ones((2, 4)))
    with pytest.raises(ShapeError, match="approximate"):
        GELU("erf")


# -- layers against torch ------------------------------------------------------------------------

def test_layers_match_torch():
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(2, 4, 6)) * 3
    pairs = [(GELU(), torch.nn.GELU()), (GELU("tanh"), torch.nn.GELU(approximate="tanh")),
             (SiLU(), torch.nn.SiLU()), (Tanh(), torch.nn.Tanh()), (Sigmoid(), torch.nn.Sigmoid())]
    weight, bias = RNG.normal(size=6), RNG.normal(size=6)
    layer_norm = torch.nn.LayerNorm(6, eps=1e-5, dtype=torch.float64)
    layer_norm.weight.data, layer_norm.bias.data = torch.tensor(weight), torch.tensor(bias)
    pairs.append((LayerNorm(weight, bias, 1e-5), layer_norm))
    if hasattr(torch.nn, "RMSNorm"):
        rms = torch.nn.RMSNorm(6, eps=1e-6, dtype=torch.float64)
        rms.weight.data = torch.tensor(weight)
        pairs.append((RMSNorm(weight, 1e-6), rms))
    for ours, theirs in pairs:
        with torch.no_grad():
            want = theirs(torch.tensor(x)).numpy()
        np.testing.assert_allclose(ours(x), want, rtol=1e-13, atol=1e-14, err_msg=repr(ours))


# -- the engine on a token graph ------------------------------------------------------------------

def _token_graph(tokens: int = 3, features: int = 6) -> Graph:
    weight, bias = RNG.normal(size=features), RNG.normal(size=features)
    return Graph([
        Node("norm", LayerNorm(weight, bias), "input"),
        Node("act", GELU(), "norm"),
        Node("rms", RMSNorm(weight), "act"),
        Node("flat", Flatten(), "rms"),
        Node("head", Dense(RNG.normal(size=(tokens * features, 4)), np.zeros(4)), "flat"),
    ], input_shape=(tokens, features))


def test_engine_default_composite_on_tokens():
    graph = _token_graph()
    x = RNG.normal(size=(2, 3, 6))
    result = explain_details(graph, x, rule="lrp0")
    rules = {report.name: report.rule for report in result.layers}
    assert rules["act"] == "identity_nonlinear" and rules["norm"] == "norm_cp"
    by_name = {report.name: report for report in result.layers}
    np.testing.assert_allclose(by_name["act"].relevance_in, by_name["act"].relevance_out)
    np.testing.assert_allclose(by_name["rms"].relevance_in, by_name["rms"].relevance_out)
    assert result.relevance.shape == x.shape


def test_engine_rules_selectable_per_node_type():
    graph = _token_graph()
    x = RNG.normal(size=(2, 3, 6))
    composite = dataclasses.replace(Composite.single("lrp0"),
                                    pointwise=LayerRule("taylor_nonlinear"),
                                    norm=LayerRule("norm_full"))
    result = explain_details(graph, x, composite=composite)
    by_name = {report.name: report for report in result.layers}
    assert by_name["act"].rule == "taylor_nonlinear" and by_name["rms"].rule == "norm_full"
    # the full linearisation absorbs almost everything (e / sigma^2 passes)
    assert np.all(np.abs(by_name["rms"].relevance_in) < 0.01 * np.abs(by_name["rms"].relevance_out))


def test_engine_refuses_a_rule_derived_for_another_node():
    graph = _token_graph()
    composite = dataclasses.replace(Composite.single("lrp0"), pointwise=LayerRule("norm_cp"))
    from lrp_num.errors import UnknownRuleError
    with pytest.raises(UnknownRuleError, match="element-wise"):
        explain_details(graph, RNG.normal(size=(1, 3, 6)), composite=composite)


# -- torch import ---------------------------------------------------------------------------------

def test_torch_import_of_nonlinearities_and_norms():
    torch = pytest.importorskip("torch")
    from lrp_num.io.torch_import import from_torch_module

    torch.manual_seed(0)
    nn = torch.nn
    norms = [nn.LayerNorm(6)] + ([nn.RMSNorm(6, eps=1e-6)] if hasattr(nn, "RMSNorm") else [])
    model = nn.Sequential(*norms, nn.GELU(), nn.Linear(6, 6), nn.GELU(approximate="tanh"),
                          nn.Linear(6, 6), nn.SiLU(), nn.Tanh(), nn.Sigmoid(),
                          nn.Linear(6, 3)).double().eval()
    with torch.no_grad():  # parameters away from their initial values
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    graph = from_torch_module(model, (6,))
    kinds = [type(node.operation).__name__ for node in graph.nodes]
    assert {"LayerNorm", "GELU", "SiLU", "Tanh", "Sigmoid"} <= set(kinds)
    x = RNG.normal(size=(4, 6))
    with torch.no_grad():
        want = model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(graph.forward(x), want, rtol=1e-12, atol=1e-13)
    relevance = explain_details(graph, x, rule="lrp0").relevance
    assert relevance.shape == x.shape and np.all(np.isfinite(relevance))


def test_torch_import_refuses_a_norm_over_two_axes():
    torch = pytest.importorskip("torch")
    from lrp_num.io.torch_import import from_torch_module

    with pytest.raises(UnsupportedLayerError, match="last axis"):
        from_torch_module(torch.nn.Sequential(torch.nn.LayerNorm((2, 3))), (2, 3))


# -- model files ----------------------------------------------------------------------------------

def test_model_file_round_trip_without_pickle(tmp_path):
    from lrp_num.io.model_io import load_npz, save_npz

    weight, bias = RNG.normal(size=6), RNG.normal(size=6)
    graph = Graph([
        Node("norm", LayerNorm(weight, bias, 1e-4), "input"),
        Node("gelu", GELU("tanh"), "norm"),
        Node("rms", RMSNorm(weight, 1e-6), "gelu"),
        Node("exact", GELU(), "rms"),
        Node("silu", SiLU(), "exact"),
        Node("tanh", Tanh(), "silu"),
        Node("sigmoid", Sigmoid(), "tanh"),
        Node("flat", Flatten(), "sigmoid"),
        Node("head", Dense(RNG.normal(size=(18, 2)), np.zeros(2)), "flat"),
    ], input_shape=(3, 6))
    path = tmp_path / "tokens.npz"
    save_npz(graph, path)
    with np.load(path, allow_pickle=False) as stored:
        assert all(stored[key].dtype != object for key in stored.files)
    loaded = load_npz(path).network
    x = RNG.normal(size=(2, 3, 6))
    np.testing.assert_array_equal(loaded.forward(x), graph.forward(x))
    assert [repr(node.operation) for node in loaded.nodes] == \
        [repr(node.operation) for node in graph.nodes]


# -- ONNX import ----------------------------------------------------------------------------------

def _onnx_model(tmp_path, nodes, initializers, features, opset=17, name="model.onnx"):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, features])],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _onnx_forward(path, x):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(onnx.load(str(path))).run(
        None, {"x": x.astype(np.float32)})[0].astype(np.float64)


def test_onnx_import_of_layer_norm_erf_gelu_sigmoid_tanh(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    from lrp_num.io.onnx_import import load_onnx

    features = 5
    scale = RNG.normal(size=features).astype(np.float32)
    bias = RNG.normal(size=features).astype(np.float32)
    constants = {"scale": scale, "bias": bias, "sqrt2": np.float32(np.sqrt(2)),
                 "one": np.float32(1), "half": np.float32(0.5)}
    nodes = [
        helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["n"], name="norm",
                         epsilon=1e-3),
        # the exact GELU as torch's exporter writes it for opsets below 20
        helper.make_node("Div", ["n", "sqrt2"], ["d"], name="div"),
        helper.make_node("Erf", ["d"], ["e"], name="erf"),
        helper.make_node("Add", ["e", "one"], ["e1"], name="add_one"),
        helper.make_node("Mul", ["n", "e1"], ["m"], name="times_x"),
        helper.make_node("Mul", ["m", "half"], ["g"], name="gelu"),
        helper.make_node("Sigmoid", ["g"], ["s"], name="sigmoid"),
        helper.make_node("Tanh", ["s"], ["y"], name="tanh"),
    ]
    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()]
    path = _onnx_model(tmp_path, nodes, initializers, features)
    network = load_onnx(path)
    kinds = [type(layer).__name__ for layer in network.layers]
    assert kinds == ["LayerNorm", "GELU", "Sigmoid", "Tanh"]
    x = RNG.normal(size=(2, 3, features))
    np.testing.assert_allclose(network.forward(x.astype(np.float32)), _onnx_forward(path, x),
                               rtol=2e-5, atol=2e-6)


def test_onnx_import_of_gelu_op_in_both_forms(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper

    from lrp_num.io.onnx_import import load_onnx

    nodes = [helper.make_node("Gelu", ["x"], ["t"], name="tanh_form", approximate="tanh"),
             helper.make_node("Gelu", ["t"], ["y"], name="exact")]
    path = _onnx_model(tmp_path, nodes, [], 4, opset=20)
    network = load_onnx(path)
    assert [repr(layer) for layer in network.layers] == ["GELU(approximate='tanh')", "GELU()"]
    x = RNG.normal(size=(2, 3, 4)) * 2
    try:
        want = _onnx_forward(path, x)
    except Exception as error:  # an onnx without the opset-20 Gelu reference
        pytest.skip(f"onnx.reference cannot run Gelu: {error}")
    np.testing.assert_allclose(network.forward(x.astype(np.float32)), want, rtol=2e-5, atol=2e-6)


def test_onnx_import_refuses_a_broken_gelu_pattern(tmp_path):
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    from lrp_num.io.onnx_import import load_onnx

    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"], name="div"),
             helper.make_node("Tanh", ["d"], ["y"], name="tanh")]
    initializers = [numpy_helper.from_array(np.float32(np.sqrt(2)), "sqrt2")]
    path = _onnx_model(tmp_path, nodes, initializers, 4)
    with pytest.raises(UnsupportedLayerError, match="exact GELU"):
        load_onnx(path)


# -- lrp verify ------------------------------------------------------------------------------------

def _verify_graph() -> Graph:
    rng = np.random.default_rng(3)
    weight, bias = rng.normal(size=4), rng.normal(size=4)
    return Graph([
        Node("ln", LayerNorm(weight, bias), "input"),
        Node("gelu", GELU(), "ln"),
        Node("rms", RMSNorm(weight), "gelu"),
        Node("silu", SiLU(), "rms"),
        Node("tanh", Tanh(), "silu"),
        Node("sigmoid", Sigmoid(), "tanh"),
        Node("flat", Flatten(), "sigmoid"),
        Node("head", Dense(rng.normal(size=(8, 3)), rng.normal(size=3) * 0.1), "flat"),
    ], input_shape=(2, 4))


def test_verify_passes_on_a_token_graph_with_the_default_rules():
    from lrp_num.verify import verify

    x = np.random.default_rng(4).normal(size=(2, 2, 4))
    report = verify(_verify_graph(), x, rules=["lrp0", "epsilon"], composites=[])
    for row in report.rows:
        assert row.error is None, row.error
        assert all(c.holds for c in row.checks if c.required), [c for c in row.checks if not c.holds]
        # the LayerNorm's bias keeps its share: relevance is not conserved, and verify knows why
        assert row.conservation_reference > 1e-3 and row.balance_reference < 1e-40


def test_verify_confirms_what_the_taylor_and_full_rules_absorb():
    from lrp_num.verify import verify_method

    x = np.random.default_rng(5).normal(size=(2, 2, 4))
    composite = dataclasses.replace(Composite.single("lrp0"),
                                    pointwise=LayerRule("taylor_nonlinear"),
                                    norm=LayerRule("norm_full"))
    row = verify_method(_verify_graph(), x, composite, "composite")
    assert all(c.holds for c in row.checks if c.required), [c for c in row.checks if not c.holds]
    # the reference's absorbed amounts (the derivations' claims, evaluated at 50 digits) close
    # the balance sum R + kept = f_c(x) independently of the kernels
    assert row.balance_reference < 1e-40


def test_reference_refuses_a_linear_rule_on_a_norm_node():
    from lrp_num.errors import UnknownRuleError
    from lrp_num.reference import layer_plan

    composite = dataclasses.replace(Composite.single("lrp0"), norm=LayerRule("lrp0"))
    with pytest.raises(UnknownRuleError, match="no rule of"):
        layer_plan(_verify_graph(), composite=composite)


def test_torch_tensors_give_the_numpy_relevance():
    torch = pytest.importorskip("torch")
    graph = _verify_graph()
    x = np.random.default_rng(6).normal(size=(3, 2, 4))
    composite = dataclasses.replace(Composite.single("epsilon", epsilon=0.1),
                                    pointwise=LayerRule("taylor_nonlinear"),
                                    norm=LayerRule("norm_full"))
    for method in ({"rule": "lrp0"}, {"composite": composite}):
        want = explain_details(graph, x, **method).relevance
        got = explain_details(graph, torch.tensor(x), **method).relevance
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("rule, layer", [
    ("taylor_nonlinear", GELU()), ("taylor_nonlinear", Tanh()), ("identity_nonlinear", SiLU()),
    ("norm_cp", LayerNorm(np.arange(1.0, 5.0), np.ones(4))), ("norm_full", RMSNorm(np.ones(4)))])
def test_node_rule_kernels_use_only_the_array_api(rule, layer):
    strict = pytest.importorskip("array_api_strict")
    x = np.random.default_rng(8).normal(size=(2, 3, 4))
    upper = np.random.default_rng(9).uniform(0.1, 1, size=x.shape)
    got = load_kernel(rule)(layer, strict.asarray(x), strict.asarray(upper))
    assert type(got).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(got), load_kernel(rule)(layer, x, upper), rtol=1e-14)


def test_certified_and_local_checks_refuse_the_new_nodes_clearly():
    from lrp_num.verify_local import verify_local

    graph = _verify_graph()
    x = np.random.default_rng(10).normal(size=(1, 2, 4))
    with pytest.raises(UnsupportedLayerError, match="without --local"):
        verify_local(graph, x, rule="lrp0")
    pytest.importorskip("flint")
    from lrp_num.certified.network import prepare_balls
    with pytest.raises(UnsupportedLayerError, match="without --certified"):
        prepare_balls(graph, (2, 4))


def test_torch_import_of_functional_nonlinearities():
    torch = pytest.importorskip("torch")
    from lrp_num.io.torch_import import from_torch_module

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(5, 5)

        def forward(self, x):
            h = torch.nn.functional.gelu(self.fc(x), approximate="tanh")
            h = torch.nn.functional.silu(h).tanh()
            return torch.sigmoid(torch.nn.functional.gelu(h))

    torch.manual_seed(1)
    model = Block().double().eval()
    graph = from_torch_module(model, (5,))
    assert [repr(node.operation) for node in graph.nodes][1:] == [
        "GELU(approximate='tanh')", "SiLU()", "Tanh()", "GELU()", "Sigmoid()"]
    x = RNG.normal(size=(3, 5)) * 2
    with torch.no_grad():
        want = model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(graph.forward(x), want, rtol=1e-12, atol=1e-14)
