"""The NumPy backend (the default): the layers are their own operators.

Every layer of :mod:`lrp_num.layers` is written in NumPy and implements the
:class:`~lrp_num.layers.operators.LinearOperator` protocol itself (convolutions by im2col and
BLAS), so this backend adds nothing: its operator of a layer is the layer, and a network's
forward trace is :meth:`lrp_num.engine.graph.Graph.forward_trace` with its checks.
"""

from __future__ import annotations

import functools

import numpy as np

from lrp_num.checks import explanation_input
from lrp_num.layers import Add


class NumpyBackend:
    """Arrays in host memory, computed by the layers' own NumPy code."""

    name = "numpy"
    key = ("numpy",)

    def operator(self, layer: object) -> object:
        """The layer itself."""
        return layer

    def addends(self, n_addends: int) -> object:
        """The linear operator of an Add node's ``n_addends`` addends stacked on axis 1."""
        return Add.operator(n_addends)

    def stack_addends(self, inputs: list[np.ndarray]) -> np.ndarray:
        return Add.stack(inputs)

    def checked_input(self, x: object) -> np.ndarray:
        """The batch to explain as float32/float64, finite, not empty (see checks)."""
        return explanation_input(x)

    def top_relevance(self, output: np.ndarray, target: object) -> np.ndarray:
        from lrp_num.engine.explain import top_relevance
        return top_relevance(output, target)

    def forward_trace(self, graph, x: np.ndarray) -> dict[str, np.ndarray]:
        return graph.forward_trace(x)

    def from_host(self, array: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
        array = np.asarray(array)
        return array if like is None else array.astype(like.dtype, copy=False)

    def to_host(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array)


@functools.lru_cache(maxsize=None)
def backend(device: object = None, dtype: object = None) -> NumpyBackend:
    """The NumPy backend (one; the layers cast their weights to the input's dtype themselves)."""
    return NumpyBackend()


__all__ = ["NumpyBackend", "backend"]
