"""Element-wise nonlinearities of transformers: GELU (exact, or torch's tanh approximation),
SiLU, Tanh, Sigmoid.

Each is a layer of one-input neurons y = g(x) on any shape (batch axis first, e.g. (batch,
tokens, features)). ``activation`` names the function for the element-wise rules
(``identity_nonlinear``: R_in = R_out; ``taylor_nonlinear``: R_in = g'(x~)(x - x~) / g(x) R_out,
derived in ``derivations/``). Hendrycks & Gimpel (2016), "Gaussian error linear units";
Elfwing et al. (2018), Neural Networks 107 (SiLU).
"""

from __future__ import annotations

import numpy as np

from lrp_num.engine.kernel_runtime import normal_cdf
from lrp_num.errors import ShapeError
from lrp_num.layers.elementwise import _ParameterFree

#: torch's ``approximate`` values of GELU and the activation name of each
_GELU_FORMS = {"none": "gelu", "tanh": "gelu_tanh"}


class GELU(_ParameterFree):
    """y = x Phi(x), Phi the standard normal CDF; ``approximate="tanh"``:
    y = x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 (as torch.nn.GELU).

    Parameters
    ----------
    approximate : {"none", "tanh"}
    """

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in _GELU_FORMS:
            raise ShapeError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.activation = _GELU_FORMS[approximate]

    def __repr__(self) -> str:
        return "GELU()" if self.approximate == "none" else f"GELU(approximate={self.approximate!r})"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        if self.approximate == "tanh":
            inner = np.sqrt(2 / np.pi).astype(x.dtype) * (x + x.dtype.type(0.044715) * x**3)
            return x * (1 + np.tanh(inner)) / 2
        return x * normal_cdf(x)


class SiLU(_ParameterFree):
    """y = x sigmoid(x) = x / (1 + exp(-x)) (swish)."""

    activation = "silu"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x * _sigmoid(x)


class Tanh(_ParameterFree):
    """y = tanh(x)."""

    activation = "tanh"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)


class Sigmoid(_ParameterFree):
    """y = 1 / (1 + exp(-x)), the logistic function."""

    activation = "sigmoid"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp of -|x| only."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


#: the element-wise nonlinearities (their rules: a composite's ``pointwise`` field)
NONLINEAR = (GELU, SiLU, Tanh, Sigmoid)

__all__ = ["GELU", "NONLINEAR", "SiLU", "Sigmoid", "Tanh"]
