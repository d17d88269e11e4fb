"""The dense (fully connected) layer z_j = sum_i x_i w_ij + b_j.

Weights are kept in the w_ij layout, shape (n_in, n_out), the layout of the deep Taylor
decomposition papers (Montavon et al. 2017); :meth:`Dense.from_torch_layout` converts PyTorch's
and ONNX Gemm's (n_out, n_in).
"""

from __future__ import annotations

import numpy as np

from lrp_num.checks import batch_input, is_float_batch, parameter
from lrp_num.errors import ShapeError
from lrp_num.layers.operators import DenseOperator


class Dense(DenseOperator):
    """Fully connected layer z_j = sum_i x_i w_ij + b_j on a batch of vectors.

    It is also the layer's :class:`~lrp_num.layers.operators.LinearOperator`: ``forward(a, g)``
    returns sum_i a_i g(w_ij) (no bias), ``transpose(s, g)`` returns sum_j g(w_ij) s_j and
    ``bias_like(z)`` returns b_j, all in the dtype of the array passed in.

    Parameters
    ----------
    weight : array_like, shape (n_in, n_out)
        w_ij, the weight from input i to output j (the transpose of PyTorch's layout).
    bias : array_like, shape (n_out,), optional
        b_j; zeros when omitted.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
        weight = parameter(weight, "Dense weight", ndim=2)
        n_out = weight.shape[1]
        bias = parameter(np.zeros(n_out) if bias is None else bias, "Dense bias", ndim=1)
        if bias.shape != (n_out,):
            raise ShapeError(
                f"Dense bias must have shape ({n_out},) to match weight (n_in, n_out) = "
                f"{weight.shape}, got {bias.shape}"
            )
        super().__init__(weight, bias)

    @classmethod
    def from_torch_layout(cls, weight_out_in: np.ndarray, bias: np.ndarray | None = None) -> "Dense":
        """Build from a weight in PyTorch's (n_out, n_in) layout, as in ``torch.nn.Linear``."""
        return cls(np.asarray(weight_out_in).T, bias)

    @property
    def n_in(self) -> int:
        return self.weight.shape[0]

    @property
    def n_out(self) -> int:
        return self.weight.shape[1]

    @property
    def n_parameters(self) -> int:
        return self.weight.size + self.bias.size

    def __repr__(self) -> str:
        return f"Dense({self.n_in} -> {self.n_out})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape (n_out,) for per-sample input shape (n_in,)."""
        if tuple(input_shape) != (self.n_in,):
            raise ShapeError(f"{self!r} expects inputs of shape ({self.n_in},), got {tuple(input_shape)}")
        return (self.n_out,)

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        """Return z = x W + b for a batch x of shape (N, n_in)."""
        return self._apply(self._checked(x, check_finite))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        z = x @ self._weights.get("identity", x.dtype)
        z += self.bias.astype(x.dtype, copy=False)
        return z

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_i a_i g(w_ij), shape (N, n_out); no bias."""
        return super().forward(self._checked(a, check_finite=False), g)

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_j g(w_ij) s_j, shape (N, n_in); the adjoint of :meth:`forward`."""
        if not is_float_batch(s, 2):
            s = batch_input(s, f"{self!r} transpose", ndim=2, check_finite=False)
        if s.shape[1] != self.n_out:
            raise ShapeError(f"{self!r} transpose expects (N, {self.n_out}), got {s.shape}")
        return super().transpose(s, g)

    def _checked(self, x: object, check_finite: bool) -> np.ndarray:
        if check_finite or not is_float_batch(x, 2):
            x = batch_input(x, repr(self), ndim=2, check_finite=check_finite)
        if x.shape[1] != self.n_in:
            raise ShapeError(f"{self!r} expects inputs of shape (N, {self.n_in}), got {x.shape}")
        return x
