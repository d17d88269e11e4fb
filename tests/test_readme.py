"""Every snippet of README.md works as written.

Each ```python block runs in a fresh interpreter from the repository root, exactly as it stands
(one after ``import lrp_num`` alone must find ``lrp_num.reference``). Each ``lrp ...`` command of
a ```bash block is parsed by the command line's own parser; the audit example also runs when
torch and zennit are installed (the README's set-up and CI install them).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lrp_num.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[tuple[int, str]]:
    """(line number, text) of every fenced block in ``language``."""
    return [(README.count("\n", 0, match.start()) + 1, match.group(2))
            for match in _FENCE.finditer(README) if match.group(1) == language]


def _lrp_commands() -> list[tuple[int, list[str]]]:
    """The ``lrp`` commands of the bash blocks, each as its words after ``lrp``."""
    commands = []
    for start, text in _blocks("bash"):
        for offset, line in enumerate(text.splitlines()):
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "lrp":
                    commands.append((start + 1 + offset, words[1:]))
    return commands


PYTHON_BLOCKS = _blocks("python")
LRP_COMMANDS = _lrp_commands()


def test_readme_has_the_snippets_these_tests_run():
    assert len(PYTHON_BLOCKS) >= 3
    assert {words[0] for _, words in LRP_COMMANDS} >= {"regenerate", "verify", "audit"}


@pytest.mark.parametrize("text", [text for _, text in PYTHON_BLOCKS],
                         ids=[f"line{line}" for line, _ in PYTHON_BLOCKS])
def test_python_snippet_runs_as_written(text):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", text], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("words", [words for _, words in LRP_COMMANDS],
                         ids=[f"line{line}-{words[0]}" for line, words in LRP_COMMANDS])
def test_lrp_command_parses(words):
    args = build_parser().parse_args(words)  # argparse exits (status 2) on a wrong flag
    assert args.command == words[0]


def test_audit_example_runs():
    for module in ("torch", "zennit", "autolrp"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the audit example needs {module} (README: Auditing other "
                        f"implementations)")
    audits = [words for _, words in LRP_COMMANDS if words[0] == "audit"]
    assert audits
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for words in audits:
        result = subprocess.run([sys.executable, "-m", "lrp_num.cli", *words], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr + result.stdout


def test_documented_submodules_are_attributes_after_import_lrp_num():
    code = ("import sys, lrp_num\n"
            "assert 'lrp_num.reference' not in sys.modules and 'mpmath' not in sys.modules\n"
            "assert callable(lrp_num.reference.explain)\n"
            "assert callable(lrp_num.reference.symbolic.dense_relevance)\n"
            "assert callable(lrp_num.io.onnx_import.load_onnx)\n"
            "assert callable(lrp_num.engine.kernels.load_kernel)\n"
            "assert issubclass(lrp_num.errors.ShapeError, lrp_num.errors.LRPError)\n"
            "try:\n"
            "    lrp_num.no_such_module\n"
            "except AttributeError as error:\n"
            "    assert 'no_such_module' in str(error)\n"
            "else:\n"
            "    raise AssertionError('an unknown attribute must raise AttributeError')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
