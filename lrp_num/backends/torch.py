"""The PyTorch backend: the engine on torch tensors, on whatever device they live (CPU, CUDA).

Dense layers, per-channel affine maps and additions use the array-API operators of
:mod:`lrp_num.backends.common`; convolutions and pooling use ``torch.nn.functional`` directly,
without autograd:

* Conv2d: ``conv2d`` for z = conv(a, g(K)) and ``conv_transpose2d`` for its adjoint (with the
  ``output_padding`` that restores the input size of the forward pass);
* sum and average pooling: the window sums are ``avg_pool2d`` with ``divisor_override=1`` (pad
  cells hold 0), their adjoint ``avg_pool2d_backward`` with the same arguments; the window
  weights c_j are the NumPy layer's own (``window_weights``), moved to the device once per input
  size;
* adaptive average pooling: ``adaptive_avg_pool2d`` times the bin size, and its backward;
* max pooling: the windows as patches (``unfold`` of the -inf-padded input) and the scatter-add
  back (``fold``), for the generated winner-take-all kernel.

The device is only a parameter: the CPU runs every code path that CUDA runs, so the CPU tests
cover the GPU path too.
"""

from __future__ import annotations

import functools

import array_api_compat.torch as xp
import numpy as np
import torch
import torch.nn.functional as F

from lrp_num.backends.common import ArrayBackend, DeviceWeights
from lrp_num.errors import ShapeError
from lrp_num.layers import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d, SumPool2d
from lrp_num.layers.windows import padded_extent


class TorchConv2d:
    """A :class:`~lrp_num.layers.Conv2d` on a torch device: conv2d and conv_transpose2d."""

    def __init__(self, layer: Conv2d, backend: "TorchBackend") -> None:
        self.layer = layer
        self._kernels = DeviceWeights(layer.weight, backend)
        self._biases = DeviceWeights(layer.bias, backend)
        self._input_hw: dict[tuple[int, int], tuple[int, int]] = {}

    def __repr__(self) -> str:
        return repr(self.layer)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x) + self._biases.get("identity")[:, None, None]

    def forward(self, a: torch.Tensor, g: str = "identity") -> torch.Tensor:
        layer = self.layer
        if a.ndim != 4 or a.shape[1] != layer.in_channels:
            raise ShapeError(f"{layer!r} expects inputs of shape (N, {layer.in_channels}, H, W), "
                             f"got {tuple(a.shape)}")
        z = F.conv2d(a, self._kernels.get(g), None, layer.stride, layer.padding, 1, layer.groups)
        self._input_hw[tuple(z.shape[2:])] = tuple(a.shape[2:])
        return z

    def transpose(self, s: torch.Tensor, g: str = "identity") -> torch.Tensor:
        """sum_j g(w_ij) s_j onto the input size of the forward pass that gave s's size."""
        layer = self.layer
        h, w = self._input_hw[tuple(s.shape[2:])]
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        ho, wo = s.shape[2:]
        # rows and columns beyond the last window get nothing: output_padding adds them
        extra = (h - ((ho - 1) * sh - 2 * ph + kh), w - ((wo - 1) * sw - 2 * pw + kw))
        return F.conv_transpose2d(s, self._kernels.get(g), None, layer.stride, layer.padding,
                                  extra, layer.groups)

    def bias_like(self, z: torch.Tensor, g: str = "identity") -> torch.Tensor:
        return self._biases.get(g)[:, None, None].expand(z.shape)


class TorchSumPool2d:
    """Sum or average pooling on a torch device: g(c_j) times the window sums, and the adjoint."""

    def __init__(self, layer: SumPool2d, backend: "TorchBackend") -> None:
        self.layer, self.backend = layer, backend
        self._weights: dict[tuple[int, int], DeviceWeights] = {}
        self._input_hw: dict[tuple[int, int], tuple[int, int]] = {}

    def __repr__(self) -> str:
        return repr(self.layer)

    def _arguments(self) -> tuple:
        layer = self.layer
        return layer.kernel, layer.stride, layer.padding, layer.ceil_mode, True, 1

    def _window_weights(self, input_hw: tuple[int, int], g: str) -> torch.Tensor:
        if input_hw not in self._weights:
            self._weights[input_hw] = DeviceWeights(self.layer.window_weights(input_hw), self.backend)
        return self._weights[input_hw].get(g)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward(self, a: torch.Tensor, g: str = "identity") -> torch.Tensor:
        input_hw = tuple(a.shape[2:])
        self.layer.output_shape(tuple(a.shape[1:]))
        sums = F.avg_pool2d(a, *self._arguments())
        self._input_hw[tuple(sums.shape[2:])] = input_hw
        return sums * self._window_weights(input_hw, g)

    def transpose(self, s: torch.Tensor, g: str = "identity") -> torch.Tensor:
        input_hw = self._input_hw[tuple(s.shape[2:])]
        template = s.new_empty((*s.shape[:2], *input_hw))
        weighted = s * self._window_weights(input_hw, g)
        return torch.ops.aten.avg_pool2d_backward(weighted, template, *self._arguments())

    def bias_like(self, z: torch.Tensor, g: str = "identity") -> torch.Tensor:
        return torch.zeros_like(z)


class TorchAdaptiveAvgPool2d(TorchSumPool2d):
    """Adaptive (and global) average pooling on a torch device."""

    def forward(self, a: torch.Tensor, g: str = "identity") -> torch.Tensor:
        input_hw = tuple(a.shape[2:])
        self.layer.output_shape(tuple(a.shape[1:]))
        self._input_hw[tuple(self.layer.output_size)] = input_hw
        means = F.adaptive_avg_pool2d(a, self.layer.output_size)
        # mean / c_j is the bin sum; times g(c_j)
        return means / self._window_weights(input_hw, "identity") * self._window_weights(input_hw, g)

    def transpose(self, s: torch.Tensor, g: str = "identity") -> torch.Tensor:
        input_hw = self._input_hw[tuple(s.shape[2:])]
        template = s.new_empty((*s.shape[:2], *input_hw))
        # the backward of the mean scatters s_j c_j; the sum's adjoint scatters s_j
        weighted = s * self._window_weights(input_hw, g) / self._window_weights(input_hw, "identity")
        return torch.ops.aten._adaptive_avg_pool2d_backward(weighted, template)


class TorchMaxPool2d:
    """Max pooling on a torch device: the forward map, patches and their scatter-add."""

    def __init__(self, layer: MaxPool2d, backend: "TorchBackend") -> None:
        self.layer = layer

    def __repr__(self) -> str:
        return repr(self.layer)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        return F.max_pool2d(x, layer.kernel, layer.stride, layer.padding, 1, layer.ceil_mode)

    def _extent(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        output_hw = self.layer.geometry.output_hw(input_hw)
        return tuple(padded_extent(o, k, s) for o, k, s in
                     zip(output_hw, self.layer.kernel, self.layer.stride))

    def _pads(self, input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """F.pad amounts (left, right, top, bottom) from the input to the windows' extent; a
        negative amount crops what no window reads."""
        (ph, pw), (eh, ew), (h, w) = self.layer.padding, self._extent(input_hw), input_hw
        return (pw, ew - pw - w, ph, eh - ph - h)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """The windows of x as (N, C, Ho, Wo, kh*kw), entries in C order (as the NumPy layer)."""
        layer = self.layer
        input_hw = tuple(x.shape[2:])
        layer.output_shape(tuple(x.shape[1:]))
        (kh, kw), (sh, sw) = layer.kernel, layer.stride
        padded = F.pad(x, self._pads(input_hw), value=-np.inf)
        windows = padded.unfold(2, kh, sh).unfold(3, kw, sw)  # (N, C, Ho, Wo, kh, kw)
        self._input_hw = input_hw
        return windows.reshape(*windows.shape[:4], kh * kw)

    def unpatch(self, r: torch.Tensor) -> torch.Tensor:
        """Scatter-add patch values back onto the input of the last :meth:`patches` call."""
        layer = self.layer
        (kh, kw), input_hw = layer.kernel, self._input_hw
        n, c, ho, wo, k = r.shape
        columns = r.permute(0, 1, 4, 2, 3).reshape(n, c * k, ho * wo)
        padded = F.fold(columns, self._extent(input_hw), (kh, kw), stride=layer.stride)
        left, right, top, bottom = self._pads(input_hw)
        return F.pad(padded, (-left, -right, -top, -bottom))


class TorchBackend(ArrayBackend):
    """Torch tensors on one device in one floating dtype."""

    name = "torch"

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(xp, device, dtype)

    def from_host(self, array: np.ndarray, like: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.dtype if like is None else like.dtype
        # a host copy first: the layers keep read-only arrays, which torch will not wrap
        return torch.as_tensor(np.array(array), dtype=dtype, device=self.device)

    def to_host(self, array: torch.Tensor) -> np.ndarray:
        return array.detach().cpu().numpy()

    def checked_input(self, x: torch.Tensor) -> torch.Tensor:
        """As for every backend, on the tensor detached from autograd: relevance is computed
        by the derived rules, never by differentiating, and comes back without a graph."""
        return super().checked_input(x.detach())

    def build_spatial(self, layer: object) -> object | None:
        if isinstance(layer, Conv2d):
            return TorchConv2d(layer, self)
        if isinstance(layer, AdaptiveAvgPool2d):
            return TorchAdaptiveAvgPool2d(layer, self)
        if isinstance(layer, (SumPool2d, AvgPool2d)):
            return TorchSumPool2d(layer, self)
        if isinstance(layer, MaxPool2d):
            return TorchMaxPool2d(layer, self)
        return None


@functools.lru_cache(maxsize=None)
def _backend(device: torch.device, dtype: torch.dtype) -> TorchBackend:
    return TorchBackend(device, dtype)


def backend(device: object = None, dtype: object = None) -> TorchBackend:
    """The torch backend for ``device`` (default: CPU) and ``dtype`` (default: float64);
    one object per pair, so that the layers' device weights are cached across calls."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _backend(device, torch.float64 if dtype is None else dtype)


__all__ = ["TorchAdaptiveAvgPool2d", "TorchBackend", "TorchConv2d", "TorchMaxPool2d",
           "TorchSumPool2d", "backend"]
