"""lrp_num.testing: assert_matches_reference, the library mapping, Composite.from_zennit and the
epsilon_stabilises convention that makes a library epsilon below 1e-6 expressible."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import lrp_num
from lrp_num import reference
from lrp_num.engine.conventions import Conventions
from lrp_num.errors import LRPError, UnknownRuleError
from lrp_num.layers import Conv2d, Dense, Flatten, ReLU, SumPool2d
from lrp_num.testing import assert_matches_reference, library_rule, our_rule

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_zennit = pytest.mark.skipif(not HAS_TORCH or importlib.util.find_spec("zennit") is None,
                                  reason="needs torch and zennit")
needs_captum = pytest.mark.skipif(not HAS_TORCH or importlib.util.find_spec("captum") is None,
                                  reason="needs torch and captum")


def small_network() -> lrp_num.Sequential:
    """conv 1 -> 2 (3x3) - ReLU - sum pool 2 - dense 8 -> 3, fixed weights with both signs."""
    rng = np.random.default_rng(16)
    conv = Conv2d(rng.uniform(-1, 1, (2, 1, 3, 3)), rng.uniform(-0.3, 0.3, 2))
    dense = Dense(rng.uniform(-1, 1, (8, 3)), rng.uniform(-0.3, 0.3, 3))
    return lrp_num.Sequential([conv, ReLU(), SumPool2d(2, 1), Flatten(), dense], input_shape=(1, 5, 5))


def small_inputs(batch: int = 3) -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 1, (batch, 1, 5, 5))


# -- our networks and arrays -----------------------------------------------------------------

def test_the_engine_passes_in_float64_and_float32():
    network, x = small_network(), small_inputs()
    for dtype in (np.float64, np.float32):
        R = lrp_num.explain(network, x.astype(dtype), rule="zplus")
        assert R.dtype == dtype
        assert_matches_reference(R, network, x.astype(dtype), rule="zplus")


def test_the_bound_follows_the_dtype_of_R():
    network, x = small_network(), small_inputs()
    R = reference.to_float(reference.explain(network, x, rule="zplus", dps=40))
    off = R * (1 + 1e-9)  # far beyond float64 rounding, far within float32's
    assert_matches_reference(off.astype(np.float32), network, x, rule="zplus")
    with pytest.raises(AssertionError, match="float64 bound"):
        assert_matches_reference(off, network, x, rule="zplus")


def test_relevance_in_float32_underflow_passes_within_the_underflow_floor():
    """f = 1e-20 * relu(1e-20) is subnormal in float32: the first-order bound u |R| alone fails it."""
    network = lrp_num.Sequential([Dense(np.array([[1.0]]), np.array([1e-20])), ReLU(),
                                  Dense(np.array([[1e-20]]), np.array([0.0]))], input_shape=(1,))
    x = np.zeros((1, 1), dtype=np.float32)
    exact = reference.to_float(reference.explain(network, x.astype(np.float64), rule="w2", dps=40))
    R = exact.astype(np.float32)  # rounded into float32's subnormal range: 1e-40 keeps ~17 bits
    assert 0 < abs(R[0, 0]) < np.finfo(np.float32).tiny and R[0, 0] != exact[0, 0]
    assert_matches_reference(R, network, x, rule="w2")
    with pytest.raises(AssertionError, match="float32 bound"):
        assert_matches_reference(R * np.float32(1.5), network, x, rule="w2")


def test_a_wrong_rule_fails_naming_input_node_entry_and_size():
    network, x = small_network(), small_inputs(4)
    R = lrp_num.explain(network, x, rule="epsilon", epsilon=0.5)
    with pytest.raises(AssertionError) as failure:
        assert_matches_reference(R, network, x, rule="zplus")
    message = str(failure.value)
    assert "worst: input " in message and " of 4" in message
    assert "relevance from node 'layer0', Conv2d" in message  # the layer whose relevance reaches the input
    assert "x its bound" in message and "entry (0, " in message


def test_relevance_at_inner_tensors_names_the_first_deviating_node():
    network, x = small_network(), small_inputs(2)
    results = reference.explain_trace(network, x, composite="epsilon-plus", dps=30, diagnostics=False)
    inner = np.stack([reference.to_float(np.asarray(r.relevance_at["layer3"])) for r in results])
    R = {"input": np.stack([reference.to_float(np.asarray(r.relevance)) for r in results]).reshape(x.shape),
         "layer3": inner}
    assert_matches_reference(R, network, x, composite="epsilon-plus")
    with pytest.raises(AssertionError, match="first deviation from the output down: the output of node 'layer3'"):
        assert_matches_reference(R, network, x, rule="zplus")  # epsilon, not z+, at the dense layer


def test_call_mistakes_are_lrp_errors():
    network, x = small_network(), small_inputs()
    R = lrp_num.explain(network, x, rule="zplus")
    with pytest.raises(LRPError, match="either rule= or composite="):
        assert_matches_reference(R, network, x, rule="zplus", composite="epsilon-plus")
    with pytest.raises(LRPError, match="needs library="):
        assert_matches_reference(R, network, x, rule=object())
    with pytest.raises(LRPError, match="no tensor 'nowhere'"):
        assert_matches_reference({"nowhere": R}, network, x, rule="zplus")


# -- the convention: a library epsilon is the layer's only stabiliser -------------------------

def test_epsilon_stabilises_drops_the_convention_eps_on_epsilon_layers():
    layer = Dense(np.array([[1.0], [-1.0]]), np.array([0.0]))
    network = lrp_num.Sequential([layer], input_shape=(2,))
    x = np.array([[1.0 + 2e-7, 1.0]])  # z = 2e-7, between epsilon 1e-9 and eps 1e-6
    alone = Conventions(bias="zennit", eps=1e-6, stabilise="everywhere", epsilon_stabilises=True)
    added = Conventions(bias="zennit", eps=1e-6, stabilise="everywhere")
    for conventions, denominator in ((alone, 2e-7 + 1e-9), (added, 2e-7 + 1e-9 + 1e-6)):
        engine = lrp_num.explain(network, x, rule="epsilon", epsilon=1e-9, conventions=conventions)
        ref = reference.to_float(reference.explain(network, x, rule="epsilon", epsilon=1e-9, conventions=conventions))
        z = float((x @ layer.weight)[0, 0])
        np.testing.assert_allclose(engine, x * layer.weight.T * z / (z - 2e-7 + denominator), rtol=1e-9)
        np.testing.assert_allclose(engine, ref, rtol=1e-12)
        if importlib.util.find_spec("flint") is not None:  # the certified path: the same convention
            from lrp_num.certified.network import explain_balls

            balls = explain_balls(network, x, rule="epsilon", epsilon=1e-9, conventions=conventions)[0].relevance
            np.testing.assert_allclose([float(b.mid()) for b in balls], ref.ravel(), rtol=1e-12)


def test_library_epsilon_below_the_stabiliser_maps_without_subtraction():
    assert library_rule("zennit", "epsilon", epsilon=1e-9) == lrp_num.LayerRule("epsilon", {"epsilon": 1e-9})
    assert library_rule("captum", "EpsilonRule", epsilon=1e-12) == lrp_num.LayerRule("epsilon", {"epsilon": 1e-12})


# -- the mapping of rule names -----------------------------------------------------------------

@pytest.mark.parametrize("library, name, expected", [
    ("zennit", "ZPlus", ("zplus_split", {})), ("zennit", "zennit.rules.Gamma", ("gamma_split", {"gamma": 0.25})),
    ("zennit", "Epsilon", ("epsilon", {"epsilon": 1e-6})), ("zennit", "WSquare", ("w2", {})),
    ("zennit", "AlphaBeta", ("alphabeta", {"alpha": 2.0, "beta": 1.0})), ("zennit", "Flat", ("flat", {})),
    ("zennit", "zplus", ("zplus_split", {})),
    ("captum", "EpsilonRule", ("epsilon", {"epsilon": 1e-9})), ("captum", "GammaRule", ("gamma", {"gamma": 0.25})),
    ("captum", "Alpha1_Beta0_Rule", ("zplus", {})),
])
def test_library_rule_names_map_to_the_profiles_derivations(library, name, expected):
    assert library_rule(library, name) == lrp_num.LayerRule(*expected)


def test_unknown_library_rules_are_named():
    with pytest.raises(UnknownRuleError, match="no rule 'LRPMagic'.*ZPlus \\(zplus\\)"):
        library_rule("zennit", "LRPMagic")
    with pytest.raises(UnknownRuleError, match="no library 'tf-explain'|no profile 'tf-explain'"):
        library_rule("tf-explain", "zplus")


@needs_zennit
def test_zennit_rule_objects_carry_their_parameters():
    from lrp_num.testing import import_zennit

    rules = import_zennit().rules
    assert library_rule("zennit", rules.ZPlus()) == lrp_num.LayerRule("zplus_split", {})
    assert library_rule("zennit", rules.Gamma(gamma=0.5)) == lrp_num.LayerRule("gamma_split", {"gamma": 0.5})
    assert library_rule("zennit", rules.Epsilon(epsilon=1e-9)) == lrp_num.LayerRule("epsilon", {"epsilon": 1e-9})
    assert library_rule("zennit", rules.AlphaBeta(alpha=3.0, beta=2.0)) == \
        lrp_num.LayerRule("alphabeta", {"alpha": 3.0, "beta": 2.0})
    assert library_rule("zennit", rules.WSquare()) == lrp_num.LayerRule("w2", {})
    assert our_rule("zennit", rules.Gamma(gamma=0.5)) == lrp_num.LayerRule("gamma", {"gamma": 0.5})


@needs_captum
def test_captum_rule_objects_carry_their_parameters():
    from captum.attr._utils import lrp_rules

    assert library_rule("captum", lrp_rules.EpsilonRule(epsilon=1e-3)) == \
        lrp_num.LayerRule("epsilon", {"epsilon": 1e-3})
    assert library_rule("captum", lrp_rules.GammaRule(gamma=0.3)) == lrp_num.LayerRule("gamma", {"gamma": 0.3})
    assert library_rule("captum", lrp_rules.Alpha1_Beta0_Rule()) == lrp_num.LayerRule("zplus", {})


@needs_zennit
def test_composite_from_zennit_reads_rules_parameters_stabiliser_and_box():
    from lrp_num.testing import import_zennit

    composites = import_zennit().composites
    network = small_network()
    plan = lrp_num.Composite.from_zennit(composites.EpsilonPlus(epsilon=1e-9)).plan(list(network.layers), False)
    assert plan[0] == lrp_num.LayerRule("zplus", {}) and plan[4] == lrp_num.LayerRule("epsilon", {"epsilon": 1e-9})
    box = lrp_num.Composite.from_zennit(composites.EpsilonGammaBox(low=-1.0, high=2.0, gamma=0.5, stabilizer=1e-7))
    plan = box.plan(list(network.layers), True)
    assert plan[0].rule == "zbox" and box.input_domain == (-1.0, 2.0) and box.eps == 1e-7
    assert plan[4] == lrp_num.LayerRule("epsilon", {"epsilon": 1e-6})
    alpha = lrp_num.Composite.from_zennit(composites.EpsilonAlpha2Beta1()).plan(list(network.layers), False)
    assert alpha[0] == lrp_num.LayerRule("alphabeta", {"alpha": 2.0, "beta": 1.0})
    with pytest.raises(UnknownRuleError, match="not a zennit LayerMapComposite"):
        lrp_num.Composite.from_zennit(object())


# -- torch modules against zennit ------------------------------------------------------------------

def _zennit_relevance(model, x, composite):
    import torch

    from lrp_num.testing import import_zennit

    zennit = import_zennit()
    with zennit.attribution.Gradient(model, composite) as attributor:
        return attributor(x, lambda y: torch.nn.functional.one_hot(y.argmax(1), y.shape[1]) * y)[1]


def _everywhere(rule):
    import torch

    from lrp_num.testing import import_zennit

    composites = import_zennit().composites
    return composites.LayerMapComposite(composites.layer_map_base() + [((torch.nn.Linear, torch.nn.Conv2d), rule)])


@needs_zennit
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_zennit_zplus_and_epsilon_below_1e_6_pass_on_a_torch_module(dtype):
    import torch

    from lrp_num.testing import import_zennit, to_torch

    rules = import_zennit().rules
    model = to_torch(small_network(), dtype=getattr(torch, dtype))
    x = torch.tensor(small_inputs(), dtype=getattr(torch, dtype))
    for rule in (rules.ZPlus(), rules.Epsilon(epsilon=1e-9), rules.Gamma(gamma=0.5)):
        R = _zennit_relevance(model, x, _everywhere(rule))
        assert_matches_reference(R, model, x, rule=rule, library="zennit")


@needs_zennit
def test_zennit_epsilon_checked_as_zplus_fails_naming_the_torch_module():
    import torch

    from lrp_num.testing import import_zennit, to_torch

    model = to_torch(small_network(), dtype=torch.float32)
    x = torch.tensor(small_inputs(), dtype=torch.float32)
    R = _zennit_relevance(model, x, _everywhere(import_zennit().rules.Epsilon(epsilon=0.25)))
    with pytest.raises(AssertionError, match="relevance from node '0', Conv2d") as failure:
        assert_matches_reference(R, model, x, rule="ZPlus", library="zennit")
    assert "under the zennit profile" in str(failure.value) and "float32 bound" in str(failure.value)


@needs_zennit
def test_zennit_composite_object_passes():
    import torch

    from lrp_num.testing import import_zennit, to_torch

    composite = import_zennit().composites.EpsilonPlus(epsilon=1e-9)
    model = to_torch(small_network(), dtype=torch.float32)
    x = torch.tensor(small_inputs(), dtype=torch.float32)
    assert_matches_reference(_zennit_relevance(model, x, composite), model, x, composite=composite)


@needs_zennit
def test_from_torch_accepts_graph_twins_and_to_torch_round_trips():
    import torch

    from lrp_num.testing import from_torch, residual_networks, to_torch
    from hypothesis import find

    graph, _ = find(residual_networks(), lambda case: case[0].nodes[0].operation.weight.any())
    twin = to_torch(graph, dtype=torch.float64)
    back = from_torch(twin, graph.input_shape)
    x = np.random.default_rng(1).uniform(-1, 1, (3, *graph.input_shape))
    np.testing.assert_allclose(back.forward(x), graph.forward(x), rtol=1e-12)
    chain = from_torch(to_torch(small_network()), (1, 5, 5))
    np.testing.assert_allclose(chain.forward(small_inputs()), small_network().forward(small_inputs()), rtol=1e-12)


def test_forward_cancellation_in_float32_is_measured_into_the_bound():
    """z = 1.5 (-1.1f) + 1.5 (1.1015625) cancels 700-fold: float32's forward error (2.5e-5 relative)
    reaches R through the dense layer, whose bias keeps most of f; a correct float32 run passes."""
    from lrp_num.layers import AvgPool2d
    conv = Conv2d(np.array([[[[np.float32(-1.1), 1.1015625], [0.0, 0.0]]]], dtype=np.float64), np.zeros(1))
    dense = Dense(np.array([[1.0]]), np.array([np.float32(1.4976563453674316)], dtype=np.float64))
    network = lrp_num.Sequential([conv, ReLU(), AvgPool2d(2, 1), Flatten(), dense], input_shape=(1, 3, 3))
    x = np.full((1, 1, 3, 3), 1.5, dtype=np.float32)
    R = lrp_num.explain(network, x, composite="epsilon-plus")  # z+ on the convolution: no cancellation there
    assert R.dtype == np.float32
    assert_matches_reference(R, network, x, composite="epsilon-plus")
    with pytest.raises(AssertionError, match="float32 bound"):
        assert_matches_reference(R * np.float32(1 + 1e-3), network, x, composite="epsilon-plus")
