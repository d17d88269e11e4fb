"""Batch normalisation at inference, y = (x - mu) / sqrt(var + eps) * gamma + beta per channel.

It is never explained on its own: :class:`~lrp_num.engine.network.Sequential` folds it into the
immediately preceding dense or convolutional layer with the generated
:func:`lrp_num._generated.batchnorm_fold.fold_batchnorm` (W' = W gamma / sigma per output,
b' = (b - mu) gamma / sigma + beta, sigma = sqrt(var + eps)). The unfolded forward map is kept
to test that folding preserves the network's function.
"""

from __future__ import annotations

import numpy as np

from lrp_num._generated.batchnorm_fold import fold_batchnorm
from lrp_num.checks import as_float_array, parameter, require_finite
from lrp_num.layers.conv import Conv2d
from lrp_num.layers.dense import Dense
from lrp_num.errors import NonFiniteError, ShapeError


class BatchNorm:
    """Inference-time batch normalisation over axis 1 (features of (N, F), channels of NCHW).

    y[:, c, ...] = (x[:, c, ...] - mean[c]) / sqrt(var[c] + eps) * gamma[c] + beta[c].

    Parameters
    ----------
    gamma, beta, mean, var : array_like, shape (C,)
        Scale, shift, running mean and running variance (var >= 0).
    eps : float
        Added to the variance, eps > 0 unless every var > 0.
    """

    def __init__(
        self,
        gamma: np.ndarray,
        beta: np.ndarray,
        mean: np.ndarray,
        var: np.ndarray,
        eps: float = 1e-5,
    ) -> None:
        self.gamma = parameter(gamma, "BatchNorm gamma", ndim=1)
        self.beta = parameter(beta, "BatchNorm beta", ndim=1)
        self.mean = parameter(mean, "BatchNorm mean", ndim=1)
        self.var = parameter(var, "BatchNorm var", ndim=1)
        self.eps = float(eps)
        shapes = {a.shape for a in (self.gamma, self.beta, self.mean, self.var)}
        if len(shapes) != 1:
            raise ShapeError(f"BatchNorm gamma, beta, mean and var must share one shape (C,), got {sorted(shapes)}")
        if not np.isfinite(self.eps) or self.eps < 0:
            raise NonFiniteError(f"BatchNorm eps must be finite and >= 0, got {eps}")
        if np.any(self.var + self.eps <= 0):
            raise ShapeError("BatchNorm needs var + eps > 0 in every channel")

    @property
    def n_features(self) -> int:
        return self.gamma.shape[0]

    @property
    def n_parameters(self) -> int:
        return 4 * self.n_features

    def __repr__(self) -> str:
        return f"BatchNorm({self.n_features}, eps={self.eps:g})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 1 or input_shape[0] != self.n_features:
            raise ShapeError(f"{self!r} expects inputs of shape ({self.n_features}, ...), got {tuple(input_shape)}")
        return tuple(input_shape)

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        """Return the normalised batch (unfolded; for tests and for training scripts)."""
        x = as_float_array(x, f"input of {self!r}")
        if check_finite:
            require_finite(x, f"input of {self!r}")
        if x.ndim < 2:
            raise ShapeError(f"{self!r} expects a batch (N, C, ...), got shape {x.shape}")
        self.output_shape(x.shape[1:])
        return self._apply(x)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        shape = (1, self.n_features) + (1,) * (x.ndim - 2)
        scale = (self.gamma / np.sqrt(self.var + self.eps)).reshape(shape)
        return ((x - self.mean.reshape(shape)) * scale + self.beta.reshape(shape)).astype(x.dtype, copy=False)

    def fold_into(self, layer: Dense | Conv2d) -> Dense | Conv2d:
        """Return a copy of ``layer`` with this normalisation folded into its weight and bias."""
        if isinstance(layer, Dense):
            out_axis, n_out = 1, layer.n_out
        elif isinstance(layer, Conv2d):
            out_axis, n_out = 0, layer.out_channels
        else:
            raise TypeError(f"cannot fold BatchNorm into {layer!r}")
        if n_out != self.n_features:
            raise ShapeError(f"{self!r} cannot follow {layer!r}: {n_out} outputs, {self.n_features} features")
        # broadcast the per-output statistics along the weight's output axis
        shape = [1] * layer.weight.ndim
        shape[out_axis] = n_out
        stats = [a.reshape(shape) for a in (self.gamma, self.beta, self.mean, self.var)]
        weight, bias = fold_batchnorm(layer.weight, layer.bias.reshape(shape), *stats, self.eps)
        bias = np.asarray(bias).reshape(n_out)
        if isinstance(layer, Dense):
            return Dense(weight, bias)
        return Conv2d(weight, bias, stride=layer.stride, padding=layer.padding, groups=layer.groups)
