"""The layers of branching networks: addition (add_z, add_zplus, add_epsilon), the per-channel
affine layer and concatenation, from their derivations to the generated kernels.

The kernels run on stand-in operators with exactly the contract of the engine's: an addition
(forward sums the stacked addends on axis 1, transpose broadcasts back, no bias) and a diagonal
layer (w_cc = scale_c, b_c = shift_c). The references evaluate the derivations' own symbolic
R_i at 50 digits, sharing no code with the kernels.
"""

from __future__ import annotations

import functools
from pathlib import Path

import mpmath
import numpy as np
import pytest
from sympy import Rational, Sum, sympify

from codegen_support import shipped_derivations
from lrp_num.errors import ShapeError
from lrp_num.engine.kernels import known_rules, load_condition, load_kernel
from lrp_num.layers.operators import WEIGHT_TRANSFORMS
from lrp_sym import ORTHANT, REAL_SPACE, RootPointRule, Status, x_i
from lrp_sym.derivation import DerivationError
from lrp_sym.numeric import LayerInstance
from lrp_sym.registry import load_declarations
from lrp_sym.sums import over_inputs
from lrp_sym.symbols import R, eps, i, j, n, x

ROOT = Path(__file__).resolve().parent.parent
ADD_RULES = ("add_z", "add_zplus", "add_epsilon")


class AddOperator:
    """The addition y = sum_k a_k as a linear operator: addends stacked on axis 1."""

    def forward(self, a, g="identity"):
        unit = WEIGHT_TRANSFORMS[g](np.ones((), dtype=a.dtype))
        return (unit * a).sum(axis=1)

    def transpose(self, s, g="identity"):
        unit = WEIGHT_TRANSFORMS[g](np.ones((), dtype=s.dtype))
        return np.broadcast_to((unit * s)[:, None], (s.shape[0], self.addends) + s.shape[1:])

    def bias_like(self, z, g="identity"):
        return np.zeros_like(z)

    def __init__(self, addends: int) -> None:
        self.addends = addends


class DiagonalOperator:
    """A per-channel affine layer y_c = scale_c x_c + shift_c on (N, C, H, W) inputs."""

    def __init__(self, scale, shift) -> None:
        self.scale, self.shift = np.asarray(scale), np.asarray(shift)

    def _channel(self, values, g, dtype):
        return WEIGHT_TRANSFORMS[g](values).astype(dtype)[None, :, None, None]

    def forward(self, a, g="identity"):
        return a * self._channel(self.scale, g, a.dtype)

    def transpose(self, s, g="identity"):
        return s * self._channel(self.scale, g, s.dtype)

    def bias_like(self, z, g="identity"):
        return np.broadcast_to(self._channel(self.shift, g, z.dtype), z.shape)


@functools.lru_cache(maxsize=None)
def derived(name: str):
    return shipped_derivations()[name]


def _addends(seed: int, addends: int, shape=(2, 3), batch: int = 2):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(batch, addends) + shape)
    relevance_out = rng.random((batch,) + shape) + 0.1
    return a, relevance_out


def _reference(rule: str, a: np.ndarray, relevance_out: np.ndarray, epsilon: float = 0.25):
    """The derivation's R_i at 50 digits, element by element of the sum."""
    relevance = derived(rule).results["relevance"]
    (term,) = derived(rule).terms
    q = sympify(term.q)
    out = np.zeros_like(a)
    batch, addends = a.shape[:2]
    for sample in range(batch):
        for position in np.ndindex(*a.shape[2:]):
            values = {x[m + 1]: Rational(float(a[(sample, m) + position])) for m in range(addends)}
            values[R[j]] = Rational(float(relevance_out[(sample,) + position]))
            total = sum(values[x[m + 1]] for m in range(addends))
            values[eps] = Rational(epsilon) * (1 if total >= 0 else -1)  # eps sign(y)
            layer = LayerInstance(addends, values)
            if layer.evaluate(over_inputs(q)) == 0:
                continue  # no root point (add_zplus, no positive addend): the kernel passes 0
            for m in range(addends):
                out[(sample, m) + position] = float(layer.evaluate(relevance, m + 1))
    return out


# -- the derivations ---------------------------------------------------------------------------

def test_addition_rules_are_shipped_with_their_proofs():
    assert set(ADD_RULES) <= set(known_rules())
    add_z, add_zplus, add_epsilon = (derived(name) for name in ADD_RULES)
    for derivation in (add_z, add_zplus):
        assert derivation.results["activation"] == "identity"
        assert derivation.proof("conservation").status is Status.PROVED
        assert derivation.proof("hinge").status is Status.PROVED
    # z-rule: t* = 1, root point 0, R_i = x_i / sum x R
    assert add_z.results["step"] == 1 and add_z.results["root_point"] == 0
    assert add_z.proof("positivity").status is Status.REFUTED
    assert add_z.proof("positivity").counterexample  # a whole addition with some R_i < 0
    assert add_z.proof("positivity_same_sign").status is Status.PROVED
    assert add_zplus.proof("positivity").status is Status.PROVED
    assert add_epsilon.proof("conservation").status is Status.REFUTED
    assert add_epsilon.proof("absorbed").status is Status.PROVED
    assert add_epsilon.proof("passed_down").status is Status.PROVED


@pytest.mark.parametrize("rule", ADD_RULES)
def test_addition_holds_for_a_symbolic_number_of_addends(rule):
    results = derived(rule).results
    sums = results["relevance"].atoms(Sum)
    assert sums and all(s.limits == ((i, 1, n),) for s in sums)
    assert n.is_Symbol and not n.is_number


def test_addition_refuting_instance_has_an_addend_against_the_sum():
    proof = derived("add_z").proof("positivity")
    values = {key: float(value) for key, value in proof.counterexample.items()}
    addends = [value for key, value in values.items() if key.startswith("x[")]
    total = sum(addends)
    assert values["R[j]"] > 0 and any(a * total < 0 for a in addends)


def test_no_activation_only_on_real_space_and_known_activations():
    with pytest.raises(DerivationError, match="R\\^n"):
        RootPointRule("bad", "", "", x_i, ORTHANT, activation="identity").derive()
    with pytest.raises(DerivationError, match="activation"):
        RootPointRule("bad", "", "", x_i, REAL_SPACE, activation="tanh").derive()


def test_relu_rules_keep_their_diagnostic_and_additions_have_none():
    assert load_condition("zplus") is not None
    for rule in ADD_RULES:
        assert load_condition(rule) is None


# -- the generated addition kernels -----------------------------------------------------------

@pytest.mark.parametrize("rule", ADD_RULES)
@pytest.mark.parametrize("addends, seed", [(2, 0), (3, 1), (5, 2)])
def test_addition_kernel_matches_derivation(rule, addends, seed):
    a, relevance_out = _addends(seed, addends)
    result = load_kernel(rule)(AddOperator(addends), a, relevance_out)
    assert result.shape == a.shape
    reference = _reference(rule, a, relevance_out)
    # a few roundings: one sum of K terms, one division, one product
    scale = np.abs(a).sum(axis=1, keepdims=True) * np.abs(relevance_out[:, None]) / np.abs(
        a.sum(axis=1, keepdims=True) + (0.25 if rule == "add_epsilon" else 0))
    assert np.all(np.abs(result - reference) <= 8 * np.spacing(np.abs(reference))
                  + 4 * addends * np.finfo(float).eps * scale)


@pytest.mark.parametrize("rule", ["add_z", "add_zplus"])
def test_addition_conserves_for_either_sign_of_the_sum(rule):
    a, relevance_out = _addends(3, 4, shape=(50,))
    total = a.sum(axis=1)
    assert (total > 0).any() and (total < 0).any()
    result = load_kernel(rule)(AddOperator(4), a, relevance_out)
    # add_zplus has a root point only where some addend is positive (sum_k a_k^+ > 0)
    exists = (a > 0).any(axis=1) if rule == "add_zplus" else np.ones(total.shape, bool)
    assert exists.sum() > 40
    np.testing.assert_allclose(result.sum(axis=1)[exists], relevance_out[exists], rtol=1e-12,
                               atol=0)
    assert np.all(result.sum(axis=1)[~exists] == 0)


def test_add_zplus_is_positive_and_add_z_is_not():
    a, relevance_out = _addends(4, 3, shape=(40,))
    assert (a < 0).any()
    assert (load_kernel("add_zplus")(AddOperator(3), a, relevance_out) >= 0).all()
    assert (load_kernel("add_z")(AddOperator(3), a, relevance_out) < 0).any()
    same_sign = np.abs(a) * np.sign(a[:, :1])  # every addend with the sign of the first
    assert (load_kernel("add_z")(AddOperator(3), same_sign, relevance_out) >= 0).all()


def test_add_epsilon_absorbs_the_derived_share():
    a, relevance_out = _addends(5, 3, shape=(30,))
    epsilon = 0.3
    result = load_kernel("add_epsilon")(AddOperator(3), a, relevance_out, epsilon=epsilon)
    absorbed = relevance_out - result.sum(axis=1)
    derived_share = sympify(derived("add_epsilon").results["absorbed"])
    total = a.sum(axis=1)
    expected = np.array([
        float(derived_share.subs({eps: epsilon * np.sign(y), R[j]: r})
              .xreplace({Sum(x[i], (i, 1, n)): y}))
        for y, r in zip(total.ravel(), relevance_out.ravel())]).reshape(total.shape)
    np.testing.assert_allclose(absorbed, expected, rtol=1e-10, atol=1e-14)
    assert (absorbed * np.sign(relevance_out) > 0).all()  # eps / (|y| + eps) R, never negative


def test_addition_kernel_checks_the_shape_of_the_relevance():
    a, relevance_out = _addends(6, 2)
    with pytest.raises(ShapeError):
        load_kernel("add_z")(AddOperator(2), a, relevance_out[:, :1])


def test_addition_kernel_zero_sum_gives_no_nan():
    a = np.array([[[1.0, 0.0], [-1.0, 0.0]]])  # y = 0 at both positions
    with np.errstate(all="raise"):
        for rule in ADD_RULES:
            result = load_kernel(rule)(AddOperator(2), a, np.ones((1, 2)), eps=1e-6)
            assert np.isfinite(result).all()


# -- the per-channel affine layer ------------------------------------------------------------

def test_affine_from_batchnorm_is_the_batchnorm_forward():
    from lrp_num._generated.affine_channel import affine_from_batchnorm

    rng = np.random.default_rng(7)
    gamma, beta, mean = rng.normal(size=(3, 4))
    var = rng.random(4) + 0.1
    scale, shift = affine_from_batchnorm(gamma, beta, mean, var, 1e-5)
    images = rng.normal(size=(2, 4, 3, 3))
    per = (slice(None), None, None)
    batchnorm = gamma[per] * (images - mean[per]) / np.sqrt(var[per] + 1e-5) + beta[per]
    np.testing.assert_allclose(images * scale[per] + shift[per], batchnorm, rtol=1e-12,
                               atol=1e-12)


def test_affine_channel_derivation_is_proved():
    derivation = derived("affine_channel")
    assert derivation.proofs and all(p.status is Status.PROVED for p in derivation.proofs)
    assert derivation.results["relevance"] == R[j]


def test_affine_channel_lists_the_shipped_rules():
    """The one-input table covers every shipped root-point rule and the ratio rules it names,
    with the directions and terms their own derivation files declare."""
    declarations = load_declarations()
    affine = declarations["affine_channel"]
    root_point = {name for name, rule in declarations.items() if isinstance(rule, RootPointRule)}
    assert set(affine.root_point_directions) == root_point
    for name, direction in affine.root_point_directions.items():
        assert direction == declarations[name].direction
        assert (name in affine.unit_weight_rules) == declarations[name].unit_weights
    for name, (term, stabilised) in affine.ratio_rules.items():
        assert [term] == declarations[name].terms and stabilised == declarations[name].stabilised


@pytest.mark.parametrize("rule", ["w2", "zplus", "zbox", "lrp0", "gamma", "flat"])
def test_root_point_rules_pass_the_whole_relevance_through_a_diagonal_layer(rule):
    rng = np.random.default_rng(8)
    scale, shift = rng.normal(size=(2, 5))
    x_batch = np.abs(rng.normal(size=(3, 5, 2, 2)))
    relevance_out = rng.random(x_batch.shape) + 0.1
    bounds = {"lower": -np.ones_like(x_batch), "upper": 10 * np.ones_like(x_batch)} \
        if rule == "zbox" else {}
    result = load_kernel(rule)(DiagonalOperator(scale, shift), x_batch, relevance_out, **bounds)
    # where q = s v != 0 (z+ passes nothing through a negative scale: no root point there)
    exists = np.broadcast_to((scale > 0)[None, :, None, None], x_batch.shape) \
        if rule == "zplus" else np.ones(x_batch.shape, bool)
    np.testing.assert_allclose(result[exists], relevance_out[exists], rtol=1e-12)
    assert np.all(result[~exists] == 0)


def test_epsilon_on_a_diagonal_layer_keeps_the_derived_share():
    derivation = derived("affine_channel")
    share = derivation.results["relevance_epsilon"]
    rng = np.random.default_rng(9)
    scale, shift = rng.normal(size=(2, 4))
    x_batch = rng.normal(size=(2, 4, 1, 1))
    relevance_out = rng.random(x_batch.shape) + 0.1
    result = load_kernel("epsilon")(DiagonalOperator(scale, shift), x_batch, relevance_out,
                                    epsilon=0.1)
    symbols = {str(s): s for s in share.free_symbols}
    for sample, channel in np.ndindex(2, 4):
        value, upper = x_batch[sample, channel, 0, 0], relevance_out[sample, channel, 0, 0]
        z = scale[channel] * value + shift[channel]
        expected = share.subs({symbols["s"]: scale[channel], symbols["x"]: value,
                               symbols["t_c"]: shift[channel], eps: 0.1 * np.sign(z),
                               R[j]: upper})
        assert result[sample, channel, 0, 0] == pytest.approx(float(expected), rel=1e-12)


# -- concatenation and pooling docs ---------------------------------------------------------------

def test_concat_is_routing_and_docs_only():
    derivation = derived("concat")
    assert all(p.status is Status.PROVED for p in derivation.proofs)
    assert derivation.results["relevance"] == R[j] and not derivation.terms
    page = (ROOT / "docs" / "rules" / "concat.md").read_text()
    assert "routing" in page and "sliced back" in page


def test_avgpool_page_covers_global_and_adaptive_pooling():
    assert any("Global" in note and "Adaptive" in note for note in derived("avgpool").notes)
    page = (ROOT / "docs" / "rules" / "avgpool.md").read_text()
    assert "Global average pooling" in page and "Adaptive average pooling" in page


def test_affine_and_add_pages_exist():
    for name in ("add_z", "add_zplus", "add_epsilon", "affine_channel"):
        page = (ROOT / "docs" / "rules" / f"{name}.md").read_text()
        assert "## Proofs" in page and "## Generated kernel" in page
    assert "affine_from_batchnorm" in (ROOT / "docs" / "rules" / "affine_channel.md").read_text()


def test_same_sign_positivity_needs_the_condition():
    """The conditional claim is not vacuous: without same signs, add_z goes negative."""
    relevance = derived("add_z").results["relevance"]
    layer = LayerInstance(2, {x[1]: Rational(2), x[2]: Rational(-1), R[j]: Rational(1)})
    with mpmath.workdps(50):
        assert layer.evaluate(relevance, 2) < 0
