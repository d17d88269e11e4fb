"""Heatmaps: an input and its relevance side by side (matplotlib, an optional extra).

Relevance is summed over channels and shown with a diverging colormap centred at zero: positive
relevance red, negative blue, zero white, with symmetric limits so colour intensity compares
across the picture.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from lrp_num.errors import MissingDependencyError, ShapeError


def as_image(array: np.ndarray) -> np.ndarray:
    """One sample as a 2-d (H, W) or (H, W, 3) picture: channels-first or a square vector."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 1:
        side = math.isqrt(array.size)
        if side * side != array.size:
            raise ShapeError(f"cannot show a vector of {array.size} values as a square image")
        return array.reshape(side, side)
    if array.ndim == 3:
        return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
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


def save_heatmap(x: np.ndarray, relevance: np.ndarray, path: str | os.PathLike,
                 title: str = "") -> Path:
    """Write one sample's input and relevance side by side to ``path`` (PNG, PDF, SVG ...)."""
    plt = require_matplotlib()
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
    path = Path(path)
    # write to a temporary file in the same folder, then rename: no half-written picture
    handle, temporary = tempfile.mkstemp(dir=path.parent or ".", suffix=path.suffix)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path
