"""The run time shared by every generated kernel: argument checks and the one stabiliser.

Generated kernels (``lrp_num/_generated``) hold only what is specific to their rule, the
products and sums printed from its derivation; everything rule-independent lives here, written
once by hand, NumPy only.

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

from typing import Sequence

import numpy

from lrp_num.errors import KernelArgumentError, ZeroDenominatorError

#: the stabilisation modes of :func:`stabilised_ratio`
STABILISE_MODES = ("zero", "everywhere")


def as_float(x: object) -> numpy.ndarray:
    """``x`` as an array, converted to float64 unless it is floating point already."""
    x = numpy.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(numpy.float64)


def box_bound(value: object, name: str, x: numpy.ndarray, rule: str) -> numpy.ndarray:
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
        return numpy.asarray(value, dtype=x.dtype)
    except (TypeError, ValueError):
        raise KernelArgumentError(f"rule {rule!r}: the box bound {name} must be numeric, "
                                  f"got {value!r}") from None


def batch_shaped(bound: numpy.ndarray, x: numpy.ndarray) -> numpy.ndarray:
    """A bound broadcast to the sample shape of ``x``, with a batch axis of 1 or len(x).

    A layer operator maps only arrays shaped like a batch of inputs; a bound given per sample
    (or per channel) becomes one, without copying it for every sample when it is shared.
    """
    if bound.ndim == x.ndim and bound.shape[0] == x.shape[0]:
        batch = x.shape[0]
    else:
        batch = 1
    try:
        return numpy.broadcast_to(bound, (batch,) + x.shape[1:])
    except ValueError:
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


def sign_stabilised(d: numpy.ndarray, epsilon: float) -> numpy.ndarray:
    """d + epsilon sign(d) with sign(0) = +1, in the dtype of ``d``.

    The stabiliser of LRP-epsilon (Bach et al. 2015, PLoS ONE 10(7), e0130140) and of
    ``stabilise="everywhere"``.
    """
    e = numpy.asarray(epsilon, dtype=d.dtype)
    return d + numpy.where(d >= 0, e, -e)


def stabilised_ratio(numerator: numpy.ndarray, d: numpy.ndarray, eps: float, stabilise: str,
                     rule: str, term: int) -> numpy.ndarray:
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
    if stabilise == "everywhere":
        d = sign_stabilised(d, eps)
    else:
        d = numpy.where(d == 0, numpy.asarray(eps, dtype=d.dtype), d)
    zero = d == 0
    if zero.any():
        lost = numpy.count_nonzero(zero & (numerator != 0))
        if lost:
            raise ZeroDenominatorError(
                f"rule {rule!r}, term {term}: {lost} denominator(s) are 0 where the upper "
                f"relevance is not, and eps = 0; pass eps > 0 to stabilise them")
        d = numpy.where(zero, 1, d)  # the numerator is 0 there: contribute 0, not NaN
    return numerator / d


__all__ = ["STABILISE_MODES", "as_float", "batch_shaped", "bias_shares", "box_bound",
           "sign_stabilised", "stabilised_ratio"]
