"""The CuPy backend: the engine on CuPy arrays, on their GPU.

Dense layers, per-channel affine maps, additions and the shape-only operations are the
array-API operators of :mod:`lrp_num.backends.common`, computed by CuPy. CuPy has no
convolution of its own in its array namespace, so convolutions and pooling run through the
torch backend's operators on the same GPU memory: arrays cross by DLPack (no copy) into
``torch.nn.functional`` and back. That part needs torch with CUDA as well
(``pip install 'lrp-toolkit[torch]'``); a network of dense layers needs CuPy only.

Not run on this project's CI machine (no GPU, no CuPy): the kernels and dense operators are the
array-API code tested with array-api-strict and torch, and the DLPack bridge
(:class:`~lrp_num.backends.common.DLPackBridge`) is tested between NumPy and torch on the CPU.
"""

from __future__ import annotations

import functools

import array_api_compat.cupy as xp
import cupy
import numpy as np

from lrp_num.backends.common import ArrayBackend, DLPackBridge
from lrp_num.errors import MissingDependencyError
from lrp_num.layers import AdaptiveAvgPool2d, Conv2d, MaxPool2d, SumPool2d


class CupyBackend(ArrayBackend):
    """CuPy arrays on one GPU in one floating dtype."""

    name = "cupy"

    def __init__(self, device: cupy.cuda.Device, dtype: np.dtype) -> None:
        super().__init__(xp, device, dtype)

    def from_host(self, array: np.ndarray, like: cupy.ndarray | None = None) -> cupy.ndarray:
        dtype = self.dtype if like is None else like.dtype
        with self.device:
            return cupy.asarray(np.asarray(array), dtype=dtype)

    def to_host(self, array: cupy.ndarray) -> np.ndarray:
        return cupy.asnumpy(array)

    @functools.cached_property
    def _torch(self):
        try:
            from lrp_num.backends import get
            import torch
        except ImportError:
            raise MissingDependencyError(
                "CuPy arrays through Conv2d and pooling layers use torch's CUDA kernels: "
                "pip install 'lrp-toolkit[torch]'") from None
        dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
        return torch, get("torch", f"cuda:{self.device.id}", dtype[np.dtype(self.dtype)])

    def build_spatial(self, layer: object) -> object | None:
        if isinstance(layer, (Conv2d, SumPool2d, AdaptiveAvgPool2d, MaxPool2d)):
            torch, backend = self._torch
            return DLPackBridge(backend.operator(layer), torch.from_dlpack, cupy.from_dlpack)
        return None


@functools.lru_cache(maxsize=None)
def _backend(device_id: int, dtype: np.dtype) -> CupyBackend:
    return CupyBackend(cupy.cuda.Device(device_id), dtype)


def backend(device: object = None, dtype: object = None) -> CupyBackend:
    """The CuPy backend for ``device`` (a cupy Device or its id; default: the current one) and
    ``dtype`` (default float64)."""
    device_id = cupy.cuda.Device().id if device is None else getattr(device, "id", device)
    return _backend(int(device_id), np.dtype(np.float64 if dtype is None else dtype))


__all__ = ["CupyBackend", "backend"]
