"""The installed package: what the wheel ships, and that the commands find it there.

setuptools' own ``build_py`` lays the packages out as a wheel does (the top-level
``derivations/`` mapped to ``lrp_sym/derivations``, the models as package data), in a folder
with no checkout around it; the package is then imported from there in a subprocess run from
another folder. Building and installing the real wheel in a fresh venv is left to ``.ci/run``
(too slow for the test suite).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from codegen_support import shipped_sources
from lrp_num.cli import main

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "lrp_num" / "_generated"


def _setuptools_config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["tool"]["setuptools"]


def test_package_list_names_every_package_and_maps_the_derivations():
    config = _setuptools_config()
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in ("lrp_sym", "lrp_num") for init in (ROOT / top).rglob("__init__.py")}
    listed = set(config["packages"])
    assert found <= listed, f"packages missing from pyproject: {sorted(found - listed)}"
    assert listed - found == {"lrp_sym.derivations", "lrp_num.models"}
    assert config["package-dir"] == {"lrp_sym.derivations": "derivations"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The packages as the wheel holds them, built by setuptools from pyproject.toml."""
    pytest.importorskip("setuptools", minversion="77")  # the test extra pins it
    base = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                    "egg_info", "--egg-base", str(base), "build_py", "--build-lib",
                    str(base / "lib")], cwd=ROOT, check=True, capture_output=True, timeout=120)
    return base / "lib"


def _names(folder: Path, pattern: str) -> list[str]:
    return sorted(path.name for path in folder.glob(pattern))


def test_wheel_holds_the_derivations_models_and_kernels(installed):
    assert _names(installed / "lrp_sym" / "derivations", "*.py") == _names(ROOT / "derivations",
                                                                           "*.py")
    assert _names(installed / "lrp_num" / "models", "*.npz") == _names(ROOT / "lrp_num" / "models",
                                                                       "*.npz")
    assert _names(installed / "lrp_num" / "_generated", "*.py") == _names(GENERATED, "*.py")
    assert not (installed / "derivations").exists()  # only the mapped copy, no top-level folder


def _run_installed(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(installed))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_installed_package_finds_its_own_derivations(installed, tmp_path):
    probe = ("import json, lrp_sym\n"
             "from lrp_sym.registry import DEFAULT_DERIVATIONS, checkout_root\n"
             "from lrp_sym.commands.regenerate import DEFAULT_DOCS, DEFAULT_OUT\n"
             "print(json.dumps({'package': lrp_sym.__file__, 'derivations': "
             "str(DEFAULT_DERIVATIONS), 'checkout': checkout_root(), 'docs': DEFAULT_DOCS, "
             "'out': str(DEFAULT_OUT)}))")
    result = _run_installed(installed, tmp_path, "-c", probe)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert Path(found["package"]).parent == installed.resolve() / "lrp_sym"
    assert found == dict(found, derivations=str(installed.resolve() / "lrp_sym" / "derivations"),
                         checkout=None, docs=None,
                         out=str(installed.resolve() / "lrp_num" / "_generated"))

    listing = _run_installed(installed, tmp_path, "-m", "lrp_num.cli", "derive", "--list")
    assert listing.returncode == 0, listing.stderr
    assert {line.split()[0] for line in listing.stdout.splitlines()} == {
        source.derivation.name for source in shipped_sources()}


def test_checkout_prefers_its_own_derivations_folder():
    from lrp_sym.commands.regenerate import DEFAULT_DOCS
    from lrp_sym.registry import DEFAULT_DERIVATIONS, checkout_root

    assert checkout_root() == ROOT
    assert DEFAULT_DERIVATIONS == ROOT / "derivations"
    assert DEFAULT_DOCS == ROOT / "docs" / "rules"


@pytest.fixture
def as_installed(monkeypatch):
    """``lrp regenerate`` as an installed package runs it: no docs folder; rules derived once."""
    import lrp_sym.codegen
    from lrp_sym.commands import regenerate

    monkeypatch.setattr(regenerate, "DEFAULT_DOCS", None)
    monkeypatch.setattr(lrp_sym.codegen, "derive_folder",
                        lambda folder=None: list(shipped_sources()))
    return regenerate


def test_check_from_an_installed_package_checks_the_kernels_and_says_why_no_docs(as_installed,
                                                                                 capsys):
    assert main(["regenerate", "--check"]) == 0
    kernels = sum("Generated by lrp-toolkit" in path.read_text().splitlines()[0]
                  for path in GENERATED.glob("*.py"))
    assert capsys.readouterr().out.splitlines() == [
        f"lrp regenerate: {as_installed.NO_DOCS_NOTE}",
        f"lrp regenerate: up to date ({kernels} kernel files)"]


def test_check_from_an_installed_package_still_reports_a_stale_kernel(as_installed, tmp_path,
                                                                      monkeypatch, capsys):
    out = tmp_path / "_generated"
    out.mkdir()
    for path in GENERATED.glob("*.py"):
        (out / path.name).write_bytes(path.read_bytes())
    stale = out / "zplus.py"
    stale.write_text(stale.read_text().replace("RULE = 'zplus'", "RULE = 'zplus!'"))
    monkeypatch.setattr(as_installed, "DEFAULT_OUT", out)
    assert main(["regenerate", "--check"]) == 1
    captured = capsys.readouterr()
    assert "+RULE = 'zplus'" in captured.out and "stale" in captured.err
