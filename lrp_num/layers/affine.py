"""The per-channel affine layer y_c = s_c x_c + t_c: a batch norm that cannot be folded.

A BatchNorm that follows a Dense or Conv2d node with no other consumer is folded into it
(:mod:`lrp_num.layers.batchnorm`). Anywhere else (after an Add in a pre-activation block, at the
network input, after a linear node whose output is used twice) it becomes a
:class:`ChannelAffine`: a linear layer with a diagonal weight, w_cc = s_c, and bias t_c. Each
output neuron has exactly one input, so a root-point rule gives that input all of R_j whatever
its search direction (sum_i q_ij has one term); the composites explain it with the z-rule,
which under the DTD bias convention is that pass-through (R_c below = R_c above wherever
s_c x_c != 0).
"""

from __future__ import annotations

import numpy as np

from lrp_num._generated.batchnorm_fold import fold_batchnorm
from lrp_num.layers.batchnorm import BatchNorm
from lrp_num.checks import as_float_array, parameter, require_finite
from lrp_num.errors import ShapeError
from lrp_num.layers.operators import TransformedWeights


def affine_from_batchnorm(batchnorm: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """(scale s, shift t) of a batch norm as a per-channel affine map.

    s_c = gamma_c / sqrt(var_c + eps), t_c = beta_c - mu_c s_c: the derived folding
    (:func:`lrp_num._generated.batchnorm_fold.fold_batchnorm`) applied to the identity map
    (unit weight, zero bias). The one place that computes it.
    """
    ones = np.ones_like(batchnorm.gamma)
    scale, shift = fold_batchnorm(ones, np.zeros_like(ones), batchnorm.gamma, batchnorm.beta,
                                  batchnorm.mean, batchnorm.var, batchnorm.eps)
    return np.asarray(scale), np.asarray(shift)


class ChannelAffine:
    """y[:, c, ...] = scale[c] x[:, c, ...] + shift[c]: a linear layer with diagonal weights.

    A :class:`~lrp_num.layers.operators.LinearOperator`: ``forward(a, g)`` = g(scale_c) a_c,
    ``transpose(s, g)`` = g(scale_c) s_c, ``bias_like(z, g)`` = g(shift_c) broadcast to z.

    Parameters
    ----------
    scale, shift : array_like, shape (C,)
        s_c and t_c; channels on axis 1 of the input (features of (N, F), channels of NCHW).
    """

    def __init__(self, scale: np.ndarray, shift: np.ndarray) -> None:
        self.scale = parameter(scale, "ChannelAffine scale", ndim=1)
        self.shift = parameter(shift, "ChannelAffine shift", ndim=1)
        if self.scale.shape != self.shift.shape:
            raise ShapeError(f"ChannelAffine scale {self.scale.shape} and shift {self.shift.shape} "
                             "must have one shape (C,)")
        self._weights = TransformedWeights(self.scale)
        self._biases = TransformedWeights(self.shift)

    @classmethod
    def from_batchnorm(cls, batchnorm: BatchNorm) -> "ChannelAffine":
        """The affine map of an inference-time batch norm (:func:`affine_from_batchnorm`)."""
        return cls(*affine_from_batchnorm(batchnorm))

    @property
    def n_channels(self) -> int:
        return self.scale.shape[0]

    @property
    def n_parameters(self) -> int:
        return 2 * self.n_channels

    def __repr__(self) -> str:
        return f"ChannelAffine({self.n_channels})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 1 or input_shape[0] != self.n_channels:
            raise ShapeError(f"{self!r} expects inputs of shape ({self.n_channels}, ...), got {tuple(input_shape)}")
        return tuple(input_shape)

    def _per_channel(self, values: np.ndarray, ndim: int) -> np.ndarray:
        return values.reshape((1, self.n_channels) + (1,) * (ndim - 2))

    def _checked(self, x: object, check_finite: bool) -> np.ndarray:
        x = as_float_array(x, f"input of {self!r}")
        if x.ndim < 2:
            raise ShapeError(f"{self!r} expects a batch (N, C, ...), got shape {x.shape}")
        if check_finite:
            require_finite(x, f"input of {self!r}")
        self.output_shape(x.shape[1:])
        return x

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        x = self._checked(x, check_finite)
        return self.forward(x) + self.bias_like(x)

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return g(s_c) a_c (no shift)."""
        a = self._checked(a, check_finite=False)
        return a * self._per_channel(self._weights.get(g, a.dtype), a.ndim)

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return g(s_c) s_c, the adjoint of :meth:`forward` (a diagonal map is symmetric)."""
        s = self._checked(s, check_finite=False)
        return s * self._per_channel(self._weights.get(g, s.dtype), s.ndim)

    def bias_like(self, z: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return g(t_c) broadcast to the shape of ``z``."""
        z = np.asarray(z)
        return np.broadcast_to(self._per_channel(self._biases.get(g, z.dtype), z.ndim), z.shape)
