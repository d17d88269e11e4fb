"""The 2-d convolution z_j = sum_i x_i w_ij + b_j, where w_ij is a shared kernel entry.

Inputs are NCHW batches, kernels (C_out, C_in, kh, kw) as in PyTorch and ONNX (this is
cross-correlation, like both). The forward map gathers every receptive field with a
``sliding_window_view`` (an im2col view), copies it as (C kh kw, N Ho Wo) and contracts it with
the kernel in one matrix product for the whole batch (with two BLAS threads on a busy machine,
one product per sample ran several times slower); the transpose is the exact adjoint (col2im),
a scatter-add over the kh*kw kernel offsets, or for stride 1 the correlation with the flipped
kernel. Grouped convolutions (``groups`` G, depthwise when G = C_in) connect output channel o
only to the C_in / G input channels of its group, as PyTorch's ``groups``; the kernel then has
shape (C_out, C_in / G, kh, kw) and both maps run one matrix product per group.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from lrp_num.checks import batch_input, pair, parameter
from lrp_num.errors import ShapeError
from lrp_num.layers.operators import TransformedWeights
from lrp_num.layers.windows import WindowGeometry, receptive_fields, scatter_windows


class Conv2d:
    """2-d convolution on NCHW batches, z_j = sum_i x_i w_ij + b_j with a shared kernel.

    z[n, o, p, q] = sum_{c, u, v} x_pad[n, c, p*sh + u, q*sw + v] K[o, c, u, v] + b[o].
    It is its own :class:`~lrp_num.layers.operators.LinearOperator` (``forward``, ``transpose``,
    ``bias_like``), with g applied to the kernel entries.

    Parameters
    ----------
    weight : array_like, shape (C_out, C_in, kh, kw)
        The kernel K, in the PyTorch / ONNX layout.
    bias : array_like, shape (C_out,), optional
        b, one per output channel; zeros when omitted.
    stride : int or (int, int)
        Window step (sh, sw).
    padding : int or (int, int)
        Zeros added on both sides of height and width (ph, pw).
    groups : int
        Number of channel groups G (C_out divisible by G): output channel o sees input channels
        (o // (C_out / G)) * C_in/G ... + C_in/G - 1 only; the weight is (C_out, C_in / G, kh, kw).
    """

    def __init__(
        self,
        weight: np.ndarray,
        bias: np.ndarray | None = None,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        groups: int = 1,
    ) -> None:
        self.weight = parameter(weight, "Conv2d weight", ndim=4)
        c_out = self.weight.shape[0]
        try:
            valid = int(groups) == groups and groups >= 1 and not isinstance(groups, bool)
        except (TypeError, ValueError):
            valid = False
        if not valid or c_out % int(groups):
            raise ShapeError(f"Conv2d groups must be a positive int dividing C_out = {c_out}, got {groups!r}")
        self.groups = int(groups)
        self.bias = parameter(np.zeros(c_out) if bias is None else bias, "Conv2d bias", ndim=1)
        if self.bias.shape != (c_out,):
            raise ShapeError(
                f"Conv2d bias must have shape ({c_out},) for weight of shape {self.weight.shape}, "
                f"got {self.bias.shape}"
            )
        self.geometry = WindowGeometry(
            self.weight.shape[2:], pair(stride, "Conv2d stride", 1), pair(padding, "Conv2d padding", 0)
        )
        self._weights = TransformedWeights(self.weight)
        self._biases = TransformedWeights(self.bias)
        # im2col columns of the last input, kept only inside reusing_columns()
        self._reuse_columns = False
        self._columns: tuple[np.ndarray, np.ndarray] | None = None

    @contextlib.contextmanager
    def reusing_columns(self) -> Iterator[None]:
        """Within this block, reuse the im2col columns of an input array seen before.

        A relevance pass convolves the same activation twice (the forward pass, then the
        kernel's z'_j with transformed weights); the columns are the same both times. Inputs are
        recognised by identity, so the block must not modify them in place; ``explain`` opens
        it around one backward pass of its own activations.
        """
        self._reuse_columns, self._columns = True, None
        try:
            yield
        finally:
            self._reuse_columns, self._columns = False, None

    def release_columns(self) -> None:
        """Forget the columns kept inside :meth:`reusing_columns`; ``explain`` calls it once a
        node's rule is done with them, so that the columns of all layers are never held at once."""
        self._columns = None

    @property
    def stride(self) -> tuple[int, int]:
        return self.geometry.stride

    @property
    def padding(self) -> tuple[int, int]:
        return self.geometry.padding

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def n_parameters(self) -> int:
        return self.weight.size + self.bias.size

    def __repr__(self) -> str:
        kh, kw = self.kernel_size
        groups = f", groups {self.groups}" if self.groups > 1 else ""
        return (
            f"Conv2d({self.in_channels} -> {self.out_channels}, kernel {kh}x{kw}, "
            f"stride {self.stride}, padding {self.padding}{groups})"
        )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape (C_out, Ho, Wo) for per-sample input shape (C_in, H, W)."""
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ShapeError(
                f"{self!r} expects inputs of shape ({self.in_channels}, H, W), got {input_shape}"
            )
        ho, wo = self.geometry.output_hw(input_shape[1:])
        if ho < 1 or wo < 1:
            raise ShapeError(f"{self!r}: input {input_shape} is smaller than the kernel")
        return (self.out_channels, ho, wo)

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        """Return z = conv(x, K) + b for an NCHW batch x."""
        return self._apply(self._checked(x, check_finite))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        z = self._correlate(x, self._weights.get("identity", x.dtype))
        z += self.bias.astype(x.dtype, copy=False)[:, None, None]
        return z

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_i a_i g(w_ij): the convolution of ``a`` with g(K), no bias."""
        a = self._checked(a, check_finite=False)
        return self._correlate(a, self._weights.get(g, a.dtype))

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_j g(w_ij) s_j for ``s`` of the output shape (N, C_out, Ho, Wo).

        The exact adjoint of :meth:`forward`: each output's s_j times g(K) is scattered back
        onto the padded input (col2im), then the padding is cropped. The input height and
        width are those of the last forward pass that gave (Ho, Wo) (see
        :class:`~lrp_num.layers.windows.WindowGeometry`); :meth:`transpose_to` takes them explicitly.
        """
        s = self._checked_output(s)
        return self.transpose_to(s, self.geometry.input_hw(s.shape[2:]), g)

    def transpose_to(self, s: np.ndarray, input_hw: tuple[int, int], g: str = "identity") -> np.ndarray:
        """:meth:`transpose` onto an input of the given (H, W); unreached pixels get zero."""
        s = self._checked_output(s)
        h, w = input_hw
        expected = self.output_shape((self.in_channels, h, w))[1:]
        if s.shape[2:] != expected:
            raise ShapeError(f"{self!r}: output of spatial shape {s.shape[2:]} does not come from input {(h, w)}")
        kernel = self._weights.get(g, s.dtype)
        n, c_out, ho, wo = s.shape
        kh, kw = self.kernel_size
        (ph, pw) = self.padding
        if self.groups == 1 and self.stride == (1, 1) and ph < kh and pw < kw and c_out <= self.in_channels:
            # stride 1: the adjoint is the correlation of s, zero-padded by (k - 1 - p), with the
            # flipped kernel, channels swapped. Its im2col copy moves C_out kh kw values per
            # pixel, the scatter-add below C_in kh kw: take the copy unless the layer widens
            flipped = np.ascontiguousarray(kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
            padded = np.pad(s, ((0, 0), (0, 0), (kh - 1 - ph,) * 2, (kw - 1 - pw,) * 2))
            columns = _columns(receptive_fields(padded, (kh, kw), (1, 1)))
            return _batch_first(flipped.reshape(self.in_channels, -1) @ columns, (n, self.in_channels, h, w))
        # fields[(c, u, v), (n, p, q)] = sum_o K[o, c, u, v] s[n, o, p, q], one product per group
        g = self.groups
        grouped = kernel.reshape(g, c_out // g, -1).transpose(0, 2, 1)
        channels_first = np.ascontiguousarray(s.transpose(1, 0, 2, 3)).reshape(g, c_out // g, n * ho * wo)
        fields = (grouped @ channels_first).reshape(self.in_channels, kh, kw, n, ho, wo)
        padded = scatter_windows(fields.transpose(3, 0, 1, 2, 4, 5), (h + 2 * ph, w + 2 * pw), self.stride)
        return padded[:, :, ph : ph + h, pw : pw + w]

    def bias_like(self, z: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return g(b) broadcast to the shape of the output batch ``z`` (N, C_out, Ho, Wo)."""
        return np.broadcast_to(self._biases.get(g, z.dtype)[:, None, None], np.shape(z))

    def _correlate(self, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        """z[n, o] = sum over windows of K[o] * x: im2col, then one matrix product per group
        over the whole batch (one large product runs much faster than one per sample)."""
        n = x.shape[0]
        ho, wo = self.output_shape(x.shape[1:])[1:]
        columns = self._im2col(x)
        g = self.groups
        # (G, C_out/G, K/G) @ (G, K/G, N Ho Wo)
        z = kernel.reshape(g, self.out_channels // g, -1) @ columns.reshape(g, -1, columns.shape[-1])
        return _batch_first(z, (n, self.out_channels, ho, wo))

    def _im2col(self, x: np.ndarray) -> np.ndarray:
        """The windows of the zero-padded input copied into (C kh kw, N Ho Wo)."""
        if self._columns is not None and self._columns[0] is x:
            return self._columns[1]
        (ph, pw) = self.padding
        padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        columns = _columns(receptive_fields(padded, self.kernel_size, self.stride))
        if self._reuse_columns:
            self._columns = (x, columns)
        return columns

    def _checked(self, x: object, check_finite: bool) -> np.ndarray:
        x = batch_input(x, repr(self), ndim=4, check_finite=check_finite)
        self.output_shape(x.shape[1:])
        return x

    def _checked_output(self, s: object) -> np.ndarray:
        s = batch_input(s, f"{self!r} transpose", ndim=4, check_finite=False)
        if s.shape[1] != self.out_channels:
            raise ShapeError(f"{self!r} transpose expects (N, {self.out_channels}, Ho, Wo), got {s.shape}")
        return s


def _columns(fields: np.ndarray) -> np.ndarray:
    """im2col: the window view (N, C, Ho, Wo, kh, kw) copied into (C kh kw, N Ho Wo), so that a
    convolution of the whole batch is one matrix product."""
    n, c, ho, wo, kh, kw = fields.shape
    return np.ascontiguousarray(fields.transpose(1, 4, 5, 0, 2, 3)).reshape(c * kh * kw, n * ho * wo)


def _batch_first(z: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """A product laid out (channels, N Ho Wo) as the contiguous NCHW batch ``shape``."""
    n, c, ho, wo = shape
    return np.ascontiguousarray(z.reshape(c, n, ho, wo).transpose(1, 0, 2, 3))
