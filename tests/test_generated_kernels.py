"""The generated kernels against the derivations at 50 digits, and their stabiliser conventions.

Tolerance in float64 units (STYLE.md): |kernel - reference| <= N_ULP ulp(reference)
+ C eps64 sum_j sum_k |R^k_ij| (1 + sum_i'|q^k_i'j| / |d_kj|); the second term bounds the
rounding of the sums (cancellation in d, and in sum_j).
``test_worst_error_is_within_one_eps_of_the_summed_terms`` prints the worst error per rule (run
with -s to see it) and holds every rule to the README's figure, |error| <= 1 eps sum|terms|.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fractions import Fraction

from sympy import Symbol

from codegen_support import EPS64, reference_relevance, shipped_derivations, ulps
from lrp_num.errors import KernelArgumentError, ShapeError, UnknownRuleError, ZeroDenominatorError
from lrp_num.engine.kernels import kernel_parameters, known_rules, load_kernel
from lrp_num.layers import BatchNorm, Conv2d, Dense, MaxPool2d
from lrp_num.layers.operators import DenseOperator
from lrp_sym.codegen.package import kernel_kind

ROOT = Path(__file__).resolve().parent.parent
N_ULP = 8
C = 16  # a few units per summed term: the sums here have at most 8 terms
SEEDS = (0, 1)

#: input domain of each rule's test layer
NONNEGATIVE = {"zplus", "gamma"}
BOX = {"zbox"}


def _layer(rule: str, seed: int, n_in: int = 5, n_out: int = 4, batch: int = 3):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(n_in, n_out))
    bias = rng.normal(size=n_out) * 0.5
    if rule in NONNEGATIVE:
        x = np.abs(rng.normal(size=(batch, n_in)))
        x[rng.random(x.shape) < 0.2] = 0.0  # ReLU outputs have exact zeros
        bounds = {}
    elif rule in BOX:
        lower = -1 - rng.random(n_in)
        upper = 1 + rng.random(n_in)
        x = lower + (upper - lower) * rng.random((batch, n_in))
        bounds = {"lower": lower, "upper": upper}
    else:
        x = rng.normal(size=(batch, n_in))
        products = x[:, :, None] * weight[None]
        # alpha-beta: both groups non-empty in every neuron (degenerate ones: test_no_nan_*)
        while not ((products > 0).any(axis=1).all() and (products < 0).any(axis=1).all()):
            x = rng.normal(size=(batch, n_in))
            products = x[:, :, None] * weight[None]
        bounds = {}
    relevance_out = rng.random((batch, n_out)) + 0.1
    return weight, bias, x, relevance_out, bounds


def _worst(kernel_relevance, reference) -> tuple[float, float]:
    """The worst error in ulps of the reference and in units of eps sum|terms|."""
    error = np.abs(kernel_relevance - reference.relevance)
    scaled = np.divide(error, EPS64 * reference.scale, out=np.zeros_like(error),
                       where=reference.scale > 0)  # scale 0: x_i = 0, both exactly 0
    return float(ulps(kernel_relevance, reference.relevance).max()), float(scaled.max())


def _check(rule: str, kernel_relevance, reference) -> None:
    error = np.abs(kernel_relevance - reference.relevance)
    tolerance = N_ULP * np.spacing(np.abs(reference.relevance)) + C * EPS64 * reference.scale
    bad = error > tolerance
    assert not bad.any(), (
        f"{rule}: kernel differs from the 50-digit reference beyond N_ULP={N_ULP} ulp + "
        f"C={C} eps sum|terms| at {np.argwhere(bad).tolist()}:\n"
        f"kernel    {kernel_relevance[bad]}\nreference {reference.relevance[bad]}")


def _of_kind(kind: str) -> list[str]:
    return sorted(name for name, derivation in shipped_derivations().items()
                  if kernel_kind(derivation) == kind)


#: ratio rules (one generated ``relevance`` kernel each), layer kernels, docs-only analyses
RULES = _of_kind("rule")
LAYERS = _of_kind("layer")
DOCS_ONLY = _of_kind("docs")
#: rules of one node type (element-wise nonlinearities, normalisation)
NODE_RULES = _of_kind("node_rule")


def test_every_derivation_is_a_rule_a_layer_kernel_or_docs_only():
    assert {"affine_channel", "batchnorm", "maxpool", "softmax", "product_uniform",
            "matmul_epsilon"} <= set(LAYERS)
    assert {"zplus", "zbox", "gamma", "lrp0", "epsilon", "add_z", "add_zplus",
            "add_epsilon"} <= set(RULES)
    assert {"sensitivity", "taylor", "sumpool", "avgpool", "lppool", "concat"} <= set(DOCS_ONLY)
    assert NODE_RULES == ["identity_nonlinear", "norm_cp", "norm_full", "taylor_nonlinear"]
    assert sorted(RULES + LAYERS + DOCS_ONLY + NODE_RULES) == sorted(shipped_derivations())


@pytest.mark.parametrize("name", DOCS_ONLY)
def test_docs_only_derivations_have_a_page_and_no_kernel(name):
    assert (ROOT / "docs" / "rules" / f"{name}.md").is_file()
    assert name not in known_rules()
    with pytest.raises(UnknownRuleError):
        load_kernel(name)


@functools.lru_cache(maxsize=None)
def _kernel_and_reference(rule: str, seed: int):
    """The generated kernel's R_i on a random dense layer and the derivation's at 50 digits."""
    derivation = shipped_derivations()[rule]
    weight, bias, x, relevance_out, bounds = _layer(rule, seed)
    # defaults on seed 0, other parameter values on seed 1
    parameters = {str(p): float(v) * (1 if seed == 0 else 1.7) + (0 if seed == 0 else 0.1)
                  for p, v in derivation.defaults.items()}
    kernel = load_kernel(rule)
    result = kernel(DenseOperator(weight, bias), x, relevance_out, **parameters, **bounds)
    reference = reference_relevance(derivation, weight, bias, x, relevance_out, parameters,
                                    bounds.get("lower"), bounds.get("upper"))
    return x, result, reference


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("seed", SEEDS)
def test_kernel_matches_derivation_at_50_digits(rule, seed):
    x, result, reference = _kernel_and_reference(rule, seed)
    assert result.shape == x.shape and result.dtype == np.float64
    _check(rule, result, reference)


def test_worst_error_is_within_one_eps_of_the_summed_terms(capsys):
    """The worst error per rule over the layers above (computed here, or reused when the tests
    above ran), printed; every rule within 1 eps sum|terms| of the 50-digit reference (the
    README's figure; the per-element tolerance above allows C = 16)."""
    worst = {}
    for rule in RULES:
        per_seed = [_worst(*_kernel_and_reference(rule, seed)[1:]) for seed in SEEDS]
        worst[rule] = (max(in_ulps for in_ulps, _ in per_seed),
                       max(scaled for _, scaled in per_seed))
    with capsys.disabled():
        for rule, (in_ulps, scaled) in worst.items():
            print(f"\n  {rule:12s} worst {in_ulps:8.1f} ulp(ref)   {scaled:6.2f} eps*sum|terms|",
                  end="")
    over = {rule: scaled for rule, (_, scaled) in worst.items() if scaled > 1.0}
    assert not over, f"worst error above 1 eps sum|terms| (README figure): {over}"


def test_every_rule_has_a_kernel_and_its_parameters():
    assert set(known_rules()) >= set(RULES)
    for rule in RULES:
        derivation = shipped_derivations()[rule]
        assert kernel_parameters(rule) == {str(p): float(derivation.defaults[p])
                                           for p in derivation.parameters}


def test_unknown_rule_lists_the_known_ones():
    with pytest.raises(UnknownRuleError, match="zplus"):
        load_kernel("no_such_rule")


class CountingOperator(DenseOperator):
    """A dense operator that counts its matrix products."""

    def __init__(self, weight, bias):
        super().__init__(weight, bias)
        self.calls = []

    def forward(self, a, g="identity"):
        self.calls.append(("forward", g))
        return super().forward(a, g)

    def transpose(self, s, g="identity"):
        self.calls.append(("transpose", g))
        return super().transpose(s, g)


@pytest.mark.parametrize("rule, products", [
    ("zplus", [("forward", "positive"), ("transpose", "positive")]),
    ("lrp0", [("forward", "identity"), ("transpose", "identity")]),
    ("epsilon", [("forward", "identity"), ("transpose", "identity")]),
    ("w2", [("forward", "square"), ("transpose", "square")]),
    ("gamma", [("forward", "positive"), ("forward", "negative"), ("transpose", "positive"),
               ("transpose", "negative")]),
])
def test_common_rules_cost_the_minimum_of_products(rule, products):
    weight, bias, x, relevance_out, bounds = _layer(rule, 3)
    op = CountingOperator(weight, bias)
    load_kernel(rule)(op, x, relevance_out, **bounds)
    assert op.calls == products


def _zero_layer():
    """One output neuron whose denominator is exactly 0 for the first sample."""
    weight = np.array([[1.0], [-1.0]])
    bias = np.array([0.0])
    x = np.array([[1.0, 1.0], [2.0, 1.0]])
    return DenseOperator(weight, bias), x


def test_zero_denominator_raises_with_eps_zero():
    op, x = _zero_layer()
    with pytest.raises(ZeroDenominatorError, match="eps"):
        load_kernel("lrp0")(op, x, np.array([[1.0], [1.0]]), eps=0.0)


def test_zero_denominator_with_zero_upper_relevance_contributes_zero():
    op, x = _zero_layer()
    with np.errstate(all="raise"):
        result = load_kernel("lrp0")(op, x, np.array([[0.0], [1.0]]), eps=0.0)
    assert np.array_equal(result[0], [0.0, 0.0])
    assert np.allclose(result[1], [2.0, -1.0])


@pytest.mark.parametrize("stabilise", ["zero", "everywhere"])
def test_zero_denominator_becomes_plus_eps(stabilise):
    op, x = _zero_layer()
    with np.errstate(all="raise"):
        result = load_kernel("lrp0")(op, x, np.array([[1.0], [1.0]]), eps=0.5,
                                     stabilise=stabilise)
    assert np.array_equal(result[0], [2.0, -2.0])  # x_i w_i / (+0.5), sign(0) = +1


def test_stabilise_everywhere_adds_eps_with_the_sign_of_d():
    op = DenseOperator(np.array([[1.0], [-1.0]]), np.array([0.0]))
    x = np.array([[1.0, 3.0], [3.0, 1.0]])  # d = -2 and +2
    r = np.array([[1.0], [1.0]])
    kernel = load_kernel("lrp0")
    exact = kernel(op, x, r)  # stabilise="zero" leaves non-zero denominators alone
    assert np.allclose(exact, [[-0.5, 1.5], [1.5, -0.5]], rtol=0, atol=1e-15)
    everywhere = kernel(op, x, r, eps=0.5, stabilise="everywhere")
    assert np.allclose(everywhere, [[-0.4, 1.2], [1.2, -0.4]], rtol=0, atol=1e-15)


def test_epsilon_rule_stabiliser_and_zero():
    op, x = _zero_layer()
    kernel = load_kernel("epsilon")
    result = kernel(op, x, np.array([[1.0], [1.0]]), epsilon=0.5)
    assert np.allclose(result[0], [2.0, -2.0])  # d = 0 -> 0 + 0.5 sign(0) = +0.5
    with pytest.raises(ZeroDenominatorError):
        kernel(op, x, np.array([[1.0], [1.0]]), epsilon=0.0, eps=0.0)


@pytest.mark.parametrize("rule", RULES)
def test_no_nan_on_all_zero_input(rule):
    weight, bias, x, relevance_out, bounds = _layer(rule, 4)
    x = np.zeros_like(x)
    if bounds:
        bounds = {"lower": np.zeros(x.shape[1]), "upper": np.ones(x.shape[1])}
    with np.errstate(all="raise"):
        result = load_kernel(rule)(DenseOperator(weight, bias), x, relevance_out, **bounds)
    assert np.isfinite(result).all()


def test_bias_shares_convention():
    weight, bias, x, relevance_out, _ = _layer("zplus", 5)
    op = DenseOperator(weight, bias)
    # LRP-0 with the identity bias share is the bias-as-neuron rule
    assert np.allclose(load_kernel("lrp0")(op, x, relevance_out, bias_shares=["identity"]),
                       load_kernel("bias_neuron")(op, x, relevance_out), rtol=1e-13, atol=0)
    # z+ with zennit's b^+ in the denominator
    wp = np.maximum(weight, 0)
    d = x @ wp + np.maximum(bias, 0)
    expected = x * ((relevance_out / d) @ wp.T)
    assert np.allclose(load_kernel("zplus")(op, x, relevance_out, bias_shares=("positive",)),
                       expected, rtol=1e-13, atol=0)


def test_no_convention_adds_a_bias_to_a_rule_whose_derivation_holds_one():
    """epsilon and bias_neuron (b_j), gamma_split (b_j + gamma b_j^+) and its counterpart derive
    their bias share; a convention adding b_j again counts the bias twice (gamma_split under
    "neuron" and "captum" did)."""
    from lrp_num.engine.conventions import BIAS_CONVENTIONS, Conventions

    holding = {name: len(derivation.terms) for name, derivation in shipped_derivations().items()
               if any(term.bias_share != 0 for term in derivation.terms)}
    assert {"epsilon", "bias_neuron", "gamma_split", "gamma_split_negative"} <= set(holding)
    for bias in BIAS_CONVENTIONS:
        for rule, n_terms in holding.items():
            shares = Conventions(bias=bias).bias_shares(rule, n_terms)
            assert shares is None or set(shares) == {None}, (bias, rule, shares)


@pytest.mark.parametrize("shares, error", [
    ("positive", KernelArgumentError), (("positive", None), KernelArgumentError),
    ((3,), KernelArgumentError), (("no_such_transform",), UnknownRuleError),
])
def test_bad_bias_shares(shares, error):
    weight, bias, x, relevance_out, _ = _layer("zplus", 5)
    with pytest.raises(error):
        load_kernel("zplus")(DenseOperator(weight, bias), x, relevance_out, bias_shares=shares)


def test_bad_stabilise_and_eps():
    weight, bias, x, relevance_out, _ = _layer("lrp0", 5)
    op = DenseOperator(weight, bias)
    with pytest.raises(KernelArgumentError, match="stabilise"):
        load_kernel("lrp0")(op, x, relevance_out, stabilise="sometimes")
    with pytest.raises(KernelArgumentError, match="eps"):
        load_kernel("lrp0")(op, x, relevance_out, eps=-1.0)


def test_box_rule_needs_bounds():
    weight, bias, x, relevance_out, bounds = _layer("zbox", 6)
    with pytest.raises(KernelArgumentError, match="lower"):
        load_kernel("zbox")(DenseOperator(weight, bias), x, relevance_out)
    with pytest.raises(KernelArgumentError, match="upper"):
        load_kernel("zbox")(DenseOperator(weight, bias), x, relevance_out,
                            lower=bounds["lower"])


def test_relevance_out_of_the_wrong_shape():
    weight, bias, x, relevance_out, _ = _layer("zplus", 7)
    with pytest.raises(ShapeError):
        load_kernel("zplus")(DenseOperator(weight, bias), x, relevance_out[:, :2])


@pytest.mark.parametrize("rule", ["zplus", "w2", "alphabeta"])
def test_float32_stays_float32(rule):
    weight, bias, x, relevance_out, _ = _layer(rule, 8)
    op = DenseOperator(weight.astype(np.float32), bias.astype(np.float32))
    result = load_kernel(rule)(op, x.astype(np.float32), relevance_out.astype(np.float32))
    assert result.dtype == np.float32
    reference = load_kernel(rule)(DenseOperator(weight, bias), x, relevance_out)
    assert np.allclose(result, reference, rtol=1e-4, atol=1e-5)


def test_lrp_num_and_kernels_do_not_import_sympy():
    code = (
        "import sys, lrp_num, lrp_num.cli, lrp_num.errors, lrp_num.engine.kernels, lrp_num.layers.operators\n"
        "from lrp_num.engine.kernels import known_rules, load_kernel\n"
        "for name in known_rules():\n"
        "    load_kernel(name)\n"
        "import lrp_num._generated as g\n"
        "for name in g.LAYER_KERNELS:\n"
        "    __import__('lrp_num._generated.' + name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sympy', 'lrp_sym'))\n"
        "assert not bad, bad\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               cwd=ROOT)
    assert completed.returncode == 0, completed.stderr + completed.stdout


# -- layer kernels against their derivations ---------------------------------------------------


def _maxpool_reference(x_batch, relevance_out, kernel, stride):
    """Winner and loser shares of the max-pool derivation, window by window, in exact fractions."""
    derivation = shipped_derivations()["maxpool"]
    winner, loser = derivation.results["winner_share"], derivation.results["loser_share"]
    (m,) = winner.free_symbols or {Symbol("m")}

    def share(expr, ties):
        return Fraction(str(expr.subs(m, ties)))  # a SymPy Rational: exact

    n, c, height, width = x_batch.shape
    out = np.zeros(x_batch.shape, dtype=object)
    out[...] = Fraction(0)
    for sample in range(n):
        for channel in range(c):
            for p in range(relevance_out.shape[2]):
                for q in range(relevance_out.shape[3]):
                    rows = range(p * stride, p * stride + kernel)
                    cols = range(q * stride, q * stride + kernel)
                    window = [(r, s) for r in rows for s in cols]
                    top = max(x_batch[sample, channel, r, s] for r, s in window)
                    ties = sum(x_batch[sample, channel, r, s] == top for r, s in window)
                    upper = Fraction(float(relevance_out[sample, channel, p, q]))
                    for r, s in window:
                        is_winner = x_batch[sample, channel, r, s] == top
                        out[sample, channel, r, s] += share(winner if is_winner else loser,
                                                            ties) * upper
    return out


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), (2, 1)])
def test_maxpool_kernel_matches_the_derived_shares_with_ties(kernel, stride):
    rng = np.random.default_rng(kernel * 10 + stride)
    x_batch = rng.integers(0, 3, size=(2, 2, 6, 6)).astype(np.float64)  # many tied maxima
    pool = MaxPool2d(kernel, stride)
    relevance_out = rng.random(pool(x_batch).shape) + 0.1
    result = load_kernel("maxpool")(pool, x_batch, relevance_out)
    reference = _maxpool_reference(x_batch, relevance_out, kernel, stride)
    assert result.shape == x_batch.shape
    # a few roundings per input: the share 1/m, one product, and at most kernel^2 window sums
    exact = reference.astype(np.float64)
    assert np.all(np.abs(result - exact) <= 4 * kernel * kernel * np.spacing(np.abs(exact)))
    ties = [np.count_nonzero(w == w.max()) for w in pool.patches(x_batch).reshape(-1, kernel ** 2)]
    assert max(ties) > 1  # the ties are exercised


def test_batchnorm_fold_matches_the_unfolded_forward():
    from lrp_num._generated.batchnorm_fold import fold_batchnorm

    rng = np.random.default_rng(21)
    n_in, n_out = 6, 4
    dense = Dense(rng.normal(size=(n_in, n_out)), rng.normal(size=n_out))
    bn = BatchNorm(rng.normal(size=n_out), rng.normal(size=n_out), rng.normal(size=n_out),
                   rng.random(n_out) + 0.1, eps=1e-3)
    x_batch = rng.normal(size=(5, n_in))
    unfolded = bn(dense(x_batch))
    weight, bias = fold_batchnorm(dense.weight, dense.bias, bn.gamma, bn.beta, bn.mean, bn.var,
                                  bn.eps)
    np.testing.assert_allclose(x_batch @ weight + bias, unfolded, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.fold_into(dense)(x_batch), unfolded, rtol=1e-12, atol=1e-12)

    conv = Conv2d(rng.normal(size=(n_out, 2, 3, 3)), rng.normal(size=n_out), padding=1)
    images = rng.normal(size=(2, 2, 5, 5))
    np.testing.assert_allclose(bn.fold_into(conv)(images), bn(conv(images)), rtol=1e-12,
                               atol=1e-12)
