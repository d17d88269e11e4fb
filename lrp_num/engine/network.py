"""A feed-forward chain of layers, x^(l+1) = layer_l(x^(l)), with batch norms folded away.

:class:`Sequential` is what the LRP backward pass walks: ``layers`` are the folded layers and
``forward_trace(x)`` returns every layer's input activation a^(l) together with the output.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np

from lrp_num.checks import as_float_array, require_finite
from lrp_num.errors import ShapeError, UnsupportedLayerError
from lrp_num.layers import LAYER_TYPES, BatchNorm, Conv2d, Dense, Flatten, Identity, Layer, ReLU


def fold_batch_norms(layers: Iterable[Layer]) -> list[Layer]:
    """Return the layers with every BatchNorm folded into the Dense or Conv2d right before it."""
    folded: list[Layer] = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, BatchNorm):
            folded.append(layer)
            continue
        if not folded or not isinstance(folded[-1], (Dense, Conv2d)):
            before = repr(folded[-1]) if folded else "the network input"
            raise UnsupportedLayerError(
                f"layer {index} {layer!r} follows {before}; a BatchNorm must directly follow a "
                "Dense or Conv2d layer, into which it is folded"
            )
        folded[-1] = layer.fold_into(folded[-1])
    return folded


class Sequential:
    """A chain of layers applied in order, with BatchNorm folded into the preceding linear layer.

    Parameters
    ----------
    layers : iterable of layers
        Layers from :mod:`lrp_num.layers`, input side first.
    input_shape : tuple of int, optional
        Per-sample input shape, e.g. (784,) or (3, 32, 32). When given, it is checked against
        every layer at construction and against every input batch.

    Attributes
    ----------
    layers : list
        The folded layers (no BatchNorm), what relevance propagation walks backwards.
    source_layers : list
        The layers as given (what a model file stores).
    """

    def __init__(self, layers: Iterable[Layer], input_shape: tuple[int, ...] | None = None) -> None:
        self.source_layers = list(layers)
        for index, layer in enumerate(self.source_layers):
            if type(layer) not in LAYER_TYPES.values():
                raise UnsupportedLayerError(
                    f"layer {index} is a {type(layer).__name__}; supported: {', '.join(LAYER_TYPES)}"
                )
        if not self.source_layers:
            raise ShapeError("Sequential needs at least one layer")
        self.layers = fold_batch_norms(self.source_layers)
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.shapes = self._infer_shapes() if self.input_shape is not None else None

    def _infer_shapes(self) -> list[tuple[int, ...]]:
        shapes = [self.input_shape]
        for index, layer in enumerate(self.layers):
            try:
                shapes.append(tuple(layer.output_shape(shapes[-1])))
            except ShapeError as error:
                raise ShapeError(f"layer {index}: {error}") from None
        return shapes

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """Per-sample output shape, known when ``input_shape`` is."""
        return None if self.shapes is None else self.shapes[-1]

    @property
    def n_outputs(self) -> int:
        """Number of outputs per sample (classes), e.g. 10."""
        if self.shapes is not None:
            return math.prod(self.shapes[-1])
        for layer in reversed(self.layers):
            if isinstance(layer, Dense):
                return layer.n_out
            if not isinstance(layer, (ReLU, Identity, Flatten)):
                break
        raise ShapeError("n_outputs needs input_shape for a network that does not end in a Dense layer")

    @property
    def n_parameters(self) -> int:
        return sum(layer.n_parameters for layer in self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __repr__(self) -> str:
        shape = "unknown" if self.input_shape is None else self.input_shape
        folded = len(self.source_layers) - len(self.layers)
        note = f", {folded} BatchNorm folded" if folded else ""
        lines = [f"Sequential(input_shape={shape}, {len(self.layers)} layers, {self.n_parameters} parameters{note})"]
        for index, layer in enumerate(self.layers):
            out = "" if self.shapes is None else f"  -> {self.shapes[index + 1]}"
            lines.append(f"  ({index}) {layer!r}{out}")
        return "\n".join(lines)

    def _checked_input(self, x: object) -> np.ndarray:
        x = as_float_array(x, "network input")
        if self.input_shape is not None and x.shape[1:] != self.input_shape:
            raise ShapeError(
                f"network input must have shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}"
            )
        if x.ndim < 2:
            raise ShapeError(f"network input must be a batch (N, ...), got shape {x.shape}")
        return require_finite(x, "network input")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Return f(x) for a batch x; float32 in gives float32 out."""
        return self.forward_trace(x)[-1]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward_trace(self, x: np.ndarray) -> list[np.ndarray]:
        """Return [a^(0), ..., a^(L)]: a^(l) is the input of ``layers[l]``, a^(L) the output.

        These are the activations an LRP backward pass needs; len == len(layers) + 1.
        """
        activations = [self._checked_input(x)]
        # an overflow (float32 near 3e38) is reported once, below, as NonFiniteError; numpy's
        # RuntimeWarnings about it would only be noise before that line
        with np.errstate(over="ignore", invalid="ignore"):
            for index, layer in enumerate(self.layers):
                try:
                    # the input was checked for NaN and Inf once; layers check only shapes
                    activations.append(layer(activations[-1], check_finite=False))
                except ShapeError as error:
                    raise ShapeError(f"layer {index}: {error}") from None
        require_finite(activations[-1], "network output (overflow inside the network)")
        return activations
