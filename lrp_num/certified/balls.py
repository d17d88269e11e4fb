"""Balls of python-flint's ``arb``: exact conversion, the working precision, certified decisions.

A ball [m +- r] of Arb (Johansson 2017, "Arb: efficient arbitrary-precision midpoint-radius
interval arithmetic", IEEE Trans. Computers 66(8)) provably contains the exact real number that
the operations leading to it compute. A float64 value is a dyadic rational and becomes an exact
ball (r = 0); every operation then widens the radius by at most its own rounding at the working
precision.

Where the definition of a rule asks a question of a real number (is z_j > 0? which cell of a
max-pool window wins? is this denominator 0?) the ball answers it only when it lies wholly on
one side: :func:`sign` returns +1, -1, 0 (the exact zero) or ``None`` (undecided). The caller
then marks the neuron undecided and puts :data:`UNDECIDED` (a NaN ball, which every later
operation propagates) where its relevance would go, instead of guessing a side.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from lrp_num.errors import MissingDependencyError

#: the optional extra that provides python-flint
EXTRA = "certified"


def require_flint():
    """The ``flint`` module, or MissingDependencyError naming the extra that installs it."""
    try:
        import flint
    except ImportError:
        raise MissingDependencyError(
            "certified enclosures need python-flint: pip install 'lrp-toolkit[certified]' "
            "(or pip install 'python-flint>=0.6')") from None
    return flint


def precision_bits(dps: int, guard_digits: int) -> int:
    """Working precision in bits for ``dps`` decimal digits plus ``guard_digits``: ceil(d log2 10)."""
    return int(math.ceil((dps + guard_digits) * math.log2(10)))


@contextmanager
def working_precision(bits: int) -> Iterator[None]:
    """Set flint's working precision to ``bits`` inside the block, restore it after."""
    flint = require_flint()
    previous = flint.ctx.prec
    flint.ctx.prec = int(bits)
    try:
        yield
    finally:
        flint.ctx.prec = previous


def to_balls(array) -> np.ndarray:
    """float64 values as an object array of exact balls (radius 0), same shape."""
    arb = require_flint().arb
    values = np.asarray(array, dtype=np.float64)
    out = np.empty(values.size, dtype=object)
    out[:] = [arb(float(v)) for v in values.ravel()]
    return out.reshape(values.shape)


def zeros(n: int) -> np.ndarray:
    """An object array of ``n`` exact zero balls."""
    arb = require_flint().arb
    out = np.empty(n, dtype=object)
    out[:] = [arb(0)] * n
    return out


def undecided():
    """A NaN ball: the value of a neuron whose decision the enclosure cannot make."""
    return require_flint().arb.nan()


def sign(ball) -> int | None:
    """+1 or -1 where the ball lies wholly on that side of 0, 0 for the exact zero, else None."""
    if ball.is_zero():
        return 0
    if ball > 0:
        return 1
    if ball < 0:
        return -1
    return None


def lrp_sign(ball) -> int | None:
    """The LRP sign (sign(0) = +1) where decided, else None."""
    s = sign(ball)
    if s is None:
        return None
    return 1 if s >= 0 else -1


def is_finite(ball) -> bool:
    return bool(ball.is_finite())


def upper_float(ball) -> float:
    """A float64 at least the ball's upper end (rounded up): a proved upper bound."""
    flint = require_flint()
    if not ball.is_finite():
        return math.inf
    top = ball.upper()
    value = float(top)
    if flint.arb(value) < top:
        value = math.nextafter(value, math.inf)
    return value


def radius_float(ball) -> float:
    """The ball's radius as a float64 rounded up."""
    return upper_float(ball.rad()) if ball.is_finite() else math.inf


def midpoint_float(ball) -> float:
    """The ball's midpoint rounded to float64 (NaN for an undecided ball)."""
    return float(ball.mid()) if ball.is_finite() else math.nan


def from_mpf(value):
    """An mpmath mpf as an exact ball (for comparing the mpmath reference with the enclosures)."""
    flint = require_flint()
    negative, mantissa, exponent, bits = value._mpf_
    if not mantissa:
        return flint.arb(0)
    with working_precision(int(bits) + 64):  # enough bits that the product is exact
        ball = flint.arb(flint.fmpz(-int(mantissa) if negative else int(mantissa))) * flint.arb(2) ** int(exponent)
    return ball


__all__ = ["EXTRA", "from_mpf", "is_finite", "lrp_sign", "midpoint_float", "precision_bits", "radius_float",
           "require_flint", "sign", "to_balls", "undecided", "upper_float", "working_precision", "zeros"]
