"""The run time shared by every generated kernel: argument checks and the one stabiliser.

Generated kernels (``lrp_num/_generated``) hold only what is specific to their rule, the
products and sums printed from its derivation; everything rule-independent lives here, written
once by hand. Like the kernels, it is array-API code (https://data-apis.org/array-api/): every
array function is taken from the namespace of the arrays passed in (``array_api_compat``), so
the same kernels run on NumPy, PyTorch (CPU or CUDA) and CuPy arrays, and the result lives
where the input lives. Only input that is no array at all (a list) becomes a NumPy array.

Stabiliser convention
---------------------
A ratio rule divides by denominators d_k = sum_i q^(k)_ij + s_k. They are stabilised in exactly
one place, :func:`stabilised_ratio`, in one of two modes:

* ``stabilise="zero"`` (the deep Taylor default, exact elsewhere): only d == 0 becomes +eps;
* ``stabilise="everywhere"`` (zennit / captum style): d + eps sign(d), with sign(0) = +1.

A rule whose definition carries a stabiliser (LRP-epsilon: d + epsilon sign(d)) applies it first,
with the same sign convention (:func:`sign_stabilised`). With eps = 0 a denominator that is
still 0 contributes 0 where the numerator (the upper relevance) is 0, and raises
:class:`~lrp_num.errors.ZeroDenominatorError` where it is not: relevance is never silently lost,
and no NaN is produced.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Sequence

import array_api_compat
import numpy

from lrp_num.errors import KernelArgumentError, ZeroDenominatorError

#: the stabilisation modes of :func:`stabilised_ratio`
STABILISE_MODES = ("zero", "everywhere")
#: how a max-pooling window's tied maxima share R_j (:func:`max_pool_ties`)
MAXPOOL_TIES = ("split", "first")

#: an array of any array-API library (numpy.ndarray, torch.Tensor, cupy.ndarray, ...)
Array = Any


#: array_api_compat's NumPy namespace, returned without a lookup for plain NumPy arrays (the
#: kernels ask for a namespace several times per node; the lookup costs more than small arithmetic)
_NUMPY_NAMESPACE = array_api_compat.array_namespace(numpy.empty(0))


def namespace(*arrays: Array) -> ModuleType:
    """The array-API namespace of ``arrays`` (array_api_compat's wrapper for NumPy, PyTorch
    and CuPy, the library itself where it follows the standard); Python scalars are skipped."""
    if all(type(a) is numpy.ndarray or isinstance(a, (int, float, bool)) for a in arrays) \
            and any(type(a) is numpy.ndarray for a in arrays):
        return _NUMPY_NAMESPACE
    return array_api_compat.array_namespace(*(a for a in arrays
                                              if not isinstance(a, (int, float, bool))))


def as_float(x: object) -> Array:
    """``x`` as an array, converted to float64 unless it is floating point already.

    An array keeps its library and device; anything else becomes a NumPy array.
    """
    if type(x) is numpy.ndarray and x.dtype.kind == "f":  # NumPy floats: no namespace lookup
        return x
    if not array_api_compat.is_array_api_obj(x):
        x = numpy.asarray(x)
    xp = namespace(x)
    return x if xp.isdtype(x.dtype, "real floating") else xp.astype(x, xp.float64)


def like(value: object, x: Array) -> Array:
    """``value`` as an array of the library, device and dtype of ``x`` (no copy if it is one)."""
    if type(x) is numpy.ndarray:  # NumPy: no namespace or device lookup
        if type(value) is numpy.ndarray and value.dtype == x.dtype:
            return value
        return numpy.asarray(value, dtype=x.dtype)
    xp = namespace(x)
    if isinstance(value, numpy.ndarray) and not value.flags.writeable \
            and not isinstance(x, numpy.ndarray):
        value = value.copy()  # a read-only layer parameter: torch warns on sharing it
    return xp.asarray(value, dtype=x.dtype, device=array_api_compat.device(x))


def max_pool_ties(winners: Array, ties: str) -> Array:
    """The maxima of each window (last axis) that receive its relevance.

    ``"split"``: every tied maximum, each then receiving 1/m of R_j, the p -> infinity limit of
    L_p pooling (derivations/max_pool.py). ``"first"``: only the first maximum in window order
    (row-major within the window, the order of ``pool.patches``). This is a convention, not a
    derivation (the limit treats tied maxima symmetrically): it is what the gradient of
    PyTorch's max pooling does, and so zennit's and captum's max-pooling rules.
    """
    if ties not in MAXPOOL_TIES:
        raise KernelArgumentError(f"unknown max-pool tie rule {ties!r}; known: {', '.join(MAXPOOL_TIES)}")
    if ties == "split":
        return winners
    xp = namespace(winners)
    first = xp.argmax(xp.astype(winners, xp.float32), axis=-1, keepdims=True)  # the first True
    position = xp.arange(winners.shape[-1], device=array_api_compat.device(winners))
    return winners & (position == first)


def heaviside(a: Array, value_at_zero: float) -> Array:
    """The step function 1[a > 0], ``value_at_zero`` at a = 0, in the dtype of ``a``.

    The array API standard has no heaviside; the printer spells SymPy's Heaviside(a, H0) so.
    """
    xp = namespace(a)
    one, zero, at_zero = (like(v, a) for v in (1, 0, value_at_zero))
    return xp.where(a > 0, one, xp.where(a == 0, at_zero, zero))


def normal_cdf(x: Array) -> Array:
    """The standard normal CDF Phi(x) = erfc(-x / sqrt(2)) / 2, elementwise, in the dtype of x.

    The array API standard has no erf; this takes it from the array's own library (PyTorch's
    ``torch.special.ndtr``, SciPy's ``ndtr`` for NumPy and CuPy where installed), else from
    Python's ``math.erfc`` element by element. erfc keeps Phi accurate where x << 0, where
    (1 + erf) / 2 cancels.
    """
    xp = namespace(x)
    if array_api_compat.is_torch_array(x):
        import torch

        return torch.special.ndtr(x)
    if array_api_compat.is_cupy_array(x):
        from cupyx.scipy.special import ndtr

        return ndtr(x)
    try:
        from scipy.special import ndtr
    except ImportError:  # scipy is optional: math.erfc, element by element
        import math

        values = numpy.frompyfunc(lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0)), 1, 1)(x)
        # a float64 array, not the object array frompyfunc returns (array libraries refuse object dtype)
        return xp.astype(xp.asarray(numpy.asarray(values, dtype=numpy.float64)), x.dtype)
    return xp.astype(xp.asarray(ndtr(x)), x.dtype)


def box_bound(value: object, name: str, x: Array, rule: str) -> Array:
    """A box bound (``lower`` l or ``upper`` h, l <= x <= h) in the dtype of ``x``.

    Parameters
    ----------
    value : array_like or None
        The bound, broadcastable to ``x``.
    name : str
        ``"lower"`` or ``"upper"``, for the message.
    x : ndarray
        The layer input.
    rule : str
        The rule that needs the bound, for the message.

    Raises
    ------
    KernelArgumentError
        If ``value`` is None or not numeric.
    """
    if value is None:
        raise KernelArgumentError(
            f"rule {rule!r} needs the box bounds: pass lower= and upper= (l <= x <= h, "
            f"broadcastable to x); {name} is missing")
    try:
        return like(value, x)
    except (TypeError, ValueError, RuntimeError):
        raise KernelArgumentError(f"rule {rule!r}: the box bound {name} must be numeric, "
                                  f"got {value!r}") from None


def batch_shaped(bound: Array, x: Array) -> Array:
    """A bound broadcast to the sample shape of ``x``, with a batch axis of 1 or len(x).

    A layer operator maps only arrays shaped like a batch of inputs; a bound given per sample
    (or per channel) becomes one, without copying it for every sample when it is shared.
    """
    if bound.ndim == x.ndim and bound.shape[0] == x.shape[0]:
        batch = x.shape[0]
    else:
        batch = 1
    try:
        return namespace(x).broadcast_to(bound, (batch,) + tuple(x.shape[1:]))
    except (ValueError, RuntimeError):
        raise KernelArgumentError(f"a box bound of shape {bound.shape} does not broadcast to "
                                  f"the input shape {x.shape}") from None


def bias_shares(value: Sequence[str | None] | None, rule: str,
                n_terms: int) -> tuple[str | None, ...]:
    """Check the ``bias_shares`` argument of a kernel: one entry per term of the rule.

    Parameters
    ----------
    value : sequence of (str or None), or None
        A weight-transform name adds g(b_j) to that term's denominator; None adds nothing.
        None as a whole means no bias share in any term.
    rule : str
        The rule, for messages.
    n_terms : int
        The number of terms of the rule.

    Returns
    -------
    tuple
        ``n_terms`` entries, each None or a transform name.

    Raises
    ------
    KernelArgumentError
        For a string, or a sequence of the wrong length or with entries of the wrong type.
    """
    if value is None:
        return (None,) * n_terms
    if isinstance(value, str):
        raise KernelArgumentError(
            f"bias_shares must be a sequence of {n_terms} entries (None or a weight-transform "
            f"name), not the string {value!r}")
    shares = tuple(value)
    if len(shares) != n_terms or not all(s is None or isinstance(s, str) for s in shares):
        raise KernelArgumentError(
            f"rule {rule!r} has {n_terms} term(s): bias_shares must hold {n_terms} entries, each "
            f"None or a weight-transform name; got {value!r}")
    return shares


def sign_stabilised(d: Array, epsilon: float) -> Array:
    """d + epsilon sign(d) with sign(0) = +1, in the dtype of ``d``.

    The stabiliser of LRP-epsilon (Bach et al. 2015, PLoS ONE 10(7), e0130140) and of
    ``stabilise="everywhere"``.
    """
    e = like(epsilon, d)
    if type(d) is numpy.ndarray:  # NumPy: the shift is added in place (e + d is d + e exactly)
        # +-e by the sign of d + 0, which is +0 where d is -0 (sign(0) = +1 for both zeros):
        # one copysign instead of a comparison and a select
        shifted = numpy.copysign(e, d + 0.0)
        shifted += d
        return shifted
    return d + namespace(d).where(d >= 0, e, -e)


def stabilised_ratio(numerator: Array, d: Array, eps: float, stabilise: str,
                     rule: str, term: int) -> Array:
    """numerator / stab(d): the one place where denominators are stabilised.

    Parameters
    ----------
    numerator : ndarray
        a_k R_j, the shape of the layer output.
    d : ndarray
        The term's denominator d_k, the shape of the layer output.
    eps : float
        The stabiliser, >= 0.
    stabilise : {"zero", "everywhere"}
        "zero": only d == 0 becomes +eps; "everywhere": d + eps sign(d), sign(0) = +1.
    rule : str
        The rule, for messages.
    term : int
        The term k (1-based), for messages.

    Returns
    -------
    ndarray
        numerator / stab(d); 0 where a denominator is still 0 and the numerator is 0.

    Raises
    ------
    KernelArgumentError
        For an unknown mode or eps < 0 (or NaN).
    ZeroDenominatorError
        Where a denominator is still 0 (eps = 0) and the numerator is not.
    """
    if stabilise not in STABILISE_MODES:
        raise KernelArgumentError(f"stabilise must be 'zero' or 'everywhere', not {stabilise!r}")
    if not eps >= 0:
        raise KernelArgumentError(f"eps must be >= 0, not {eps!r}")
    xp = namespace(d)
    if stabilise == "everywhere":
        d = sign_stabilised(d, eps)
    elif type(d) is numpy.ndarray:  # NumPy: replace zeros only where there are any
        zero = d == 0
        if not zero.any():
            return numerator / d
        d = numpy.where(zero, like(eps, d), d)
    else:  # a device array: no test of any() (a sync) before the replacement
        d = xp.where(d == 0, like(eps, d), d)
    if eps > 0:  # both modes give |stab(d)| >= eps: no denominator is 0, nothing to check
        return numerator / d
    zero = d == 0
    if bool(xp.any(zero)):
        lost = int(xp.sum(xp.astype(zero & (numerator != 0), xp.int64)))
        if lost:
            raise ZeroDenominatorError(
                f"rule {rule!r}, term {term}: {lost} denominator(s) are 0 where the upper "
                f"relevance is not, and eps = 0; pass eps > 0 to stabilise them")
        d = xp.where(zero, like(1, d), d)  # the numerator is 0 there: contribute 0, not NaN
    return numerator / d


__all__ = ["STABILISE_MODES", "as_float", "batch_shaped", "bias_shares", "box_bound",
           "heaviside", "like", "namespace", "normal_cdf", "sign_stabilised", "stabilised_ratio"]
