"""What a user sees on long work: progress on a terminal only, headers first, quiet broken pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrp_num import load_builtin
from lrp_num.cli import BROKEN_PIPE_STATUS, main
from lrp_num.progress import progress

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def terminal(capsys, monkeypatch):
    """stderr that says it is a terminal (pytest's capture is not).

    Patched on the class of the capturing stream: pytest may swap the stream object itself
    between fixture set-up and the test call.
    """
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda self: True)


def test_progress_draws_a_bar_on_a_terminal(capsys, terminal):
    assert list(progress(range(3), "counting")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "counting" in err and "/3 [" in err  # tqdm's "k/3 [elapsed...]"


def test_progress_is_quiet_when_stderr_is_not_a_terminal(capsys):
    assert list(progress(range(3), "counting")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_verify_shows_progress_per_rule_on_a_terminal(capsys, terminal):
    assert main(["verify", "--model", "digits-mlp", "--rules", "zplus", "w2", "--samples", "1"]) == 0
    err = capsys.readouterr().err
    assert "verifying digits-mlp" in err and "/2 [" in err


def test_verify_is_quiet_on_stderr_when_it_is_not_a_terminal(capsys):
    assert main(["verify", "--model", "digits-mlp", "--rules", "zplus", "w2", "--samples", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "verification passed" in captured.out


def test_explain_shows_progress_over_chunks_on_a_terminal(tmp_path, capsys, terminal):
    x = tmp_path / "x.npy"
    images = load_builtin("digits-mlp").test_images
    np.save(x, np.concatenate([images] * 17))  # 136 samples: three chunks of 64
    assert main(["explain", "--model", "digits-mlp", "--rule", "zplus", "--input", str(x)]) == 0
    err = capsys.readouterr().err
    assert "explaining" in err and "/3 [" in err


def test_audit_of_an_attribution_shows_progress_per_convention(tmp_path, capsys, terminal):
    from lrp_num import explain

    model = load_builtin("digits-mlp")
    attribution = tmp_path / "r.npy"
    np.save(attribution, explain(model.network, model.test_images[:1], rule="zplus"))
    assert main(["audit", "--attribution", str(attribution), "--model", "digits-mlp",
                 "--rule", "zplus"]) == 0
    err = capsys.readouterr().err
    assert "reference per convention" in err


def test_verify_prints_its_header_before_the_work(monkeypatch, capsys):
    import lrp_num.verify as verify_module

    seen = []
    original = verify_module.verify

    def watched(*args, **kwargs):
        seen.append(capsys.readouterr().out)  # what the user had seen when the work began
        return original(*args, **kwargs)

    monkeypatch.setattr(verify_module, "verify", watched)
    assert main(["verify", "--model", "digits-mlp", "--rules", "zplus", "--samples", "1",
                 "--dps", "30"]) == 0
    assert seen[0].startswith("lrp verify: 1 model(s), 1 rules and composites, 1 sample(s) each, "
                              "reference at 30 digits")


def _read_one_line_then_close(arguments):
    """Run ``lrp ARGUMENTS``, read one line of stdout, close the pipe (as ``| head -1``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "lrp_num.cli", *arguments], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()
    err = process.stderr.read()
    process.stderr.close()
    return first, process.wait(timeout=300), err.decode()


@pytest.mark.parametrize("arguments, first", [
    (["derive", "--all"], b"== "),  # the first rule's heading
    (["verify", "--model", "digits-mlp", "--rules", "zplus", "--samples", "1"], b"lrp verify:"),
])
def test_a_closed_pipe_ends_the_command_quietly(arguments, first):
    line, status, err = _read_one_line_then_close(arguments)
    assert line.startswith(first)
    assert err == ""  # no BrokenPipeError traceback, no "Exception ignored" at exit
    assert status == BROKEN_PIPE_STATUS


def test_the_reference_on_several_samples_shows_progress_on_a_terminal(capsys, terminal):
    from lrp_num import reference

    model = load_builtin("digits-mlp")
    reference.explain(model.network, model.test_images[:3], rule="zplus", dps=30)
    assert "reference" in capsys.readouterr().err
