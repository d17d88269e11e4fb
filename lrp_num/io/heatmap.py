"""Heatmaps: an input and its relevance side by side (matplotlib, an optional extra).

Relevance is summed over channels and shown with a diverging colormap centred at zero: positive
relevance red, negative blue, zero white, with symmetric limits so colour intensity compares
across the picture. The input is shown as it is for one channel (gray) and three channels
(RGB); for any other number of channels the picture shows the channel mean (gray).

The picture's format comes from the file name's extension, which must be one that matplotlib
writes (png, pdf, svg, jpg, ...; :func:`heatmap_format`).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from lrp_num.errors import HeatmapFormatError, MissingDependencyError, ShapeError


def as_image(array: np.ndarray) -> np.ndarray:
    """One sample as a 2-d (H, W) or (H, W, 3) picture: channels-first or a square vector.

    One channel is shown as gray, three as RGB; any other number of channels as their mean.
    """
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 1:
        side = math.isqrt(array.size)
        if side * side != array.size:
            raise ShapeError(f"cannot show a vector of {array.size} values as a square image")
        return array.reshape(side, side)
    if array.ndim == 3:
        if array.shape[0] == 3:
            return np.moveaxis(array, 0, -1)
        if array.shape[0] == 0:
            raise ShapeError(f"cannot show an array of shape {array.shape} (no channels) as an image")
        return array[0] if array.shape[0] == 1 else array.mean(axis=0)
    if array.ndim == 2:
        return array
    raise ShapeError(f"cannot show an array of shape {array.shape} as an image")


def require_matplotlib():
    """Import matplotlib's pyplot (Agg backend) or raise MissingDependencyError in one line."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            "heatmaps need matplotlib: pip install 'lrp-toolkit[heatmap]'") from None
    return plt


def supported_formats() -> dict[str, str]:
    """File extensions matplotlib can write (without the dot) and what they are."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return dict(FigureCanvasAgg.get_supported_filetypes())


def heatmap_format(path: str | os.PathLike) -> str:
    """The format to write ``path`` in, from its extension; writes nothing.

    Raises MissingDependencyError without matplotlib and HeatmapFormatError for a missing or
    unsupported extension.
    """
    formats = supported_formats()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in formats:
        return suffix
    known = ", ".join(sorted(formats))
    if not suffix:
        raise HeatmapFormatError(f"heatmap file {str(path)!r} has no extension; name it with one "
                                 f"of: {known}")
    raise HeatmapFormatError(f"heatmap file {str(path)!r}: matplotlib cannot write .{suffix} files; "
                             f"use one of: {known}")


def render_heatmap(x: np.ndarray, relevance: np.ndarray, format: str = "png",
                   title: str = "") -> bytes:
    """One sample's input and relevance side by side, as the bytes of a ``format`` picture."""
    plt = require_matplotlib()
    if format.lower() not in supported_formats():
        raise HeatmapFormatError(f"matplotlib cannot write {format!r} pictures")
    picture = as_image(x)
    heat = np.asarray(relevance, dtype=np.float64)
    heat = heat.sum(axis=0) if heat.ndim == 3 else heat
    heat = as_image(heat)
    limit = float(np.abs(heat).max()) or 1.0
    figure, (left, right) = plt.subplots(1, 2, figsize=(7, 3.4))
    if picture.ndim == 3:
        span = picture.max() - picture.min()
        left.imshow((picture - picture.min()) / (span if span else 1.0))
    else:
        left.imshow(picture, cmap="gray")
    left.set_title("input")
    shown = right.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
    right.set_title("relevance (red +, blue -)")
    figure.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=format.lower(), dpi=120)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def save_heatmap(x: np.ndarray, relevance: np.ndarray, path: str | os.PathLike,
                 title: str = "") -> Path:
    """Write one sample's input and relevance side by side to ``path`` (PNG, PDF, SVG ...).

    The format comes from the extension (:func:`heatmap_format`). The picture is rendered in
    memory and written through a temporary file and a rename: no half-written picture.
    """
    from lrp_num.io.files import check_output_path, write_bytes_atomic

    format = heatmap_format(path)
    check_output_path(path, "the heatmap")
    return write_bytes_atomic(path, render_heatmap(x, relevance, format, title))
