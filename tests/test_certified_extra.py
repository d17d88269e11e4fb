"""Without python-flint, the certified path is one clear error naming the extra (issue 13); this
module runs whether or not the extra is installed."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from lrp_num.cli import main
from lrp_num.errors import MissingDependencyError
from lrp_num.io.model_io import load_builtin


def test_cli_certified_without_python_flint_is_one_line_naming_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "flint", None)  # import flint now raises ImportError
    assert main(["verify", "--model", "digits-mlp", "--rules", "epsilon", "--certified"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "certified" in err[0], err


def test_the_api_without_python_flint_raises_missing_dependency(monkeypatch):
    from lrp_num.certified import explain_balls

    monkeypatch.setitem(sys.modules, "flint", None)
    with pytest.raises(MissingDependencyError, match="certified"):
        explain_balls(load_builtin("digits-mlp").network, np.zeros(64), rule="lrp0")
