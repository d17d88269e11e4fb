"""Normalisation over the last axis: LayerNorm and RMSNorm, on any leading shape
(batch, tokens, features).

LayerNorm y = gamma (x - mu) / sqrt(var + eps) + beta, mu and var (biased) over the last axis
(Ba et al. 2016, arXiv:1607.06450; torch.nn.LayerNorm); RMSNorm y = gamma x / sqrt(mean(x^2) +
eps) (Zhang & Sennrich 2019, NeurIPS; torch.nn.RMSNorm). Their rules (a composite's ``norm``
field) are derived in derivations/norm_cp.py (sigma held constant, CP-LRP) and norm_full.py.
"""

from __future__ import annotations

import numpy as np

from lrp_num.checks import as_float_array, parameter, require_finite
from lrp_num.errors import ShapeError


class _LastAxisNorm:
    norm = ""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None,
                 eps: float = 1e-5) -> None:
        self.weight = parameter(weight, f"{type(self).__name__} weight", ndim=1)
        if bias is None:
            bias = np.zeros_like(self.weight)
        self.bias = parameter(bias, f"{type(self).__name__} bias", ndim=1)
        if self.bias.shape != self.weight.shape:
            raise ShapeError(f"{type(self).__name__} weight {self.weight.shape} and bias "
                             f"{self.bias.shape} must have one shape (F,)")
        try:
            valid = not isinstance(eps, bool) and float(eps) > 0 and np.isfinite(float(eps))
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ShapeError(f"{type(self).__name__} eps must be a finite number > 0, got {eps!r}")
        self.eps = float(eps)

    @property
    def n_parameters(self) -> int:
        return int(self.weight.size + self.bias.size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.weight.shape[0]}, eps={self.eps:g})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not input_shape or input_shape[-1] != self.weight.shape[0]:
            raise ShapeError(f"{self!r} normalises a last axis of {self.weight.shape[0]} "
                             f"features, got input shape {tuple(input_shape)}")
        return tuple(input_shape)

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        x = as_float_array(x, f"input of {self!r}")
        if x.ndim < 2:
            raise ShapeError(f"{self!r} expects a batch (batch axis first, features last), got "
                             f"shape {x.shape}")
        self.output_shape(x.shape[1:])
        if check_finite:
            require_finite(x, f"input of {self!r}")
        return self._apply(x)


class LayerNorm(_LastAxisNorm):
    """y = weight (x - mean) / sqrt(var + eps) + bias over the last axis (biased variance).

    Parameters
    ----------
    weight, bias : array_like, shape (F,)
    eps : float
    """

    norm = "layernorm"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        centred = x - x.mean(axis=-1, keepdims=True)
        sigma = np.sqrt((centred**2).mean(axis=-1, keepdims=True) + x.dtype.type(self.eps))
        return self.weight.astype(x.dtype) * centred / sigma + self.bias.astype(x.dtype)


class RMSNorm(_LastAxisNorm):
    """y = weight x / sqrt(mean(x^2) + eps) over the last axis (no bias: ``bias`` stays 0).

    Parameters
    ----------
    weight : array_like, shape (F,)
    eps : float
    """

    norm = "rmsnorm"

    def __init__(self, weight: np.ndarray, eps: float = 1e-6) -> None:
        super().__init__(weight, None, eps)

    @property
    def n_parameters(self) -> int:
        return int(self.weight.size)

    def _apply(self, x: np.ndarray) -> np.ndarray:
        sigma = np.sqrt((x**2).mean(axis=-1, keepdims=True) + x.dtype.type(self.eps))
        return self.weight.astype(x.dtype) * x / sigma


#: the normalisation layers (their rules: a composite's ``norm`` field)
NORMALIZATION = (LayerNorm, RMSNorm)

__all__ = ["LayerNorm", "NORMALIZATION", "RMSNorm"]
