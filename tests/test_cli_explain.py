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
    assert "test image 1: predicted 1 (label 1)" in text and "conservation error" in text
    assert "test image 2: predicted" in text
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


def _one_line_exit_2(arguments, capsys, message):
    assert main(["explain", *arguments]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    return err[0]


@pytest.mark.parametrize("name, message", [
    ("heat", "has no extension"),
    ("h.xyz", "cannot write .xyz"),
])
def test_heatmap_without_a_supported_extension_writes_nothing(tmp_path, capsys, name, message):
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.npy"
    _one_line_exit_2(["--rule", "zplus", "--heatmap", str(tmp_path / name), "--out", str(out)],
                     capsys, message)
    assert list(tmp_path.iterdir()) == []  # neither --out, nor an empty picture, nor a tmp file


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_heatmap_format_follows_the_extension(tmp_path, capsys, suffix, magic):
    pytest.importorskip("matplotlib")
    picture = tmp_path / f"h{suffix}"
    assert main(["explain", "--rule", "zplus", "--heatmap", str(picture)]) == 0
    assert picture.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [picture.name]


def test_written_files_get_the_umask_mode_not_0600(tmp_path, capsys):
    import os
    import stat

    out = tmp_path / "r.npy"
    old = os.umask(0o022)
    try:
        assert main(["explain", "--rule", "zplus", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


@pytest.mark.parametrize("kind", ["folder", "folder-slash", "parent-is-file", "no-parent"])
def test_out_that_cannot_be_a_file_is_one_line(tmp_path, capsys, kind):
    (tmp_path / "file").write_bytes(b"")
    out = {"folder": str(tmp_path), "folder-slash": str(tmp_path) + "/",
           "parent-is-file": str(tmp_path / "file" / "r.npy"),
           "no-parent": str(tmp_path / "missing" / "r.npy")}[kind]
    message = {"folder": "is a folder", "folder-slash": "is a folder",
               "parent-is-file": "is not a folder", "no-parent": "folder does not exist"}[kind]
    _one_line_exit_2(["--rule", "zplus", "--out", out], capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 1, 8, 8)), "empty batch"),
    (np.float64(3.0), "0-d array"),
    (np.zeros((2, 64)), "takes samples of shape (1, 8, 8)"),
    (np.zeros((8, 8)), "takes samples of shape (1, 8, 8)"),
])
def test_input_that_does_not_fit_the_model_is_a_shape_error(tmp_path, capsys, array, message):
    x = tmp_path / "x.npy"
    np.save(x, array)
    out = tmp_path / "r.npy"
    _one_line_exit_2(["--input", str(x), "--rule", "zplus", "--out", str(out)], capsys, message)
    assert not out.exists()


def test_load_inputs_raises_shape_error():
    from lrp_num.commands.common import as_batch
    from lrp_num.errors import ShapeError

    with pytest.raises(ShapeError):
        as_batch(np.zeros((0, 4)), (4,), "x")
    assert as_batch(np.zeros(4), (4,), "x").shape == (1, 4)


@pytest.mark.parametrize("arguments, message", [
    (["--model", "{tmp}"], "is a folder"),
    (["--model", "{tmp}/x.npy"], "single .npy array"),
])
def test_model_path_mistakes_are_one_clear_line(tmp_path, capsys, arguments, message):
    np.save(tmp_path / "x.npy", np.ones(3))
    line = _one_line_exit_2([a.format(tmp=tmp_path) for a in arguments], capsys, message)
    assert "not a readable" not in line and "does not exist" not in line  # one message, not two


def test_target_is_the_explained_output_even_when_f_is_zero(tmp_path, capsys):
    from lrp_num.layers import Dense
    from lrp_num.io.model_io import save_npz
    from lrp_num.engine.network import Sequential

    # output 1 is identically 0; output 0 is the prediction
    network = Sequential([Dense(np.array([[1.0, 0.0], [1.0, 0.0]]), np.zeros(2))], input_shape=(2,))
    model = tmp_path / "m.npz"
    save_npz(network, model)
    x = tmp_path / "x.npy"
    np.save(x, np.array([1.0, 2.0]))
    assert main(["explain", "--model", str(model), "--input", str(x), "--rule", "lrp0",
                 "--target", "1"]) == 0
    assert "explained output 1 f = 0" in capsys.readouterr().out


def test_heatmap_title_names_the_target(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    import lrp_num.io.heatmap as heatmap

    titles = []
    render = heatmap.render_heatmap
    monkeypatch.setattr(heatmap, "render_heatmap",
                        lambda *a, **k: titles.append(k.get("title")) or render(*a, **k))
    assert main(["explain", "--rule", "zplus", "--target", "4", "--heatmap",
                 str(tmp_path / "h.png")]) == 0
    assert titles == ["zplus: output 4"]


def test_bias_captum_is_accepted(capsys):
    assert main(["explain", "--rule", "epsilon", "--bias", "captum"]) == 0


def test_sample_lines_name_the_stored_test_image(capsys):
    assert main(["explain", "--model", "digits-mlp", "--rule", "zplus",
                 "--sample", "3", "--sample", "5"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert lines[1].startswith("test image 3: predicted") and lines[2].startswith("test image 5: ")
    assert not any(line.startswith("sample ") for line in lines)


def test_input_lines_name_the_row_of_the_file(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, load_builtin("digits-mlp").test_images[4:7])
    assert main(["explain", "--model", "digits-mlp", "--rule", "zplus", "--input", str(x)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert [line.split(":")[0] for line in lines[1:4]] == ["row 0 of x.npy", "row 1 of x.npy",
                                                         "row 2 of x.npy"]


def test_rule_parameters_change_the_relevance_and_are_printed(tmp_path, capsys):
    default, large = tmp_path / "default.npy", tmp_path / "large.npy"
    assert main(["explain", "--rule", "epsilon", "--out", str(default)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "rule epsilon (epsilon=0.25); stabiliser eps=1e-06 at zero denominators" in header
    assert main(["explain", "--rule", "epsilon", "--epsilon", "10", "--out", str(large)]) == 0
    assert "rule epsilon (epsilon=10);" in capsys.readouterr().out
    # a larger epsilon absorbs more relevance: the parameter reaches the kernel
    assert abs(np.load(large).sum()) < abs(np.load(default).sum())


def test_alpha_beta_parameters_are_printed_with_the_stabiliser(capsys):
    assert main(["explain", "--rule", "alphabeta", "--alpha", "1", "--beta", "0",
                 "--stabiliser-eps", "1e-9", "--stabilise", "everywhere"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "rule alphabeta (alpha=1, beta=0); stabiliser eps=1e-09 everywhere" in header


def test_stabiliser_eps_reaches_the_conventions(monkeypatch, capsys):
    from lrp_num.engine import explain as explain_module  # the module, not the function
    seen = []
    original = explain_module.explain_details
    monkeypatch.setattr(explain_module, "explain_details",
                        lambda *a, **k: seen.append(k["conventions"]) or original(*a, **k))
    assert main(["explain", "--rule", "zplus", "--stabiliser-eps", "0.5"]) == 0
    assert [c.eps for c in seen] == [0.5]


@pytest.mark.parametrize("arguments, message", [
    (["--rule", "epsilon", "--eps", "10"], "--eps was renamed: use --stabiliser-eps"),
    (["--composite", "deep-taylor", "--gamma", "1"], "--gamma goes with --rule"),
    (["--epsilon", "1", "--alpha", "2"], "--epsilon, --alpha go with --rule"),
    (["--rule", "zplus", "--gamma", "1"], "rule zplus takes no parameter(s) gamma"),
    (["--rule", "gamma", "--gamma", "-1"], "must be >= 0"),
])
def test_rule_parameter_mistakes_are_one_line(capsys, arguments, message):
    _one_line_exit_2(arguments, capsys, message)
