"""Linear operators: the interface between layers and the generated relevance kernels.

A generated kernel never sees a weight matrix directly. It receives a :class:`LinearOperator`
for the layer's linear part z_j = sum_i x_i w_ij + b_j and asks it for

* ``forward(a, g)``: the map  a -> sum_i a_i g(w_ij)  (no bias), output shape of the layer;
* ``transpose(s, g)``: the map  s -> sum_j g(w_ij) s_j, input shape of the layer;
* ``bias_like(z, g="identity")``: g(b_j) broadcast to the output shape of ``z`` (g applies the
  same elementwise transforms to the bias, for conventions such as zennit's b^+ or b^2);

where ``g`` is an elementwise weight transform named by a string (``"identity"``, ``"positive"``,
``"negative"``, ``"square"``, ``"ones"`` or a registered one). Dense and convolutional layers
implement the same three methods, so one kernel serves both.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from lrp_num.errors import UnknownRuleError

WeightTransform = Callable[[np.ndarray], np.ndarray]

#: Elementwise weight transforms g(w) that generated kernels may name.
WEIGHT_TRANSFORMS: dict[str, WeightTransform] = {
    "identity": lambda w: w,
    "positive": lambda w: np.maximum(w, 0),
    "negative": lambda w: np.minimum(w, 0),
    "square": lambda w: w * w,
    "ones": lambda w: np.ones_like(w),
}


def weight_transform(g: str) -> WeightTransform:
    """The elementwise weight transform named ``g``; UnknownRuleError names the known ones."""
    try:
        return WEIGHT_TRANSFORMS[g]
    except KeyError:
        raise UnknownRuleError(f"unknown weight transform {g!r}; known: "
                               f"{', '.join(sorted(WEIGHT_TRANSFORMS))}") from None


class LinearOperator(Protocol):
    """What a generated kernel needs from a layer's linear part."""

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_i a_i g(w_ij) for a batch ``a`` of layer inputs (no bias)."""

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_j g(w_ij) s_j for a batch ``s`` of layer outputs."""

    def bias_like(self, z: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return g(b_j) broadcast to the shape of the output batch ``z``.

        Kernels call it with one argument for a derived bias share (LRP-epsilon) and with a
        transform name only for a caller's ``bias_shares`` convention.
        """


class TransformedWeights:
    """Cache of g(W) for one weight (or bias) array, so a kernel transforms each once.

    The identity in the weight's own dtype is the weight itself (read-only), not a copy.
    """

    def __init__(self, weight: np.ndarray) -> None:
        self.weight = weight
        self._cache: dict[tuple[str, np.dtype], np.ndarray] = {}

    def get(self, g: str, dtype: np.dtype) -> np.ndarray:
        key = (g, np.dtype(dtype))
        if key not in self._cache:
            transform = weight_transform(g)
            # one copy at most: none for the identity in the weight's own dtype, else the cast
            self._cache[key] = np.ascontiguousarray(transform(self.weight), dtype=dtype)
        return self._cache[key]


class DenseOperator:
    """Linear operator of a dense layer, weights in the w_ij layout (inputs, outputs).

    Parameters
    ----------
    weight : ndarray, shape (n_in, n_out)
        w_ij, the weight from input i to output j.
    bias : ndarray, shape (n_out,)
        b_j.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = weight
        self.bias = bias
        self._weights = TransformedWeights(weight)
        self._biases = TransformedWeights(bias)

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        return a @ self._weights.get(g, a.dtype)

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        return s @ self._weights.get(g, s.dtype).T

    def bias_like(self, z: np.ndarray, g: str = "identity") -> np.ndarray:
        return np.broadcast_to(self._biases.get(g, z.dtype), z.shape)
