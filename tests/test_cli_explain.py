"""The ``lrp explain`` command: output, files, and one-line errors with nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_num import load_builtin
from lrp_num.cli import main


def test_explain_prints_prediction_conservation_and_writes_relevance(tmp_path, capsys):
    out = tmp_path / "r.npy"
    assert main(["explain", "--model", "digits-mlp", "--sample", "1", "--sample", "2",
                 "--composite", "deep-taylor", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sample 0: predicted 1 (label 1)" in text and "conservation error" in text
    assert "root points in the domain" in text
    relevance = np.load(out, allow_pickle=False)
    model = load_builtin("digits-mlp")
    assert relevance.shape == (2, *model.network.input_shape)


def test_explain_heatmap(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    picture = tmp_path / "h.png"
    assert main(["explain", "--sample", "0", "--rule", "zplus", "--heatmap", str(picture)]) == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_input_file_and_target(tmp_path, capsys):
    model = load_builtin("digits-cnn")
    x = tmp_path / "x.npy"
    np.save(x, model.test_images[0])  # one sample without a batch axis
    assert main(["explain", "--input", str(x), "--rule", "epsilon", "--target", "4"]) == 0
    assert "explained output 4" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--model", "missing.npz"], "no model file"),
    (["--sample", "99"], "out of range"),
    (["--rule", "nope"], "no generated kernel for rule 'nope'"),
    (["--target", "10"], "target index out of range"),
    (["--composite", "nope"], "unknown composite"),
])
def test_explain_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, arguments, message):
    out = tmp_path / "r.npy"
    assert main(["explain", *arguments, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_corrupt_model_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip archive")
    assert main(["explain", "--model", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
