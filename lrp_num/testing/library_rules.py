"""Another library's rules and composites in this toolkit's terms, read off the audit's profiles.

The mapping itself lives in :mod:`lrp_num.audit.profiles` (one :class:`~lrp_num.audit.profiles.RuleMapping`
per rule, cited to the library's source); this module only resolves what a downstream test
holds, a rule's name, the library's class name or a rule object, to that mapping:

* :func:`library_rule` ("zennit", "ZPlus") -> ``LayerRule("zplus_split")``: the derivation that
  reproduces the library under its profile's conventions, with the library's parameters;
* :func:`library_conventions` ("zennit") -> the profile's :class:`~lrp_num.engine.conventions.Conventions`
  (bias placement, stabiliser; ``epsilon_stabilises``: zennit's Epsilon(epsilon) has epsilon as
  its only stabiliser, so epsilon = 1e-9 is expressible);
* :func:`from_zennit` (reached as ``lrp_num.Composite.from_zennit``): a zennit composite object
  (EpsilonPlus, EpsilonGammaBox, EpsilonAlpha2Beta1, ...) as a composite in our rule names.

Parameters are read from zennit 0.5.1's rule objects where zennit keeps them, in the closures of
their modifier functions (``Stabilizer.epsilon``, GammaMod's ``gamma``, AlphaBeta's ``alpha`` and
``beta``), and from captum's rule attributes (``STABILITY_FACTOR``, ``gamma``).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from lrp_num.audit.profiles import Profile, RuleMapping, get_profile
from lrp_num.engine.composites import Composite, LayerRule
from lrp_num.engine.conventions import Conventions
from lrp_num.errors import UnknownRuleError
from lrp_num.layers import Conv2d


def _mapping(profile: Profile, rule: Any) -> RuleMapping:
    """The profile's mapping for our rule name, the library's class name (``"ZPlus"``,
    ``"zennit.rules.ZPlus"``, ``"Alpha1_Beta0_Rule"``) or a rule object of the library."""
    name = rule if isinstance(rule, str) else type(rule).__name__
    if name in profile.rules:
        return profile.rules[name]
    for mapping in profile.rules.values():
        library_class = mapping.library_rule.split(" ")[0]
        if name in (library_class, library_class.rsplit(".", 1)[-1]):
            return mapping
    offered = ", ".join(f"{m.library_rule.rsplit('.', 1)[-1]} ({m.rule})" for m in profile.rules.values())
    raise UnknownRuleError(f"{profile.library} {profile.version}: no rule {name!r} the profile knows; "
                           f"it knows: {offered}")


def _nonlocals(function: Any) -> dict:
    try:
        return dict(inspect.getclosurevars(function).nonlocals)
    except TypeError:  # a builtin (torch.ones_like): no closure
        return {}


def _zennit_stabiliser(hook: Any) -> float | None:
    """The epsilon of a zennit BasicHook's stabiliser (None where zennit got a callable)."""
    stabiliser = _nonlocals(getattr(hook, "gradient_mapper", None)).get("stabilizer_fn")
    epsilon = getattr(stabiliser, "epsilon", None)
    return float(epsilon) if isinstance(epsilon, (int, float)) else None


def _object_parameters(library: str, mapping: RuleMapping, rule: Any) -> tuple[dict, float | None]:
    """(our parameters, the stabiliser) read from a library's rule object."""
    if library == "captum":
        if mapping.rule == "epsilon":
            return {"epsilon": float(rule.STABILITY_FACTOR)}, None
        if mapping.rule == "gamma":
            return {"gamma": float(rule.gamma)}, None
        return {}, None
    stabiliser = _zennit_stabiliser(rule)
    if mapping.rule == "epsilon":
        return {"epsilon": stabiliser}, None
    if mapping.rule == "gamma":
        modifier = getattr(rule.param_modifiers[0], "modifier", None)
        return {"gamma": float(_nonlocals(modifier)["gamma"])}, stabiliser
    if mapping.rule == "alphabeta":
        found = _nonlocals(rule.reducer)
        return {"alpha": float(found["alpha"]), "beta": float(found["beta"])}, stabiliser
    return {}, stabiliser


def library_rule(library: str, rule: Any, **parameters: float) -> LayerRule:
    """The derivation (and parameters) reproducing ``library``'s ``rule`` under its conventions.

    Parameters
    ----------
    library : {"zennit", "captum", "autolrp", "bias-neuron"}
        A profile of :mod:`lrp_num.audit.profiles`.
    rule : str or rule object
        Our name (``"zplus"``, ``"epsilon"``), the library's class name (``"ZPlus"``,
        ``"zennit.rules.Gamma"``) or an instance (``zennit.rules.Epsilon(epsilon=1e-9)``), whose
        parameters are read off it.
    **parameters
        The library's parameters by our names (``epsilon``, ``gamma``, ``alpha``, ``beta``); they
        override what a rule object holds. The library's epsilon is the epsilon rule's epsilon
        (the profile's ``Conventions.epsilon_stabilises``): nothing is subtracted by hand.

    Returns
    -------
    LayerRule
        e.g. zennit's ZPlus -> ``LayerRule("zplus_split", {})``, Gamma(0.5) ->
        ``LayerRule("gamma_split", {"gamma": 0.5})``, Epsilon(1e-9) -> ``LayerRule("epsilon",
        {"epsilon": 1e-9})``.
    """
    profile = get_profile(library)
    mapping = _mapping(profile, rule)
    found = {} if isinstance(rule, str) else _object_parameters(profile.library, mapping, rule)[0]
    found = {k: v for k, v in found.items() if v is not None}
    return LayerRule(mapping.reference_rule, profile.reference_parameters(mapping, {**found, **parameters}))


def our_rule(library: str, rule: Any, **parameters: float) -> LayerRule:
    """``rule`` of ``library`` by our name with the library's parameters (``ZPlus`` -> ``zplus``),
    the form a composite holds; :func:`library_rule` gives the derivation that reproduces it."""
    profile = get_profile(library)
    mapping = _mapping(profile, rule)
    found = {} if isinstance(rule, str) else _object_parameters(profile.library, mapping, rule)[0]
    found = {k: v for k, v in found.items() if v is not None}
    return LayerRule(mapping.rule, {**mapping.defaults, **found, **parameters})


def library_conventions(library: str, eps: float | None = None) -> Conventions:
    """The conventions of ``library``'s profile; ``eps`` replaces its stabiliser (zennit's
    ``stabilizer=`` of a composite or rule)."""
    conventions = get_profile(library).conventions
    return conventions if eps is None else dataclasses.replace(conventions, eps=float(eps))


@dataclass(frozen=True)
class LibraryComposite(Composite):
    """A composite read off another library's composite object: rules in our names with the
    library's parameters, and what the library uses around them.

    Attributes
    ----------
    library : str
        The profile that maps these rules to derivations (:func:`library_rule`).
    eps : float or None
        The library's stabiliser of every rule but epsilon (None: the profile's).
    input_domain : tuple or None
        (low, high) of a z^B rule at the first layer (zennit's ZBox(low, high)).
    """

    library: str = "zennit"
    eps: float | None = None
    input_domain: tuple | None = None


def _zennit_hook_for(layer_map: list, torch_type: type):
    return next((hook for types, hook in layer_map if issubclass(torch_type, types)), None)


def from_zennit(composite: Any) -> LibraryComposite:
    """A zennit 0.5.1 composite object as a :class:`LibraryComposite` in our rule names.

    Reads ``composite.layer_map`` (and ``first_map`` of zennit's SpecialFirstLayerMapComposite)
    as zennit applies them: the first Dense or Conv2d layer takes the first map's hook where one
    matches its torch type (nn.Linear or nn.Conv2d), every other one the layer map's. Each hook
    becomes our rule with the parameters it holds (:func:`our_rule`); a rule without a
    counterpart in the zennit profile (Pass on a linear layer, a custom hook) is an
    UnknownRuleError naming it. Pooling, activations and Sum keep their derived rules (zennit
    gives them Pass and Norm, which the profile models).
    """
    from lrp_num.io.torch_bridge import require_torch

    torch = require_torch()
    layer_map = list(getattr(composite, "layer_map", None) or [])
    if not layer_map:
        raise UnknownRuleError(f"{type(composite).__name__}: not a zennit LayerMapComposite (no layer_map)")
    first_map = list(getattr(composite, "first_map", None) or [])
    stabilisers, domain = set(), None
    choices: dict[tuple[str, bool], LayerRule] = {}
    for kind, torch_type in (("conv", torch.nn.Conv2d), ("dense", torch.nn.Linear)):
        for first in (False, True):
            hook = _zennit_hook_for(first_map, torch_type) if first else None
            hook = hook or _zennit_hook_for(layer_map, torch_type)
            if hook is None:
                continue
            choice = our_rule("zennit", hook)
            if choice.rule != "epsilon":
                stabiliser = _zennit_stabiliser(hook)
                if stabiliser is not None:
                    stabilisers.add(stabiliser)
            if choice.rule == "zbox":
                bounds = {k: v for f in hook.input_modifiers for k, v in _nonlocals(f).items() if k in ("low", "high")}
                if len(bounds) == 2 and all(isinstance(v, (int, float)) for v in bounds.values()):
                    domain = (float(bounds["low"]), float(bounds["high"]))
            choices[kind, first] = choice
    if len(stabilisers) > 1:
        raise UnknownRuleError(f"{type(composite).__name__}: rules with different stabilisers {sorted(stabilisers)}; "
                               "the zennit profile has one")

    def choose(index: int, layer: object, is_first: bool, input_is_box: bool) -> LayerRule:
        kind = "conv" if isinstance(layer, Conv2d) else "dense"
        choice = choices.get((kind, is_first))
        if choice is None:
            raise UnknownRuleError(f"zennit composite {type(composite).__name__} maps no rule to a {kind} layer "
                                   f"(layer {index})")
        return choice

    names = ", ".join(f"{'first ' if first else ''}{kind}: {c.rule}" for (kind, first), c in sorted(choices.items()))
    return LibraryComposite(f"zennit {type(composite).__name__}", choose, f"from zennit ({names})",
                            library="zennit", eps=stabilisers.pop() if stabilisers else None, input_domain=domain)


def mapped_plan(plan: Mapping[int, LayerRule], linear: set[int], library: str) -> dict[int, LayerRule]:
    """Our ``plan`` (node index -> LayerRule in our names) as the derivations reproducing
    ``library``: its linear nodes (``linear``) through :func:`library_rule`, Add nodes through the
    profile's ``add`` mapping; pooling and affine nodes keep their derived rules."""
    profile = get_profile(library)
    result = {}
    for index, choice in plan.items():
        if index in linear:
            result[index] = library_rule(library, choice.rule, **dict(choice.parameters))
        elif choice.rule.startswith("add") and profile.add is not None:
            result[index] = LayerRule(profile.add.reference_rule, dict(choice.parameters))
        else:
            result[index] = choice
    return result


__all__ = ["LibraryComposite", "from_zennit", "library_conventions", "library_rule", "mapped_plan", "our_rule"]
