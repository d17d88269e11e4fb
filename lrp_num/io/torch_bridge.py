"""Between lrp-toolkit networks and PyTorch ``nn.Sequential`` models (torch imported lazily).

* :func:`to_torch` builds the PyTorch twin of a :class:`~lrp_num.engine.network.Sequential` from its
  *source* layers: BatchNorm stays an ``nn.BatchNorm1d/2d`` in eval mode, so a library that
  merges batch norms itself (zennit's canonizer) is exercised rather than handed folded weights.
* :func:`from_torch` converts a torch module back: an ``nn.Sequential`` of supported modules
  layer by layer, anything else (graphs: residual blocks, concatenation) through torch.fx.
  Both are public as ``lrp_num.io.to_torch`` / ``lrp_num.io.from_torch`` and in
  :mod:`lrp_num.testing`.
* :func:`load_torch_model` reads a model saved as a state dict (``torch.save(model.state_dict())``,
  read with ``torch.load(weights_only=True)``, so nothing in the file is executed) plus a JSON
  architecture that lists the modules by type (see :data:`ARCHITECTURE_HELP`).

Layouts: Dense keeps w_ij as (n_in, n_out), torch's Linear (n_out, n_in): transposed both ways.
Conv2d kernels share the (C_out, C_in, kh, kw) layout. Sum pooling is ``nn.AvgPool2d`` with
``divisor_override=1``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lrp_num.errors import MissingDependencyError, ModelFileError, UnsupportedLayerError
from lrp_num.layers import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, Identity, MaxPool2d, ReLU, SumPool2d
from lrp_num.engine.network import Sequential

INSTALL_HINT = ("pip install 'lrp-toolkit[audit]' && pip install --no-deps zennit==0.5.1 "
                "(torch, captum, zennit)")

ARCHITECTURE_HELP = """\
A JSON file {"input_shape": [C, H, W] or [F], "modules": [...]}: one entry per module of the
nn.Sequential, in order, each {"type": T, ...constructor arguments}. Types: Linear
(in_features, out_features), Conv2d (in_channels, out_channels, kernel_size, stride, padding),
BatchNorm1d / BatchNorm2d (num_features, eps), MaxPool2d / AvgPool2d (kernel_size, stride;
AvgPool2d also divisor_override=1 for sum pooling), ReLU, Flatten, Identity."""


def require_torch():
    """Import and return torch, or raise MissingDependencyError with the install line."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"this needs PyTorch: {INSTALL_HINT}") from None
    return torch


def _layer_to_module(layer: Any, dtype):
    torch = require_torch()
    nn = torch.nn

    def tensor(array: np.ndarray):
        return torch.tensor(np.asarray(array), dtype=dtype)

    if isinstance(layer, Dense):
        module = nn.Linear(layer.n_in, layer.n_out, dtype=dtype)
        module.weight.data = tensor(layer.weight.T.copy())  # w_ij (in, out) -> torch (out, in)
        module.bias.data = tensor(layer.bias)
        return module
    if isinstance(layer, Conv2d):
        module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                           stride=layer.stride, padding=layer.padding, groups=layer.groups,
                           dtype=dtype)
        module.weight.data = tensor(layer.weight)
        module.bias.data = tensor(layer.bias)
        return module
    if isinstance(layer, BatchNorm):
        return None  # built by to_torch, which knows the rank of the preceding layer
    if isinstance(layer, MaxPool2d):
        return nn.MaxPool2d(layer.kernel, stride=layer.stride, padding=layer.padding,
                            ceil_mode=layer.ceil_mode)
    if isinstance(layer, AvgPool2d):  # AvgPool2d subclasses SumPool2d: test it first
        return nn.AvgPool2d(layer.kernel, stride=layer.stride, padding=layer.padding,
                            ceil_mode=layer.ceil_mode, count_include_pad=layer.count_include_pad)
    if isinstance(layer, SumPool2d):
        return nn.AvgPool2d(layer.kernel, stride=layer.stride, padding=layer.padding,
                            ceil_mode=layer.ceil_mode, divisor_override=1)
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Identity):
        return nn.Identity()
    raise UnsupportedLayerError(f"no PyTorch module for {layer!r}")


def _batch_norm_module(layer: BatchNorm, two_d: bool, dtype):
    torch = require_torch()
    cls = torch.nn.BatchNorm2d if two_d else torch.nn.BatchNorm1d
    module = cls(layer.n_features, eps=layer.eps, dtype=dtype)
    for name, value in (("weight", layer.gamma), ("bias", layer.beta)):
        getattr(module, name).data = torch.tensor(value, dtype=dtype)
    module.running_mean.data = torch.tensor(layer.mean, dtype=dtype)
    module.running_var.data = torch.tensor(layer.var, dtype=dtype)
    return module


def to_torch(network: Sequential | Sequence | Any, dtype=None, addition: str = "functional"):
    """Return the torch module (eval mode) computing the same function as ``network``.

    Parameters
    ----------
    network : Sequential, Graph or sequence of layers
        For a Sequential its ``source_layers`` are converted (BatchNorm kept, not folded) into an
        ``nn.Sequential``. A :class:`~lrp_num.engine.graph.Graph` becomes a
        :class:`lrp_num.io.torch_twin.GraphTwin` whose forward follows the graph, with modules named
        after the nodes (see :mod:`lrp_num.io.torch_twin`).
    dtype : torch.dtype, optional
        torch.float64 by default (an audit compares at float precision).
    addition : {"functional", "zennit", "captum"}
        Graphs only: how Add nodes are written: a plain ``+``, a ``zennit.layer.Sum`` over the
        addends stacked on a new last axis (as zennit's ResNet canonizer does), or captum's
        ``Addition_Module``.
    """
    torch = require_torch()
    if hasattr(network, "source_nodes"):
        from lrp_num.io.torch_twin import graph_to_torch

        return graph_to_torch(network, dtype, addition)
    dtype = torch.float64 if dtype is None else dtype
    layers = network.source_layers if isinstance(network, Sequential) else list(network)
    modules = []
    for index, layer in enumerate(layers):
        if isinstance(layer, BatchNorm):
            modules.append(_batch_norm_module(layer, index > 0 and isinstance(layers[index - 1], Conv2d),
                                              dtype))
        else:
            modules.append(_layer_to_module(layer, dtype))
    return torch.nn.Sequential(*modules).eval()


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy()


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(int(v) for v in value)


def module_to_layer(module: Any):
    """Our layer for one torch module (the inverse of :func:`to_torch`'s per-layer map)."""
    torch = require_torch()
    nn = torch.nn
    if isinstance(module, nn.Linear):
        bias = None if module.bias is None else _numpy(module.bias)
        return Dense.from_torch_layout(_numpy(module.weight), bias)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or _pair(module.dilation) != (1, 1) or module.padding_mode != "zeros":
            raise UnsupportedLayerError(f"{module}: only groups=1, dilation=1, zero padding are supported")
        bias = None if module.bias is None else _numpy(module.bias)
        return Conv2d(_numpy(module.weight), bias, stride=_pair(module.stride), padding=_pair(module.padding))
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if module.running_mean is None or not module.affine:
            raise UnsupportedLayerError(f"{module}: needs running statistics and affine parameters")
        return BatchNorm(_numpy(module.weight), _numpy(module.bias), _numpy(module.running_mean),
                         _numpy(module.running_var), eps=module.eps)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        if _pair(module.padding) != (0, 0) or getattr(module, "ceil_mode", False):
            raise UnsupportedLayerError(f"{module}: pooling with padding or ceil_mode is not supported")
        kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        if isinstance(module, nn.MaxPool2d):
            if _pair(module.dilation) != (1, 1):
                raise UnsupportedLayerError(f"{module}: dilated max pooling is not supported")
            return MaxPool2d(kernel, stride)
        if module.divisor_override == 1:
            return SumPool2d(kernel, stride)
        if module.divisor_override is not None:
            raise UnsupportedLayerError(f"{module}: divisor_override must be None or 1")
        return AvgPool2d(kernel, stride)
    if isinstance(module, nn.ReLU):
        return ReLU()
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise UnsupportedLayerError(f"{module}: only Flatten(start_dim=1, end_dim=-1)")
        return Flatten()
    if isinstance(module, nn.Identity):
        return Identity()
    raise UnsupportedLayerError(f"torch module {type(module).__name__} is not supported; "
                                "supported: Linear, Conv2d, BatchNorm1d/2d, MaxPool2d, AvgPool2d, "
                                "ReLU, Flatten, Identity")


def from_torch(model: Any, input_shape: tuple[int, ...] | None = None):
    """Our network computing what the torch module ``model`` computes (in eval mode).

    Parameters
    ----------
    model : torch.nn.Module
        An ``nn.Sequential`` of the modules :func:`module_to_layer` converts becomes a
        :class:`Sequential` (layer by layer, BatchNorm kept unfolded); any other module
        (residual blocks, ``+``, ``torch.cat``, nested containers, a :func:`to_torch` twin of a
        graph) is traced with torch.fx into a :class:`~lrp_num.engine.graph.Graph` whose nodes
        are named after its modules (:func:`lrp_num.io.torch_import.from_torch_module`).
    input_shape : tuple of int, optional
        One sample's shape, e.g. (C, H, W); required for anything but an ``nn.Sequential``.

    Raises
    ------
    UnsupportedLayerError
        For a module or operation without a counterpart (one line naming it).
    ShapeError
        For a module that is no nn.Sequential and no ``input_shape``.
    """
    torch = require_torch()
    if isinstance(model, torch.nn.Sequential):
        try:
            return Sequential([module_to_layer(m) for m in model], input_shape=input_shape)
        except UnsupportedLayerError:
            if input_shape is None:
                raise
    if input_shape is None:
        from lrp_num.errors import ShapeError

        raise ShapeError(f"from_torch({type(model).__name__}) traces the module: pass input_shape=(C, H, W) or (F,)")
    from lrp_num.io.torch_import import from_torch_module

    return from_torch_module(model, tuple(input_shape))


_MODULE_TYPES = ("Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "MaxPool2d", "AvgPool2d",
                 "ReLU", "Flatten", "Identity")


def build_from_architecture(architecture: dict):
    """An untrained ``nn.Sequential`` (float64) from a JSON architecture (:data:`ARCHITECTURE_HELP`)."""
    torch = require_torch()
    modules = []
    for index, entry in enumerate(architecture.get("modules", [])):
        entry = dict(entry)
        kind = entry.pop("type", None)
        if kind not in _MODULE_TYPES:
            raise ModelFileError(f"architecture module {index}: type {kind!r} is not one of {', '.join(_MODULE_TYPES)}")
        try:
            modules.append(getattr(torch.nn, kind)(**entry))
        except TypeError as error:
            raise ModelFileError(f"architecture module {index} ({kind}): {error}") from None
    if not modules:
        raise ModelFileError("architecture lists no modules")
    return torch.nn.Sequential(*modules).double().eval()


def load_torch_model(weights: str | Path, architecture: str | Path | dict):
    """Load (torch model, our Sequential) from a state dict and a JSON architecture.

    The state dict is read with ``torch.load(weights_only=True)``: tensors only, no pickled code.
    """
    torch = require_torch()
    if not isinstance(architecture, dict):
        try:
            architecture = json.loads(Path(architecture).read_text())
        except (OSError, ValueError) as error:
            raise ModelFileError(f"cannot read architecture {architecture}: {error}") from None
    model = build_from_architecture(architecture)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or corrupt files
        raise ModelFileError(f"cannot read state dict {weights}: {error}") from None
    if not isinstance(state, dict):
        raise ModelFileError(f"{weights} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as error:
        raise ModelFileError(f"state dict {weights} does not fit the architecture: {error}") from None
    shape = architecture.get("input_shape")
    return model, from_torch(model, tuple(shape) if shape else None)
