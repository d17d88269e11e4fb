"""The ``audit`` extra installs what ``pip install --no-deps zennit==0.5.1`` leaves out.

zennit is installed without its declared dependencies (torchvision and click, which the audit
does not need: :func:`lrp_num.audit.zennit_adapter.import_zennit` registers a torchvision
placeholder, and click is only zennit's command line). Everything else zennit declares must come
from the project's core dependencies or its ``audit`` extra, or ``import_zennit()`` fails.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: what zennit declares and the audit deliberately does without (see the module docstring)
NOT_NEEDED = {"torchvision", "click"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["project"]


def test_the_audit_extra_lists_pillow():
    audit = {_name(r) for r in _project()["optional-dependencies"]["audit"]}
    assert "pillow" in audit


def test_the_audit_extra_and_core_cover_what_zennit_declares():
    try:
        declared = importlib.metadata.requires("zennit") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("zennit is not installed")
    needed = {_name(r) for r in declared if "extra ==" not in r} - NOT_NEEDED
    project = _project()
    provided = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["audit"]}
    assert needed <= provided, f"zennit needs {sorted(needed - provided)}: add them to the audit extra"
