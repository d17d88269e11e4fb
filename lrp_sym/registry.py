"""Finding and loading the rule declarations in a ``derivations/`` folder.

Each ``*.py`` file there (not starting with ``_``) defines ``RULE``: an object with a ``name`` and
a ``derive()`` method returning a :class:`lrp_sym.derivation.Derivation`.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent
#: where an installed package keeps the derivations: the build maps the checkout's top-level
#: ``derivations/`` (the one source of truth) to ``lrp_sym/derivations`` in the wheel
INSTALLED_DERIVATIONS = _PACKAGE / "derivations"


def checkout_root() -> Path | None:
    """The source checkout that ``lrp_sym`` is imported from, or None for an installed package.

    A checkout (or an editable install of one) has ``pyproject.toml`` and ``derivations/`` next
    to the packages; a wheel installed into site-packages has neither.
    """
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "derivations").is_dir():
        return root
    return None


def _default_derivations() -> Path:
    root = checkout_root()
    return root / "derivations" if root is not None else INSTALLED_DERIVATIONS


#: the derivations shipped with the toolkit: the checkout's ``derivations/`` when run from a
#: source checkout, else the copy installed with the package
DEFAULT_DERIVATIONS = _default_derivations()


class DerivationFileError(Exception):
    """A derivation file that cannot be loaded or declares no RULE."""


def load_declarations(folder: Path | str | None = None) -> dict[str, Any]:
    """Import every derivation file in ``folder`` and return ``{rule name: RULE}``, sorted."""
    folder = Path(folder) if folder is not None else DEFAULT_DERIVATIONS
    if not folder.is_dir():
        raise DerivationFileError(f"no derivations folder at {folder}")
    declarations: dict[str, Any] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"_lrp_derivation_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # a user's file: report which one and why
            raise DerivationFileError(f"{path}: {type(error).__name__}: {error}") from error
        rule = getattr(module, "RULE", None)
        if rule is None or not hasattr(rule, "derive"):
            raise DerivationFileError(f"{path} defines no RULE with a derive() method")
        if rule.name in declarations:
            raise DerivationFileError(f"{path}: rule name {rule.name!r} is declared twice")
        rule.source = path
        declarations[rule.name] = rule
    return dict(sorted(declarations.items()))


def derive_declaration(name: str, rule: Any):
    """``rule.derive()``; any failure becomes a DerivationFileError naming the file and why."""
    try:
        return rule.derive()
    except Exception as error:  # a user's rule: say which one and why
        source = getattr(rule, "source", None) or "(no file)"
        raise DerivationFileError(f"{source}: deriving {name!r} failed: "
                                  f"{type(error).__name__}: {error}") from error
