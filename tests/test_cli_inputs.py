"""Input files and path flags of the command line: every mistake is one line on stderr, exit 2.

Arrays are read by one function (:func:`lrp_num.commands.common.read_array`) for ``--input`` and
``--attribution``; outputs may never name an input; an empty path flag is an error, not a
default; an overflowing float32 input gives its one line without numpy warnings before it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lrp_num import explain, load_builtin
from lrp_num.cli import main
from lrp_num.errors import NonFiniteError


def _one_line_exit_2(command, capsys, message):
    assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    return err[0]


def _bad_file(tmp_path, kind):
    """A file that is not a usable .npy array, and the message it must give."""
    path = tmp_path / {"empty": "x.npy", "npz": "x.npz", "text": "x.npy", "nan": "x.npy",
                       "inf": "x.npy", "strings": "x.npy", "folder": "folder"}[kind]
    shape = (1, 64)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "npz":
        np.savez(path, x=np.zeros(shape))
    elif kind == "text":
        path.write_text("0.5 0.25\n")
    elif kind in ("nan", "inf"):
        x = np.zeros(shape)
        x[0, 3] = np.nan if kind == "nan" else -np.inf
        np.save(path, x)
    elif kind == "strings":
        np.save(path, np.array(["a", "b"]))
    else:
        path.mkdir()
    message = {"empty": "is an empty file (0 bytes)", "npz": "is an .npz archive (arrays: x)",
               "text": "is not a readable .npy array", "nan": "holds 1 NaN or Inf value(s)",
               "inf": "holds 1 NaN or Inf value(s)", "strings": "holds <U1 values, not numbers",
               "folder": "is a folder, not an .npy file"}[kind]
    return path, message


KINDS = ["empty", "npz", "text", "nan", "inf", "strings", "folder"]


@pytest.mark.parametrize("kind", KINDS)
def test_explain_input_that_is_not_a_usable_npy_is_one_line(tmp_path, capsys, kind):
    path, message = _bad_file(tmp_path, kind)
    out = tmp_path / "r.npy"
    line = _one_line_exit_2(["explain", "--model", "digits-mlp", "--rule", "zplus",
                             "--input", str(path), "--out", str(out)], capsys, message)
    assert line.startswith(f"lrp explain: error: --input {str(path)!r}")
    assert not out.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_audit_attribution_that_is_not_a_usable_npy_is_one_line(tmp_path, capsys, kind):
    path, message = _bad_file(tmp_path, kind)
    line = _one_line_exit_2(["audit", "--attribution", str(path), "--model", "digits-mlp",
                             "--rule", "zplus"], capsys, message)
    assert f"--attribution {str(path)!r}" in line
    assert "nan" not in capsys.readouterr().out  # no table of nan before the error


def test_audit_attribution_api_rejects_nan():
    from lrp_num.audit.compare import audit_attribution

    model = load_builtin("digits-mlp")
    attribution = np.zeros((1, 64))
    attribution[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="the attribution holds 1 NaN"):
        audit_attribution(model.network, model.test_images[:1], attribution, rule="zplus")


@pytest.mark.parametrize("flag", ["--out", "--heatmap"])
def test_an_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path, capsys, flag):
    x = tmp_path / "x.npy"
    np.save(x, load_builtin("digits-mlp").test_images[0])
    before = x.read_bytes()
    same = str(tmp_path / "sub" / ".." / "x.npy")  # another spelling of the same file
    (tmp_path / "sub").mkdir()
    line = _one_line_exit_2(["explain", "--model", "digits-mlp", "--rule", "zplus",
                             "--input", str(x), flag, same], capsys, "is the same file as the input --input")
    assert line.startswith(f"lrp explain: error: {flag} ")
    assert x.read_bytes() == before


def test_an_output_that_is_the_model_file_is_refused(tmp_path, capsys):
    from lrp_num.io.model_io import save_npz

    model = tmp_path / "m.npz"
    save_npz(load_builtin("digits-mlp").network, model)
    x = tmp_path / "x.npy"
    np.save(x, load_builtin("digits-mlp").test_images[0])
    before = model.read_bytes()
    _one_line_exit_2(["explain", "--model", str(model), "--rule", "zplus", "--input", str(x),
                      "--out", str(model)], capsys, "is the same file as the input --model")
    assert model.read_bytes() == before


def test_a_symbolic_link_to_the_input_is_the_input(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, load_builtin("digits-mlp").test_images[0])
    (tmp_path / "link.npy").symlink_to(x)
    _one_line_exit_2(["explain", "--model", "digits-mlp", "--rule", "zplus", "--input", str(x),
                      "--out", str(tmp_path / "link.npy")], capsys, "is the same file as the input")
    assert np.load(x).shape == (64,)


def test_check_distinct_names_both_outputs():
    from lrp_num.errors import OutputPathError
    from lrp_num.io.files import check_distinct

    with pytest.raises(OutputPathError, match="--heatmap 'a.png' is the same file as the output --out"):
        check_distinct({"--out": "a.png", "--heatmap": "a.png"}, {"--input": None})
    check_distinct({"--out": "a.npy", "--heatmap": None}, {"--input": "b.npy"})


@pytest.mark.parametrize("command, flag", [
    (["explain", "--input", ""], "--input"),
    (["explain", "--out", ""], "--out"),
    (["explain", "--model", ""], "--model"),
    (["explain", "--heatmap", ""], "--heatmap"),
    (["audit", "--attribution", "", "--rule", "zplus"], "--attribution"),
    (["audit", "--library", "zennit", "--model", "x.pt", "--architecture", "", "--rule", "zplus"],
     "--architecture"),
    (["audit", "--library", "zennit", "--input", "", "--rule", "zplus"], "--input"),
    (["verify", "--model", "digits-mlp", "--model", ""], "--model"),
    (["regenerate", "--out", ""], "--out"),
    (["regenerate", "--derivations", "", "--out", "x"], "--derivations"),
    (["derive", "--all", "--derivations", ""], "--derivations"),
])
def test_an_empty_path_flag_is_one_line_naming_it(tmp_path, capsys, monkeypatch, command, flag):
    monkeypatch.chdir(tmp_path)  # an empty --out must not become "." and write here
    _one_line_exit_2(command, capsys, f"{flag} is empty")
    assert list(tmp_path.iterdir()) == []


def test_regenerate_rejects_an_empty_folder_flag_without_the_command_line():
    """``lrp regenerate``'s own check: an empty folder flag is not the current folder."""
    import argparse

    from lrp_sym.commands.regenerate import RegenerateError, _targets

    args = argparse.Namespace(derivations=None, out="", docs=None, check=False)
    with pytest.raises(RegenerateError, match="--out is empty"):
        _targets(args)


def test_float32_overflow_is_one_line_without_warnings(tmp_path, capsys):
    x = tmp_path / "big.npy"
    np.save(x, np.full((1, 64), 3e38, dtype=np.float32))
    assert main(["explain", "--model", "digits-mlp", "--rule", "zplus", "--input", str(x)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lrp explain: error: network output (overflow inside the network) holds 10 NaN "
                   "or Inf value(s)"]


@pytest.mark.parametrize("name, shape", [("digits-mlp", (1, 64)), ("digits-cnn", (1, 1, 8, 8))])
def test_float32_overflow_in_the_python_api_raises_without_warnings(name, shape):
    model = load_builtin(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NonFiniteError, match="overflow"):
            explain(model.network, np.full(shape, 3e38, dtype=np.float32), rule="zplus")
