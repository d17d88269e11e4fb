"""Per-layer relevance of a saved attribution (``lrp audit --attribution R.npy --layers DIR``).

A tool that can save the relevance it propagates at each layer lets the audit localise a
deviation to a layer, as it does for zennit and captum. ``DIR`` holds one ``.npy`` array per
layer boundary the tool records:

``layer_<k>.npy``
    The relevance at the *input* of folded layer k (1 <= k <= L), in the numbering that
    ``lrp explain`` and :attr:`lrp_num.engine.network.Sequential.layers` print: BatchNorm folded
    into the layer before it, ReLU and Flatten counted as layers. ``layer_<L>.npy`` is the output
    relevance. The input relevance (k = 0) is ``--attribution`` itself.

Each array holds the whole batch, shaped as that layer's input (batch, ...) or flattened to
(batch, n_k); a batch of one may drop its batch axis. Any subset of the boundaries may be
given. Every file is read without pickle; a NaN or Inf, a shape that does not fit, a ``.npy``
file of another name, or an index out of range is a one-line error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from lrp_num.errors import ModelFileError, ShapeError

LAYER_FILE = re.compile(r"^layer_(\d+)\.npy$")


def read_layer_relevance(folder: str | os.PathLike, network, x: np.ndarray) -> dict[int, np.ndarray]:
    """{k: relevance at the input of folded layer k, shape (batch, n_k)} from ``folder``.

    Raises
    ------
    ModelFileError
        A missing path, a file where a folder belongs, a folder without ``layer_<k>.npy``
        files, a ``.npy`` file of another name, an index out of 1..L, or an unreadable array.
    NonFiniteError
        A file holding NaN or Inf.
    ShapeError
        An array whose size is not that of the layer's input for the whole batch.
    """
    from lrp_num.commands.common import read_array

    path = Path(folder)
    if not path.exists():
        raise ModelFileError(f"--layers {str(folder)!r}: no such folder")
    if not path.is_dir():
        raise ModelFileError(f"--layers {str(folder)!r} is a file, not a folder of layer_<k>.npy files")
    activations = network.forward_trace(np.asarray(x, dtype=np.float64))
    n_layers, batch = len(network.layers), len(x)
    layers: dict[int, np.ndarray] = {}
    for file in sorted(path.iterdir()):
        if file.suffix.lower() != ".npy":
            continue
        match = LAYER_FILE.match(file.name)
        if match is None:
            raise ModelFileError(f"--layers: {file.name!r} is not named layer_<k>.npy (k the folded layer index)")
        k = int(match.group(1))
        if not 1 <= k <= n_layers:
            raise ModelFileError(f"--layers: {file.name!r}: k must be 1 to {n_layers} (the network has {n_layers} "
                                 "folded layers; the input relevance is --attribution)")
        array = np.asarray(read_array(str(file), "--layers"), dtype=np.float64)
        expected = activations[k].shape
        if array.size != int(np.prod(expected)):
            raise ShapeError(f"--layers: {file.name} has shape {array.shape}; the input of layer {k} "
                             f"({network.layers[k] if k < n_layers else 'the output'}) has shape {expected} "
                             "for this batch")
        layers[k] = array.reshape(batch, -1)
    if not layers:
        raise ModelFileError(f"--layers {str(folder)!r} holds no layer_<k>.npy file")
    return layers


__all__ = ["LAYER_FILE", "read_layer_relevance"]
