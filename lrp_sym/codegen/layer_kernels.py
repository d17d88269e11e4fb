"""Emitting the kernels of layer derivations: batch-norm folding and max-pooling relevance.

* ``batchnorm`` -> ``batchnorm_fold.py``: ``fold_batchnorm(weight, bias, gamma, beta, mean, var,
  eps)`` printed from ``results["folded_weight"]`` (in w[i, j] and the bn_* symbols) and
  ``results["folded_bias"]`` (in b[j] and the bn_* symbols), elementwise with broadcasting.
* ``maxpool`` -> ``maxpool.py``: ``relevance(pool, x, relevance_out)`` from
  ``results["winner_share"]`` (in the number m of tied maxima) and ``results["loser_share"]``.
* ``affine_channel`` -> ``affine_channel.py``: ``affine_from_batchnorm(gamma, beta, mean, var,
  eps)`` printed from ``results["scale"]`` and ``results["shift"]`` (in the bn_* symbols): the
  diagonal weights and bias of a batch norm that is not folded.
"""

from __future__ import annotations

from sympy import Expr, Indexed, Symbol, cse, numbered_symbols, sstr, sympify

from lrp_sym.codegen.attention_kernels import ATTENTION_KERNELS, EMITTERS as ATTENTION_EMITTERS
from lrp_sym.codegen.errors import CodegenError
from lrp_sym.codegen.printer import print_array_api
from lrp_sym.derivation import Derivation
from lrp_sym.symbols import b, bn_beta, bn_eps, bn_gamma, bn_mean, bn_var, i, j, w

#: the array argument of ``fold_batchnorm`` for each symbol of the derivation
BATCHNORM_NAMES = {w: "weight", b: "bias", bn_gamma: "gamma", bn_beta: "beta", bn_mean: "mean",
                   bn_var: "var", bn_eps: "eps"}
BATCHNORM_SYMBOLS = frozenset({bn_gamma, bn_beta, bn_mean, bn_var, bn_eps})
#: which derivation produces which layer kernel file
LAYER_KERNELS = {"batchnorm": "batchnorm_fold", "maxpool": "maxpool",
                 "affine_channel": "affine_channel", **ATTENTION_KERNELS}


def _result(derivation: Derivation, key: str) -> Expr:
    try:
        return sympify(derivation.results[key])
    except KeyError:
        raise CodegenError(f"derivation {derivation.name!r} has no results[{key!r}]") from None


def _check_symbols(derivation: Derivation, key: str, expr: Expr, base) -> None:
    """``expr`` may contain ``base`` (w[i, j], b[j], or None) and the bn_* symbols only."""
    indexed = expr.atoms(Indexed)
    labels = {a.base.label for a in indexed} | {i, j}
    stray = {str(a) for a in indexed if a.base != base}
    stray |= {str(s) for s in expr.atoms(Symbol) - labels if s not in BATCHNORM_SYMBOLS}
    if stray:
        raise CodegenError(f"{derivation.name}: results[{key!r}] = {expr} has unexpected "
                           f"symbols {', '.join(sorted(stray))}")


def emit_batchnorm_fold(derivation: Derivation, header: str) -> str:
    """The source of ``batchnorm_fold.py``."""
    weight = _result(derivation, "folded_weight")
    bias = _result(derivation, "folded_bias")
    _check_symbols(derivation, "folded_weight", weight, w)
    _check_symbols(derivation, "folded_bias", bias, b)
    names = dict(BATCHNORM_NAMES)
    replacements, (weight_code, bias_code) = cse([weight, bias],
                                                 symbols=numbered_symbols("_c", start=1),
                                                 order="canonical")
    lines = []
    for symbol, value in replacements:
        lines.append(f"    {symbol} = {print_array_api(value, names)}")
        names[symbol] = str(symbol)
    return "\n".join([
        header.rstrip("\n"),
        f'"""{derivation.title}: folding into the preceding linear layer (generated).',
        "",
        derivation.paper,
        "",
        f"    w'_ij = {sstr(weight)}",
        f"    b'_j  = {sstr(bias)}",
        '"""',
        "",
        "from lrp_num.engine import kernel_runtime",
        "",
        "",
        "def fold_batchnorm(weight, bias, gamma, beta, mean, var, eps):",
        '    """Return the folded (weight, bias) of a linear layer followed by batch normalisation.',
        "",
        "    Elementwise with broadcasting, in the array namespace of the arguments (array API):",
        "    the caller reshapes the per-channel arrays gamma, beta, mean, var so that they",
        "    broadcast against weight (output axis) and bias.",
        '    """',
        "    xp = kernel_runtime.namespace(weight, bias, gamma, beta, mean, var)",
        *lines,
        f"    return {print_array_api(weight_code, names)}, {print_array_api(bias_code, names)}",
    ]) + "\n"


def emit_maxpool(derivation: Derivation, header: str) -> str:
    """The source of ``maxpool.py``."""
    winner = _result(derivation, "winner_share")
    loser = _result(derivation, "loser_share")
    symbols = winner.free_symbols | loser.free_symbols
    if any(str(s) != "m" for s in symbols):
        raise CodegenError(f"maxpool: the shares may depend only on m, the number of tied "
                           f"maxima; they contain {', '.join(sorted(map(str, symbols)))}")
    names = {s: "m" for s in symbols}
    return "\n".join([
        header.rstrip("\n"),
        f'"""{derivation.title}: relevance through a max-pooling layer (generated).',
        "",
        derivation.paper,
        "",
        "Each window j passes R_j to its maxima; with m tied maxima each receives",
        f"{sstr(winner)} of R_j, every other entry {sstr(loser)}. ties=\"first\" is a convention,",
        "not this derivation: the first maximum in window order alone wins (m = 1), as",
        "PyTorch's gradient does (lrp_num.engine.kernel_runtime.max_pool_ties).",
        '"""',
        "",
        "from lrp_num.engine import kernel_runtime",
        "",
        "",
        'def relevance(pool, x, relevance_out, *, ties="split"):',
        '    """Relevance R_i of the pooled input x, shape (N, C, H, W).',
        "",
        "    pool provides patches(x) -> (N, C, Ho, Wo, K) and unpatch(r) -> (N, C, H, W)",
        "    (scatter-add); relevance_out has shape (N, C, Ho, Wo). Array-API code: x may be a",
        "    NumPy, PyTorch or CuPy array, and the pool an operator of its backend. ties: \"split\"",
        "    (the derived limit) or \"first\" (a convention, see kernel_runtime.max_pool_ties).",
        '    """',
        "    x = kernel_runtime.as_float(x)",
        "    xp = kernel_runtime.namespace(x)",
        "    patches = pool.patches(x)",
        "    winners = kernel_runtime.max_pool_ties(patches == xp.max(patches, axis=-1, keepdims=True), ties)",
        "    # m >= 1 for finite input; the floor only keeps a NaN window from dividing by 0",
        "    m = xp.clip(xp.sum(xp.astype(winners, x.dtype), axis=-1, keepdims=True), min=1)",
        f"    winner_share = {print_array_api(winner, names)}",
        f"    loser_share = {print_array_api(loser, names)}",
        "    share = xp.where(winners, kernel_runtime.like(winner_share, x),",
        "                     kernel_runtime.like(loser_share, x))",
        "    upper = xp.expand_dims(kernel_runtime.like(relevance_out, x), axis=-1)",
        "    return pool.unpatch(share * upper)",
    ]) + "\n"


def emit_affine_channel(derivation: Derivation, header: str) -> str:
    """The source of ``affine_channel.py``."""
    scale = _result(derivation, "scale")
    shift = _result(derivation, "shift")
    _check_symbols(derivation, "scale", scale, None)
    _check_symbols(derivation, "shift", shift, None)
    names = dict(BATCHNORM_NAMES)
    replacements, (scale_code, shift_code) = cse([scale, shift],
                                                 symbols=numbered_symbols("_c", start=1),
                                                 order="canonical")
    lines = []
    for symbol, value in replacements:
        lines.append(f"    {symbol} = {print_array_api(value, names)}")
        names[symbol] = str(symbol)
    return "\n".join([
        header.rstrip("\n"),
        f'"""{derivation.title}: its diagonal weights and bias (generated).',
        "",
        derivation.paper,
        "",
        "y_c = s_c x_c + t_c with",
        "",
        f"    s_c = {sstr(scale)}",
        f"    t_c = {sstr(shift)}",
        "",
        "The rules apply to it as to any linear layer, through a diagonal operator (w_cc = s_c,",
        "b_c = t_c); see docs/rules/affine_channel.md for what each rule gives on one input.",
        '"""',
        "",
        "from lrp_num.engine import kernel_runtime",
        "",
        "",
        "def affine_from_batchnorm(gamma, beta, mean, var, eps):",
        '    """Return (scale, shift) of batch normalisation as the affine map y = scale x + shift.',
        "",
        "    Elementwise with broadcasting over the per-channel arrays gamma, beta, mean, var, in",
        "    their array namespace (array API).",
        '    """',
        "    xp = kernel_runtime.namespace(gamma, beta, mean, var)",
        *lines,
        f"    return {print_array_api(scale_code, names)}, {print_array_api(shift_code, names)}",
    ]) + "\n"


def is_layer_derivation(derivation: Derivation) -> bool:
    return derivation.name in LAYER_KERNELS


def emit_layer_kernel(derivation: Derivation, header: str) -> str:
    emit = {"batchnorm": emit_batchnorm_fold, "maxpool": emit_maxpool,
            "affine_channel": emit_affine_channel, **ATTENTION_EMITTERS}[derivation.name]
    return emit(derivation, header)


__all__ = ["BATCHNORM_NAMES", "LAYER_KERNELS", "emit_affine_channel", "emit_batchnorm_fold",
           "emit_layer_kernel", "emit_maxpool", "is_layer_derivation"]
