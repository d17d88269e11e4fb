"""What a library run gives the audit: relevance at the input of every layer.

Layer indices are those of the folded :class:`~lrp_num.engine.network.Sequential` (BatchNorm folded
into the linear layer before it), so index k names ``network.layers[k]`` and
``layers[k]`` holds the relevance at its input; ``layers[len(network.layers)]`` is the output
relevance. A torch model keeps BatchNorm as its own module: :func:`module_groups` maps folded
layers to torch module indices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lrp_num.layers import BatchNorm


@dataclass
class LibraryRun:
    """Relevances recorded from one library run.

    Attributes
    ----------
    library : str
        Name and version, e.g. ``"zennit 0.5.1"``.
    relevance : ndarray
        Input relevance, the shape of x.
    layers : dict of int -> ndarray
        Relevance at the input of folded layer k, shape (batch, ...); k = 0 is the input.
        Boundaries a library does not expose are absent.
    output : ndarray
        The torch model's output f(x).
    nodes : dict of str to ndarray
        Graphs: source node name (or the input's) -> relevance arriving at that node's output,
        summed over the nodes that read it (a folded BatchNorm's output is its linear node's).
    addends : dict of str to list of ndarray
        Graphs: Add node name -> the relevance the library gives each addend.
    """

    library: str
    relevance: np.ndarray
    layers: dict[int, np.ndarray] = field(default_factory=dict)
    output: np.ndarray | None = None
    nodes: dict[str, np.ndarray] = field(default_factory=dict)
    addends: dict[str, list[np.ndarray]] = field(default_factory=dict)


def module_groups(source_layers: list) -> list[list[int]]:
    """Torch module indices of each folded layer: a BatchNorm joins the layer before it."""
    groups: list[list[int]] = []
    for index, layer in enumerate(source_layers):
        if isinstance(layer, BatchNorm) and groups:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups
