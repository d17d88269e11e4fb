"""Backend selection: NumPy by default and the only import of ``import lrp_num``; the others
load on first use, and a missing library is a one-line error naming the extra to install."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import lrp_num
from lrp_num import backends
from lrp_num.errors import MissingDependencyError, UnsupportedLayerError


def test_import_lrp_num_imports_neither_torch_nor_cupy_nor_a_backend():
    code = ("import sys, lrp_num, numpy as np; "
            "m = lrp_num.load_builtin('digits-mlp'); "
            "lrp_num.explain(m.network, m.test_images[:2], rule='zplus'); "
            "print(sorted(n for n in ('torch', 'cupy', 'array_api_strict', "
            "'lrp_num.backends.torch', 'lrp_num.backends.cupy') if n in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_numpy_input_and_lists_use_the_numpy_backend():
    assert backends.backend_of(np.zeros(3)).name == "numpy"
    assert backends.backend_of([1.0, 2.0]).name == "numpy"


def test_an_array_of_another_library_is_an_lrp_error():
    strict = pytest.importorskip("array_api_strict")
    loaded = lrp_num.load_builtin("digits-mlp")
    with pytest.raises(UnsupportedLayerError, match="no array backend for array_api_strict"):
        lrp_num.explain(loaded.network, strict.asarray(loaded.test_images[:2]), rule="zplus")


def test_unknown_backend_name():
    with pytest.raises(UnsupportedLayerError, match="unknown array backend 'jax'"):
        backends.get("jax")


@pytest.mark.parametrize("name", ["torch", "cupy"])
def test_a_missing_library_names_the_extra(name, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # import name now raises ImportError
    monkeypatch.delitem(sys.modules, f"lrp_num.backends.{name}", raising=False)
    with pytest.raises(MissingDependencyError,
                       match=rf"^the {name} backend needs {name}: pip install 'lrp-toolkit\[{name}\]'$"):
        backends.get(name)


def test_cupy_backend_without_cupy_installed_is_the_missing_dependency_error():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"lrp-toolkit\[cupy\]"):
            backends.get("cupy")
    else:  # pragma: no cover - a machine with CuPy
        pytest.skip("CuPy is installed")
