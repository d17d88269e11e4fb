"""docs/testing.md: its downstream suites for zennit and captum run as written, with pytester.

Each code block that opens with ``# file: NAME.py`` is a test module; it is written into a fresh
folder and run in-process with the lrp-toolkit plugin, under the hypothesis profile of this run
(``HYPOTHESIS_PROFILE=ci`` in CI). Skipped where torch, zennit or captum is missing.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import time
from pathlib import Path

import pytest

from lrp_num.errors import LRPError

pytest_plugins = ["pytester"]


def _import_before_pytester() -> None:
    """Import what the suites import, before any pytester fixture exists: pytester drops the
    modules an in-process run imports once it ends, and numpy's and torch's extension modules
    cannot be loaded a second time in one process."""
    import numpy  # noqa: F401
    import lrp_num.testing.pytest_plugin  # noqa: F401
    import lrp_num.testing.strategies  # noqa: F401

    for module in ("torch", "captum.attr", "zennit"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        try:
            if module == "zennit":
                from lrp_num.testing import import_zennit

                import_zennit()
            else:
                importlib.import_module(module)
        except (ImportError, LRPError):
            pass  # the suite that needs it fails or skips, with the reason


_import_before_pytester()
DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
NEEDS = {"test_zennit_lrp.py": ("torch", "zennit"), "test_captum_lrp.py": ("torch", "captum"),
         "test_transformer_lrp.py": ()}
#: the suites for another library, with at least four tests each
LIBRARY_SUITES = ("test_zennit_lrp.py", "test_captum_lrp.py")


def suites() -> dict[str, str]:
    """File name -> code of every ``# file:`` block of docs/testing.md."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    found = {}
    for block in blocks:
        first = block.splitlines()[0]
        if first.startswith("# file: "):
            found[first.removeprefix("# file: ").strip()] = block
    return found


def plugin_arguments() -> list[str]:
    """``-p`` for the plugin unless its entry point is installed (then it loads by itself)."""
    installed = any(entry.value == "lrp_num.testing.pytest_plugin"
                    for entry in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "lrp_num.testing.pytest_plugin"]


def test_the_page_holds_both_suites_and_each_test_has_at_most_five_lines():
    found = suites()
    assert set(found) == set(NEEDS)
    for name, code in found.items():
        tests = [node for node in ast.parse(code).body
                 if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
        assert len(tests) >= (4 if name in LIBRARY_SUITES else 1), name
        for test in tests:
            first = min([test.lineno] + [d.lineno for d in test.decorator_list])
            assert test.end_lineno - first + 1 <= 5, f"{name}: {test.name} has more than five lines"


def test_zennit_suite_covers_the_five_rules_on_dense_and_conv_networks():
    code = suites()["test_zennit_lrp.py"]
    for rule in ("ZPlus", "Epsilon", "Gamma", "WSquare", "AlphaBeta"):
        assert f"{rule}(" in code, rule
    # NETWORKS draws dense and conv networks (no kind=), and one test draws conv networks alone
    assert re.search(r"^NETWORKS = torch_networks\((?![^)]*kind=)", code, flags=re.M)
    assert 'torch_networks(kind="conv"' in code


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_docs_suite_passes(pytester, name):
    for module in NEEDS[name]:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    code = suites()[name]
    pytester.makepyfile(**{name.removesuffix(".py"): code})
    torch = importlib.import_module("torch") if importlib.util.find_spec("torch") else None
    threads = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(1)  # tiny models: torch's thread pool only contends on a shared machine
    try:
        start = time.perf_counter()
        result = pytester.runpytest_inprocess(*plugin_arguments(), "-q", "-p", "no:cacheprovider",
                                             "-W", "ignore::pytest.PytestAssertRewriteWarning")
        seconds = time.perf_counter() - start
    finally:
        if torch:
            torch.set_num_threads(threads)
    n_tests = code.count("\ndef test_")
    outcomes = result.parseoutcomes() if result.outlines else {}
    assert outcomes.get("passed") == n_tests and not outcomes.get("failed"), "\n".join(result.outlines[-40:])
    print(f"{name}: {n_tests} tests in {seconds:.1f} s")  # measured, not asserted (-s shows it)
