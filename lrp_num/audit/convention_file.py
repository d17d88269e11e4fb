"""A user's own LRP convention, described in a small JSON or TOML file (``lrp audit --convention``).

The file maps onto the same :class:`~lrp_num.audit.profiles.Profile` and
:class:`~lrp_num.engine.conventions.Conventions` the built-in profiles use, so a saved
attribution is audited against it exactly as against zennit's or captum's profile. Example
(TOML; the JSON file holds the same keys)::

    name = "my-lrp"                  # required: how the report names the convention
    bias = "neuron"                  # none | denominator | neuron | zennit
    max_pool_ties = "first"          # split | first

    [stabiliser]
    epsilon = 1e-9                   # finite, >= 0
    where = "zero"                   # zero | everywhere
    sign_of_zero = 1                 # sign(0) of the stabiliser; +1 is the one modelled

    [rules]                          # our rule -> the variant the implementation computes
    zplus = "zplus_split"
    gamma = { variant = "gamma", gamma = 0.5 }

Keys
----
``bias`` (default ``"none"``): what the bias adds to a rule's denominator.
    ``"none"``: nothing (the deep Taylor derivation; LRP-epsilon's derivation keeps b_j in z_j);
    ``"denominator"``: the full b_j in every rule (alpha-beta: in its positive group);
    ``"neuron"``: the bias is an input neuron with activation 1 (Bach et al. 2015), b_j^+ and
    b_j^- in alpha-beta's two groups, b_j elsewhere; ``"zennit"``: b_j^+ for z+, b_j^2 for w2,
    b_j^+ / b_j^- for alpha-beta, none for flat and z^B.
``stabiliser`` (default: epsilon 1e-6, where ``"zero"``): a denominator d becomes
    d + epsilon sign(d), with sign(0) = +1, everywhere or only where d == 0.
``max_pool_ties`` (default ``"split"``): a max-pooling window's tied maxima share R_j equally
    (the derived limit) or the first in row-major window order takes it all (``"first"``, as
    PyTorch's gradient does).
``rules`` (default: each rule its own derivation): per rule, the variant as a string or a
    table ``{variant = ..., <parameter> = ...}`` whose parameters become the convention's
    defaults. Variants: zplus -> zplus | zplus_split (inputs split by sign), gamma -> gamma |
    gamma_split (inputs split by sign, gamma on the bias), w2 -> w2 (b_j^2 in the
    denominator comes from ``bias = "zennit"``), epsilon, alphabeta, flat, zbox -> themselves.

Anything else (an unknown key, a value outside these choices, a parameter the variant does not
take) is a :class:`~lrp_num.errors.ConventionFileError`.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

from lrp_num.audit.profiles import Profile, RuleMapping
from lrp_num.engine.conventions import Conventions
from lrp_num.errors import ConventionFileError, LRPError

#: the file's bias placement -> the bias convention of :mod:`lrp_num.engine.conventions`
BIAS_PLACEMENTS = {"none": "dtd", "denominator": "captum", "neuron": "neuron", "zennit": "zennit"}
#: the file's stabiliser placement -> Conventions.stabilise
STABILISER_PLACES = {"zero": "zero", "everywhere": "everywhere"}
#: our rule -> the variants (derivations) an implementation may compute for it
RULE_VARIANTS: dict[str, tuple[str, ...]] = {
    "zplus": ("zplus", "zplus_split"), "gamma": ("gamma", "gamma_split"), "w2": ("w2",),
    "epsilon": ("epsilon",), "alphabeta": ("alphabeta",), "flat": ("flat",), "zbox": ("zbox",),
}
#: each variant's parameters (those of its derivation)
VARIANT_PARAMETERS: dict[str, tuple[str, ...]] = {
    "gamma": ("gamma",), "gamma_split": ("gamma",), "epsilon": ("epsilon",), "alphabeta": ("alpha", "beta"),
}
_TOP_KEYS = ("name", "bias", "max_pool_ties", "stabiliser", "rules")
#: the file's max-pool tie rule -> Conventions.maxpool_ties
TIE_RULES = ("split", "first")
_STABILISER_KEYS = ("epsilon", "where", "sign_of_zero")


def _fail(path: Path, message: str) -> ConventionFileError:
    return ConventionFileError(f"--convention {str(path)!r}: {message}")


def _parse(path: Path) -> Mapping[str, Any]:
    """The file's top-level table, as JSON (``.json``) or TOML (anything else)."""
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a folder, not a JSON or TOML file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise _fail(path, f"cannot be read ({error})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise _fail(path, f"is not valid {kind} ({error})") from None
    if not isinstance(data, dict):
        raise _fail(path, "must hold a table (a JSON object) at the top")
    return data


def _unknown(path: Path, where: str, table: Mapping, known: tuple[str, ...]) -> None:
    extra = sorted(set(table) - set(known))
    if extra:
        raise _fail(path, f"unknown key(s) {', '.join(map(repr, extra))} in {where}; known: {', '.join(known)}")


def _choice(path: Path, key: str, value: object, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise _fail(path, f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _number(path: Path, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _fail(path, f"{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def _conventions(path: Path, data: Mapping) -> Conventions:
    bias = BIAS_PLACEMENTS[_choice(path, "bias", data.get("bias", "none"), BIAS_PLACEMENTS)]
    stabiliser = data.get("stabiliser", {})
    if not isinstance(stabiliser, dict):
        raise _fail(path, f"stabiliser must be a table with {', '.join(_STABILISER_KEYS)}")
    _unknown(path, "stabiliser", stabiliser, _STABILISER_KEYS)
    eps = _number(path, "stabiliser.epsilon", stabiliser.get("epsilon", 1e-6))
    where = _choice(path, "stabiliser.where", stabiliser.get("where", "zero"), STABILISER_PLACES)
    sign = stabiliser.get("sign_of_zero", 1)
    if isinstance(sign, bool) or sign != 1:
        raise _fail(path, f"stabiliser.sign_of_zero must be 1 (sign(0) = +1, the convention the engine and the "
                          f"reference model), got {sign!r}")
    ties = _choice(path, "max_pool_ties", data.get("max_pool_ties", "split"), TIE_RULES)
    return Conventions(bias=bias, eps=eps, stabilise=STABILISER_PLACES[where], maxpool_ties=ties)


def _rules(path: Path, data: Mapping) -> dict[str, RuleMapping]:
    table = data.get("rules", {})
    if not isinstance(table, dict):
        raise _fail(path, "rules must be a table: our rule -> variant")
    _unknown(path, "rules", table, tuple(RULE_VARIANTS))
    rules = {}
    for rule, variants in RULE_VARIANTS.items():
        entry = table.get(rule, rule)
        parameters: dict[str, object] = {}
        if isinstance(entry, dict):
            parameters = {k: v for k, v in entry.items() if k != "variant"}
            entry = entry.get("variant", rule)
        variant = _choice(path, f"rules.{rule}", entry, variants)
        _unknown(path, f"rules.{rule}", parameters, VARIANT_PARAMETERS.get(variant, ()))
        defaults = {k: _number(path, f"rules.{rule}.{k}", v) for k, v in parameters.items()}
        rules[rule] = RuleMapping(rule, f"{variant} (convention file)", variant, rule, defaults, str(path),
                                  f"the variant {variant} the file names")
    return rules


def load_convention(path: str | os.PathLike) -> Profile:
    """The :class:`~lrp_num.audit.profiles.Profile` a convention file describes (see the module docstring).

    Raises
    ------
    ConventionFileError
        A missing or unreadable file, invalid JSON or TOML, an unknown key, or a value outside
        its choices.
    """
    file = Path(path)
    data = _parse(file)
    _unknown(file, "the file", data, _TOP_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(file, f"name must be a non-empty string, got {name!r}")
    try:
        conventions = _conventions(file, data)
    except ConventionFileError:
        raise
    except LRPError as error:  # Conventions' own checks, worded for the file
        raise _fail(file, str(error)) from None
    return Profile(name=name.strip(), library=name.strip(), version="convention file", conventions=conventions,
                   rules=_rules(file, data), sources=(str(file),),
                   passes="ReLU: relevance passes unchanged; sum and average pooling: the z-rule; max pooling: "
                          f"winner-take-all, ties {'to the first maximum' if conventions.maxpool_ties == 'first' else 'split'}")


__all__ = ["BIAS_PLACEMENTS", "RULE_VARIANTS", "VARIANT_PARAMETERS", "load_convention"]
