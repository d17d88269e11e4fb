"""A picture of an audit (``lrp audit ... --plot FILE.png``; matplotlib, the ``heatmap`` extra).

Top row: per layer (graphs: per node), the relative deviation from the library's own profile
and from DTD as bars on a log scale, with the tolerance as a line; next to it (chains) the
relevance each layer absorbs, (sum R_out - sum R_in) / f_c, for the library, its profile and
DTD. Bottom row (when the report carries the input relevance): one sample's input relevance
from the library, from the reference under the closest profile, and their difference, summed
over channels, each on a diverging colour scale centred at zero (red +, blue -).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from lrp_num.io.heatmap import as_image, heatmap_format, require_matplotlib

_FLOOR = 1e-18  # a deviation of exactly 0 drawn at this height on the log scale


def _heat(array: np.ndarray) -> np.ndarray:
    """One sample's relevance as a picture: summed over channels; a vector that is not a square
    image as one row."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim == 1 and math.isqrt(array.size) ** 2 != array.size:
        return array[None]
    return as_image(array.sum(axis=0) if array.ndim == 3 else array)


def _bars(axis, labels: list[str], series: dict[str, list[float]], title: str, log: bool) -> None:
    positions = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for n, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=np.float64)
        if log:
            values = np.maximum(np.nan_to_num(values, nan=0.0), _FLOOR)
        axis.bar(positions + (n - (len(series) - 1) / 2) * width, values, width, label=name)
    axis.set_xticks(positions, labels, rotation=60, ha="right", fontsize=7)
    if log:
        axis.set_yscale("log")
    else:
        axis.axhline(0.0, color="black", linewidth=0.6)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)


def render_audit_plot(report, format: str = "png", sample: int = 0, tolerance: float | None = None) -> bytes:
    """The picture of ``report`` (an :class:`~lrp_num.audit.compare.AuditReport`) as ``format`` bytes."""
    plt = require_matplotlib()
    rows = report.nodes or report.layers
    if report.nodes:
        labels = [a.node for a in rows]
    else:
        labels = [f"{a.index} {a.layer.split('(')[0]}" for a in rows]
    heatmaps = report.inputs.get("library") is not None
    figure = plt.figure(figsize=(12, 7.5 if heatmaps else 4))
    grid = figure.add_gridspec(2 if heatmaps else 1, 6)
    deviation = figure.add_subplot(grid[0, :3] if report.layers else grid[0, :])
    _bars(deviation, labels, {"vs its own profile": [a.own_relative for a in rows],
                              "vs DTD": [a.dtd_relative for a in rows]},
          f"relative deviation per {'node' if report.nodes else 'layer'} (log scale)", log=True)
    if tolerance is not None and tolerance > 0:
        deviation.axhline(tolerance, color="gray", linestyle="--", linewidth=0.8)
    if report.layers:
        absorbed = figure.add_subplot(grid[0, 3:])
        _bars(absorbed, labels, {"library": [a.absorbed_library for a in rows],
                                 "its profile": [a.absorbed_profile for a in rows],
                                 "DTD": [a.absorbed_dtd for a in rows]},
              "relevance absorbed per layer, (sum R_out - sum R_in) / f_c", log=False)
    if heatmaps:
        library = _heat(report.inputs["library"][sample])
        reference = _heat(report.inputs["reference"][sample])
        panels = ((f"{report.library}", library),
                  (f"reference ({report.inputs.get('reference_name', 'profile')})", reference),
                  ("library - reference", library - reference))
        for n, (title, heat) in enumerate(panels):
            axis = figure.add_subplot(grid[1, 2 * n:2 * n + 2])
            limit = float(np.abs(heat).max()) or 1.0
            shown = axis.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
            axis.set_title(title, fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
            figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    figure.suptitle(f"audit of {report.library} against {report.profile} and DTD: {report.method}, "
                    f"sample {sample}", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=format, dpi=110)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def check_plot_path(path: str | os.PathLike) -> str:
    """The picture format of ``path``, checked before the audit runs; writes nothing.

    Raises MissingDependencyError (naming the ``heatmap`` extra) without matplotlib,
    HeatmapFormatError for an extension matplotlib cannot write, OutputPathError for a path
    that cannot be written.
    """
    from lrp_num.io.files import check_output_path

    format = heatmap_format(path)
    check_output_path(path, "the audit plot")
    return format


def save_audit_plot(report, path: str | os.PathLike, sample: int = 0, tolerance: float | None = None) -> Path:
    """Write the picture of ``report`` to ``path`` atomically (no half-written file)."""
    from lrp_num.io.files import write_bytes_atomic

    format = check_plot_path(path)
    return write_bytes_atomic(path, render_audit_plot(report, format, sample, tolerance))


__all__ = ["check_plot_path", "render_audit_plot", "save_audit_plot"]
