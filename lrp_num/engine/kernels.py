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


#: kernels generated for a layer type rather than a rule (max pooling); never a user's rule
LAYER_KERNEL_NAMES = ("maxpool", "softmax", "product_uniform", "matmul_epsilon", "matmul_cp")
#: generated modules that are no relevance kernel at all
_NOT_KERNELS = ("batchnorm_fold", "affine_channel")


def _packaged_rules() -> tuple[str, ...]:
    return tuple(getattr(importlib.import_module("lrp_num._generated"), "RULES", ()))


def _packaged_names() -> tuple[str, ...]:
    generated = importlib.import_module("lrp_num._generated")
    return _packaged_rules() + tuple(
        name for name in getattr(generated, "LAYER_KERNELS", ()) if name not in _NOT_KERNELS) \
        + tuple(getattr(generated, "NODE_RULES", ()))


def _folder_names(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in folder.glob("*.py")
                        if not path.name.startswith("_") and path.stem not in _NOT_KERNELS))


#: (resolved path) -> ((mtime_ns, size), module): a user's kernel file is executed once per
#: version of the file, and again after it changes (e.g. a new ``lrp regenerate --out``)
_FILE_MODULES: dict[Path, tuple[tuple[int, int], ModuleType]] = {}


#: name -> shipped kernel module, filled on first use: the shipped package is imported once per
#: process (Python's import cache), so its names and modules never change while it runs
_PACKAGED_MODULES: dict[str, ModuleType] = {}


def _module_from_file(path: Path) -> ModuleType:
    path = path.resolve()
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    cached = _FILE_MODULES.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_name = f"_lrp_kernel_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    _FILE_MODULES[path] = (version, module)
    return module


def _known_text(names: tuple[str, ...]) -> str:
    rules = [name for name in names if name not in LAYER_KERNEL_NAMES]
    layers = [name for name in names if name in LAYER_KERNEL_NAMES]
    return (", ".join(rules) or "none") + (f" (layer kernels: {', '.join(layers)})" if layers else "")


def load_module(name: str, folder: str | Path | None = None) -> ModuleType:
    """The generated kernel module of rule or layer kernel ``name`` (from ``folder`` when given)."""
    if folder is None:
        module = _PACKAGED_MODULES.get(name)
        if module is not None:
            return module
        known = _packaged_names()
        if name not in known:
            raise UnknownRuleError(f"no generated kernel for rule {name!r}; known rules: "
                                   f"{_known_text(known)}")
        module = _PACKAGED_MODULES[name] = importlib.import_module(f"lrp_num._generated.{name}")
        return module
    folder = Path(folder)
    if not folder.is_dir():
        raise UnknownRuleError(f"no kernel folder at {folder}")
    known = _folder_names(folder)
    if name not in known:
        raise UnknownRuleError(f"no generated kernel for rule {name!r} in {folder}; known "
                               f"rules there: {_known_text(known)}")
    return _module_from_file(folder / f"{name}.py")


def has_kernel(name: str, folder: str | Path) -> bool:
    """Whether ``folder`` (an ``lrp regenerate --out`` folder) holds a kernel called ``name``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UnknownRuleError(f"no kernel folder at {folder}")
    return name in _folder_names(folder)


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
    """The rule names (ratio and root-point rules) with a kernel, shipped or in ``folder``.

    Layer kernels (:data:`LAYER_KERNEL_NAMES`, e.g. ``"maxpool"``) are not rules: ``load_kernel``
    accepts them, ``explain`` uses them for their layer type only; see :func:`layer_kernels`.
    """
    if folder is None:
        return _packaged_rules()
    return tuple(name for name in _folder_names(Path(folder)) if name not in LAYER_KERNEL_NAMES)


def layer_kernels(folder: str | Path | None = None) -> tuple[str, ...]:
    """The layer kernels (max pooling, softmax, the products) that ``load_kernel`` accepts besides the rules."""
    names = _packaged_names() if folder is None else _folder_names(Path(folder))
    return tuple(name for name in names if name in LAYER_KERNEL_NAMES)


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
