"""Heatmaps: any channel count, the format from the extension, whole files with the usual mode."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from lrp_num.io.heatmap import HeatmapFormatError, as_image, save_heatmap  # noqa: E402
from lrp_num.errors import LRPError  # noqa: E402


@pytest.mark.parametrize("channels", [2, 4, 5])
def test_other_channel_counts_show_the_channel_mean(tmp_path, channels):
    x = np.arange(channels * 16, dtype=float).reshape(channels, 4, 4)
    np.testing.assert_allclose(as_image(x), x.mean(axis=0))
    path = save_heatmap(x, np.ones_like(x), tmp_path / "h.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_one_and_three_channels_unchanged():
    x = np.random.default_rng(0).random((3, 4, 4))
    assert as_image(x).shape == (4, 4, 3)
    assert as_image(x[:1]).shape == (4, 4)


@pytest.mark.parametrize("name", ["h", "h.xyz"])
def test_missing_or_unsupported_extension_is_an_lrp_error_and_writes_nothing(tmp_path, name):
    with pytest.raises(HeatmapFormatError) as caught:
        save_heatmap(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), tmp_path / name)
    assert isinstance(caught.value, LRPError)
    assert list(tmp_path.iterdir()) == []


def test_saved_heatmap_has_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_heatmap(np.zeros((1, 4, 4)), np.ones((1, 4, 4)), tmp_path / "h.pdf")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes().startswith(b"%PDF")
