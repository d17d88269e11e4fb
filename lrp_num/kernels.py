"""Loading generated relevance kernels by rule name.

The kernels live in ``lrp_num._generated`` (one module per rule, written by ``lrp regenerate``)
or in a user's output folder (``lrp regenerate --derivations DIR --out OUT``). Loading needs
NumPy only; SymPy is never imported here.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

from lrp_num.errors import UnknownRuleError


def _packaged_names() -> tuple[str, ...]:
    generated = importlib.import_module("lrp_num._generated")
    return tuple(getattr(generated, "RULES", ())) + tuple(
        name for name in getattr(generated, "LAYER_KERNELS", ()) if name != "batchnorm_fold")


def _folder_names(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in folder.glob("*.py")
                        if not path.name.startswith("_") and path.stem != "batchnorm_fold"))


def _module_from_file(path: Path) -> ModuleType:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"_lrp_kernel_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_module(name: str, folder: str | Path | None = None) -> ModuleType:
    """The generated kernel module of rule ``name`` (from ``folder`` when given)."""
    if folder is None:
        known = _packaged_names()
        if name not in known:
            raise UnknownRuleError(f"no generated kernel for rule {name!r}; known rules: "
                                   f"{', '.join(known)}")
        return importlib.import_module(f"lrp_num._generated.{name}")
    folder = Path(folder)
    if not folder.is_dir():
        raise UnknownRuleError(f"no kernel folder at {folder}")
    known = _folder_names(folder)
    if name not in known:
        raise UnknownRuleError(f"no generated kernel for rule {name!r} in {folder}; known "
                               f"rules there: {', '.join(known) or 'none'}")
    return _module_from_file(folder / f"{name}.py")


def load_kernel(name: str, folder: str | Path | None = None) -> Callable:
    """Return the ``relevance`` function of rule ``name``.

    Parameters
    ----------
    name : str
        A rule name (``"zplus"``, ``"gamma"``, ...) or ``"maxpool"``.
    folder : path, optional
        A user's output folder of ``lrp regenerate --out``; the shipped kernels when omitted.

    Raises
    ------
    UnknownRuleError
        For a name without a kernel; the message lists the known names.
    """
    return load_module(name, folder).relevance


def kernel_parameters(name: str, folder: str | Path | None = None) -> dict[str, float]:
    """The rule parameters of a kernel and their defaults, in signature order."""
    return dict(getattr(load_module(name, folder), "PARAMETERS", {}))


def known_rules(folder: str | Path | None = None) -> tuple[str, ...]:
    """The names ``load_kernel`` accepts."""
    return _packaged_names() if folder is None else _folder_names(Path(folder))


def load_condition(name: str, folder: str | Path | None = None) -> Callable | None:
    """The generated root-point diagnostic of rule ``name``, or None if it has none.

    Root-point rules whose derivation found a closed-form domain condition carry
    ``root_point_in_domain(op, x, *, <rule parameters>, lower=None, upper=None)``, returning
    boolean arrays ``(inside, active)`` shaped like the layer output: the derived condition per
    neuron, and z_j > 0 with sum_i q_ij > 0 (the neurons the rule is derived for). Other rules
    (LRP-epsilon, alpha-beta, max pooling, a root-point rule without a closed form) get None.

    Raises
    ------
    UnknownRuleError
        For a name without a kernel, as :func:`load_kernel`.
    """
    module = load_module(name, folder)
    condition = getattr(module, "root_point_in_domain", None)
    return condition if callable(condition) else None
