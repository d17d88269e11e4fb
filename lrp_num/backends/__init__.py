"""Array backends: where the engine's arrays live and who computes its linear maps.

The generated kernels are array-API code: they take the array namespace ``xp`` from their
input and call only the standard's functions, so they run unchanged on NumPy, PyTorch (CPU or
CUDA) and CuPy arrays. What a kernel cannot express in the standard are the layers' linear maps
(a convolution, its transpose, pooling windows); a backend provides those as operators of the
same :class:`~lrp_num.layers.operators.LinearOperator` protocol, one per layer:

* :mod:`lrp_num.backends.numpy` (the default, and the only one imported with ``lrp_num``): the
  layers themselves (im2col and BLAS);
* :mod:`lrp_num.backends.torch`: ``torch.nn.functional`` (conv2d and conv_transpose2d, pooling),
  on any device torch has;
* :mod:`lrp_num.backends.cupy`: CuPy arrays (dense layers and graph operations in CuPy, the
  convolutions and pooling through torch's CUDA kernels on the same memory, via DLPack).

:func:`backend_of` picks the backend of an input array, so ``explain`` returns relevance of the
input's type, device and dtype. A backend moves each layer's weights to its device once and
caches them (:func:`operator_of`). Backends load lazily; a missing library is a
:class:`~lrp_num.errors.MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

import importlib
import weakref
from typing import Any, Callable, Protocol

import array_api_compat

from lrp_num.errors import MissingDependencyError, UnsupportedLayerError

#: backend name -> (the library it needs, the extra that installs it)
BACKENDS = {"numpy": ("numpy", None), "torch": ("torch", "torch"), "cupy": ("cupy", "cupy")}


class Backend(Protocol):
    """What ``explain`` needs from a backend (see :mod:`lrp_num.backends.common`)."""

    name: str
    #: identifies the backend's device and dtype: one operator per layer and key
    key: tuple

    def operator(self, layer: object) -> object:
        """The layer's operator on this backend: callable (the layer's forward map) and, for
        linear layers, forward(a, g) / transpose(s, g) / bias_like(z, g)."""

    def from_host(self, array: Any) -> Any:
        """A host (NumPy) array on the backend's device, in its dtype."""

    def to_host(self, array: Any) -> Any:
        """A backend array as a NumPy array (a copy from the device where there is one)."""


def load(name: str):
    """The module ``lrp_num.backends.<name>``, imported on first use.

    Raises
    ------
    MissingDependencyError
        When the library the backend needs is not installed (the message names the extra).
    UnsupportedLayerError
        For an unknown backend name.
    """
    if name not in BACKENDS:
        raise UnsupportedLayerError(f"unknown array backend {name!r}; known: {', '.join(BACKENDS)}")
    library, extra = BACKENDS[name]
    try:
        return importlib.import_module(f"lrp_num.backends.{name}")
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] != library:
            raise
        raise MissingDependencyError(
            f"the {name} backend needs {library}: pip install 'lrp-toolkit[{extra}]'") from None


def get(name: str, device: object = None, dtype: object = None) -> Backend:
    """The backend ``name`` ("numpy", "torch", "cupy") for arrays on ``device`` of ``dtype``.

    ``device`` and ``dtype`` are the library's own (``"cuda"``, ``torch.float32``); by default
    the library's default device and float64.
    """
    return load(name).backend(device, dtype)


def backend_of(x: object) -> Backend:
    """The backend of the array ``x``: torch for a torch tensor, CuPy for a CuPy array, NumPy
    for a NumPy array and for anything that is not an array (lists, scalars).

    Raises
    ------
    UnsupportedLayerError
        For an array of another array-API library (no backend computes its linear maps).
    """
    if array_api_compat.is_torch_array(x):
        return load("torch").backend(x.device, x.dtype)
    if array_api_compat.is_cupy_array(x):
        return load("cupy").backend(x.device, x.dtype)
    if array_api_compat.is_numpy_array(x) or not array_api_compat.is_array_api_obj(x):
        return load("numpy").backend(None, None)
    raise UnsupportedLayerError(f"no array backend for {type(x).__module__}.{type(x).__name__} "
                                f"arrays; use NumPy, PyTorch or CuPy arrays")


#: layer -> {backend key: operator}; weak, so that a layer's device copies die with it
_OPERATORS: "weakref.WeakKeyDictionary[object, dict[tuple, object]]" = weakref.WeakKeyDictionary()


def operator_of(layer: object, key: tuple, build: Callable[[object], object]) -> object:
    """The cached operator of ``layer`` for the backend ``key``, built once by ``build(layer)``.

    Layers are immutable (their weights are read-only arrays), so the device copy of a layer's
    weights is made on the first call and reused by every later one.
    """
    per_layer = _OPERATORS.setdefault(layer, {})
    if key not in per_layer:
        per_layer[key] = build(layer)
    return per_layer[key]


__all__ = ["BACKENDS", "Backend", "backend_of", "get", "load", "operator_of"]
