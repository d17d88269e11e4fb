"""Convention profiles: what another LRP implementation computes, in this toolkit's terms.

A :class:`Profile` names, for one library version, the conventions it uses (bias in the
denominator, stabiliser) and, for each rule the user asks for by our name, the library's class,
the derivation that reproduces the library exactly (``reference_rule``) and the deep Taylor
derivation it is compared with (``dtd_rule``). The engine and the mpmath reference evaluate the
first under ``conventions`` and the second under :data:`lrp_num.engine.conventions.DTD`.

Every entry was read off the installed library source (file and class cited per rule), not
off its documentation:

zennit 0.5.1 (``zennit/rules.py``, ``zennit/core.py``; the formulas equal zennit 1.0's)
    A :class:`~zennit.core.BasicHook` evaluates each rule as R_i = x'_i sum_j w'_ij R_j / stab(z'_j)
    with z'_j computed by the module itself from modified inputs x' and parameters (weight *and*
    bias), so the bias enters every denominator through the modified bias. ``stabilize``
    (core.py) adds 1e-6 sign(d), sign(0) = +1, to every denominator. ReLU is ``Pass`` in the
    built-in composites (relevance passes unchanged), average pooling ``Norm`` (the z-rule),
    max pooling the plain gradient (winner-take-all; tied maxima: all to the first in row-major
    window order, torch's gradient, which the profile's ``maxpool_ties="first"`` models), BatchNorm merged into the
    preceding linear layer by ``canonizers.SequentialMergeBatchNorm``. The output relevance is
    what the caller passes as the output gradient; the audit passes f_c(x) at the target.
captum 0.9.0 (``captum/attr/_utils/lrp_rules.py``, ``captum/attr/_core/lrp.py``; same in 0.8)
    ``PropagationRule`` hooks divide the upper relevance by z' + 1e-9 sign(z') (sign(0) = +1),
    z' the layer output with modified weights and the *unmodified* bias, and multiply the
    gradient by the input. The top relevance is the output gradient 1 at the target, divided by
    the modified z'_c of the last layer, and the input relevance is finally multiplied by f_c(x):
    overall R_top = f_c(x) through the modified z'. ReLU passes relevance unchanged, max pooling
    is the epsilon rule on the max (winner-take-all, times x_max / (x_max + 1e-9): a relative
    1e-9 / x_max that the reference's exact winner-take-all does not have; ties to the first
    maximum, ``maxpool_ties="first"``), BatchNorm2d is *not*
    merged (its own epsilon rule), BatchNorm1d and Flatten have no rule (the audit gives Flatten
    a pass-through rule).

Graphs (residual networks): zennit's users route a skip connection's sum through a
``zennit.layer.Sum`` (its ResNet canonizer does this to torchvision's blocks), which its
composites give the ``Norm`` rule, R_k = a_k / stab(sum_k a_k) R; captum's users write it as an
``Addition_Module``, which gets captum's ``EpsilonRule``, the same split with captum's 1e-9.
Both are the derived proportional split ``add_z`` under the library's conventions (stabiliser
everywhere; ``Profile.add``).
zennit merges each batch norm into the linear node it reads (``canonizers.NamedMergeBatchNorm``
with explicit pairs: ``SequentialMergeBatchNorm`` only sees module order), captum merges none
(``Profile.library_graph``). A functional ``+`` is invisible to both: every addend receives the
sum's whole relevance.

LRP-epsilon: both libraries have a single stabiliser on an epsilon layer, the rule's epsilon
(zennit's ``Epsilon(epsilon)`` calls ``stabilize(z, epsilon)``, captum's ``EpsilonRule`` sets its
``STABILITY_FACTOR``); their profiles say so with ``Conventions(epsilon_stabilises=True)``, so the
library's epsilon is ours, any epsilon > 0 (1e-9 too, below the other layers' 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from lrp_num.engine.composites import ADD_RULE
from lrp_num.engine.conventions import DTD, Conventions
from lrp_num.errors import UnknownRuleError


@dataclass(frozen=True)
class RuleMapping:
    """One rule of a library, in our terms.

    Attributes
    ----------
    rule : str
        Our name, what ``--rule`` and composites use (``"zplus"``, ``"gamma"``, ...).
    library_rule : str
        The library's class, e.g. ``"zennit.rules.ZPlus"``.
    reference_rule : str
        The derivation that reproduces the library under the profile's conventions.
    dtd_rule : str
        The deep Taylor / paper derivation it is compared with (under DTD conventions).
    defaults : mapping
        The library's default parameters, by our parameter names.
    source : str
        Where in the library's source the behaviour is implemented.
    note : str
        What differs from the derivation, in one sentence.
    """

    rule: str
    library_rule: str
    reference_rule: str
    dtd_rule: str
    defaults: Mapping[str, float] = field(default_factory=dict)
    source: str = ""
    note: str = ""


@dataclass(frozen=True)
class Profile:
    """A library version's conventions and rule mappings (see the module docstring)."""

    name: str
    library: str
    version: str
    conventions: Conventions
    rules: Mapping[str, RuleMapping]
    sources: tuple[str, ...]
    passes: str
    library_network: Callable | None = None
    """Network -> the network the library actually explains (None: the same)."""
    add: RuleMapping | None = None
    """What the library does at an Add node (graphs), routed as :attr:`addition` sets it up."""
    addition: str = "functional"
    """How the library's users write a residual sum (:data:`lrp_num.io.torch_twin.ADDITIONS`)."""
    library_graph: Callable | None = None
    """Graph -> the graph the library actually explains, node names kept (None: the same)."""
    batch_norm_rule: str | None = None
    """Our rule reproducing the library at a batch norm it does not merge (None: not modelled)."""
    model_error: float = 0.0
    """Relative deviation (of a layer's max |R|) up to which the profile reproduces the library
    beyond rounding where it changes the network (:attr:`library_network`,
    :attr:`library_graph`): what it leaves unmodelled. The audit adds it to the rounding bound."""
    single_eps: bool = False
    """The library has one eps for every stabiliser and its epsilon rule (autoLRP): the rule's
    epsilon must be the conventions' eps, and the reference rule takes no epsilon of its own."""
    library_layers: Callable | None = None
    """(Sequential, plan, profile) -> (the Sequential the library explains, its plan, our folded
    layer index -> its layer index), where the library explains other layers than ours (captum:
    batch norms as layers of their own). None: :attr:`library_network` (or the network) with the
    same plan and indices."""

    def explained(self, network, plan: Mapping) -> tuple:
        """(network, plan, index map) of what the library explains; see :attr:`library_layers`."""
        if self.library_layers is not None:
            return self.library_layers(network, plan, self)
        explained = self.library_network(network) if self.library_network else network
        return explained, plan, {k: k for k in range(len(network.layers) + 1)}

    def rule(self, name: str) -> RuleMapping:
        """The mapping of our rule ``name``; UnknownRuleError names what the library offers."""
        try:
            return self.rules[name]
        except KeyError:
            raise UnknownRuleError(f"{self.library} {self.version} has no counterpart of rule {name!r}; "
                                   f"it offers: {', '.join(self.rules)}") from None

    def reference_parameters(self, mapping: RuleMapping, parameters: Mapping[str, float]) -> dict:
        """Parameters for ``mapping.reference_rule`` that reproduce the library's run."""
        chosen = {**mapping.defaults, **parameters}
        if mapping.rule == "epsilon" and self.single_eps:
            if chosen.get("epsilon", self.conventions.eps) != self.conventions.eps:
                raise UnknownRuleError(f"{self.library} {self.version} uses one eps ({self.conventions.eps:g}) for "
                                       "every stabiliser and its epsilon rule; the audit runs it at that value: "
                                       "omit --epsilon")
            return {}
        if mapping.rule == "epsilon" and self.conventions.stabilise == "everywhere" \
                and not self.conventions.epsilon_stabilises:
            # one library stabiliser = rule epsilon + convention eps (under "zero" the
            # convention's eps only replaces an exactly zero denominator: nothing to subtract)
            chosen["epsilon"] = chosen["epsilon"] - self.conventions.eps
        return chosen


def zennit_merged_network(network):
    """The network zennit 0.5.1 explains after ``SequentialMergeBatchNorm``.

    zennit folds each BatchNorm into the layer before it and then sets the BatchNorm's running
    mean, running variance, weight and bias to 0, 1, 1, 0 (``canonizers.MergeBatchNorm``); the
    module still divides by sqrt(1 + eps_bn), so every merged BatchNorm leaves a factor
    1 / sqrt(1 + eps_bn) (about 1 - 5e-6 for PyTorch's default eps 1e-5). This network has that
    factor folded in as a second, otherwise neutral BatchNorm. (zennit's repository later sets
    ``batch_norm.eps = 0`` in ``merge_batch_norm``; a profile for a later version drops this.)
    """
    import numpy as np

    from lrp_num.layers import BatchNorm
    from lrp_num.engine.network import Sequential

    layers = []
    for layer in network.source_layers:
        layers.append(layer)
        if isinstance(layer, BatchNorm):
            n = layer.n_features
            layers.append(BatchNorm(np.ones(n), np.zeros(n), np.zeros(n), np.ones(n), eps=layer.eps))
    if len(layers) == len(network.source_layers):
        return network
    return Sequential(layers, input_shape=network.input_shape)


def zennit_merged_graph(graph):
    """The graph zennit 0.5.1 explains after merging its batch norms with
    ``canonizers.NamedMergeBatchNorm`` (one (linear, batch norm) pair per BatchNorm that the
    graph folds): as :func:`zennit_merged_network`, each merged batch norm still divides by
    sqrt(1 + eps_bn), which this graph folds in by scaling that BatchNorm's gamma and beta."""
    import numpy as np

    from lrp_num.engine.graph import Graph, Node
    from lrp_num.layers import BatchNorm

    if not graph.folded:
        return graph
    nodes = []
    for node in graph.source_nodes:
        layer = node.operation
        if node.name in graph.folded:
            factor = 1.0 / np.sqrt(1.0 + layer.eps)
            layer = BatchNorm(layer.gamma * factor, layer.beta * factor, layer.mean, layer.var, eps=layer.eps)
        nodes.append(Node(node.name, layer, node.inputs))
    return Graph(nodes, input_shape=graph.input_shape, output=graph.source_output, input_name=graph.input_name)


def captum_unmerged_graph(graph):
    """The graph captum 0.9 explains: it never merges a BatchNorm2d but gives it an EpsilonRule
    of its own (captum/attr/_core/lrp.py, SUPPORTED_LAYERS_WITH_RULES), so every batch norm
    (and per-channel affine node) becomes the 1x1 depthwise convolution it computes, w_c = s_c,
    b_c = t_c, under the same node name, which the graph does not fold."""
    import numpy as np

    from lrp_num.layers.affine import affine_from_batchnorm
    from lrp_num.engine.graph import Graph, Node
    from lrp_num.layers import BatchNorm, ChannelAffine, Conv2d

    shapes = dict(graph.shapes or {})
    nodes, changed = [], False
    for node in graph.source_nodes:
        layer = node.operation
        shapes.setdefault(node.name, shapes.get(node.inputs[0], ()))  # a folded batch norm
        if isinstance(layer, (BatchNorm, ChannelAffine)) and len(shapes[node.inputs[0]]) == 3:
            scale, shift = (affine_from_batchnorm(layer) if isinstance(layer, BatchNorm)
                            else (layer.scale, layer.shift))
            layer = Conv2d(np.asarray(scale).reshape(-1, 1, 1, 1), np.asarray(shift), groups=len(scale))
            changed = True
        nodes.append(Node(node.name, layer, node.inputs))
    if not changed:
        return graph
    return Graph(nodes, input_shape=graph.input_shape, output=graph.source_output, input_name=graph.input_name)


def captum_unmerged_network(network, plan: Mapping, profile: "Profile") -> tuple:
    """The Sequential captum 0.9 explains: it never merges a batch norm but gives it an
    EpsilonRule of its own (captum/attr/_core/lrp.py, SUPPORTED_LAYERS_WITH_RULES), so each
    BatchNorm becomes the linear layer it computes, y_c = s_c x_c + t_c (a 1x1 depthwise
    Conv2d on images, a diagonal Dense on vectors), with ``profile.batch_norm_rule`` (lrp0: with
    captum's bias and stabiliser conventions, its EpsilonRule at 1e-9). Returns that network,
    the plan on it and our folded layer index -> its layer index."""
    import numpy as np

    from lrp_num.engine.composites import LayerRule
    from lrp_num.engine.network import Sequential
    from lrp_num.layers import BatchNorm, Conv2d, Dense
    from lrp_num.layers.affine import affine_from_batchnorm

    if not any(isinstance(layer, BatchNorm) for layer in network.source_layers):
        return network, plan, {k: k for k in range(len(network.layers) + 1)}
    layers, explained_plan, index_of = [], {}, {}
    for layer in network.source_layers:
        if isinstance(layer, BatchNorm):
            scale, shift = affine_from_batchnorm(layer)
            if isinstance(layers[-1], Conv2d):
                layer = Conv2d(scale.reshape(-1, 1, 1, 1), shift, groups=len(scale))
            else:
                layer = Dense(np.diag(scale), shift)
            explained_plan[len(layers)] = LayerRule(profile.batch_norm_rule or "lrp0", {})
        else:
            folded = len(index_of)
            index_of[folded] = len(layers)
            if folded in plan:
                explained_plan[len(layers)] = plan[folded]
        layers.append(layer)
    index_of[len(index_of)] = len(layers)
    return Sequential(layers, input_shape=network.input_shape), explained_plan, index_of


_ZENNIT_RULES = "zennit/rules.py"
ZENNIT = Profile(
    name="zennit-0.5.1",
    library="zennit",
    version="0.5.1",
    conventions=Conventions(bias="zennit", eps=1e-6, stabilise="everywhere", by_sign=True, epsilon_stabilises=True,
                            maxpool_ties="first"),
    rules={m.rule: m for m in (
        RuleMapping("zplus", "zennit.rules.ZPlus", "zplus_split", "zplus", {}, f"{_ZENNIT_RULES}: ZPlus",
                    "inputs split by sign (x^+ w^+ + x^- w^-); bias b^+ in the denominator"),
        RuleMapping("epsilon", "zennit.rules.Epsilon", "epsilon", "epsilon", {"epsilon": 1e-6},
                    f"{_ZENNIT_RULES}: Epsilon", "the paper's rule: x w with b, eps sign(z)"),
        RuleMapping("gamma", "zennit.rules.Gamma", "gamma_split", "gamma", {"gamma": 0.25},
                    f"{_ZENNIT_RULES}: Gamma",
                    "inputs split by sign; for z_j > 0 b + gamma b^+ in the denominator, for z_j < 0 the "
                    "weight parts swap (gamma_split_negative, b + gamma b^-); z_j = 0 drops R_j (by_sign)"),
        RuleMapping("alphabeta", "zennit.rules.AlphaBeta", "alphabeta", "alphabeta",
                    {"alpha": 2.0, "beta": 1.0}, f"{_ZENNIT_RULES}: AlphaBeta",
                    "b^+ and b^- in the positive and negative denominators"),
        RuleMapping("zbox", "zennit.rules.ZBox", "zbox", "zbox", {}, f"{_ZENNIT_RULES}: ZBox",
                    "bias cancels: the derivation"),
        RuleMapping("w2", "zennit.rules.WSquare", "w2", "w2", {}, f"{_ZENNIT_RULES}: WSquare",
                    "b^2 in the denominator"),
        RuleMapping("flat", "zennit.rules.Flat", "flat", "flat", {}, f"{_ZENNIT_RULES}: Flat",
                    "no bias: the derivation"),
    )},
    sources=("zennit/rules.py", "zennit/core.py (stabilize, BasicHook)",
             "zennit/composites.py (layer_map_base)", "zennit/canonizers.py (SequentialMergeBatchNorm)"),
    passes="ReLU: Pass; AvgPool: Norm (z-rule); MaxPool: gradient; BatchNorm: merged by canonizer",
    library_network=zennit_merged_network,
    # a merged BatchNorm's leftover 1 / sqrt(1 + eps_bn) acts after zennit's stabiliser, the
    # profile folds it into the layer before it: eps_stab (1 - 1 / sqrt(1 + eps_bn)) / |d_j|,
    # about 5e-12 / |d_j| relative (measured 1.6e-12 on digits-cnn, 2.7e-10 on a small ResNet)
    model_error=1e-8,
    add=RuleMapping("add", "zennit.layer.Sum with zennit.rules.Norm", "add_z", ADD_RULE, {},
                    "zennit/layer.py: Sum; zennit/rules.py: Norm; zennit/composites.py: layer_map_base; "
                    "zennit/torchvision.py: ResNetBasicBlockCanonizer",
                    "addends stacked on a new last axis and summed by a Sum module; Norm splits "
                    "R_k = a_k / stab(sum_k a_k) R with stab(d) = d + 1e-6 sign(d): the z-rule with a stabiliser"),
    addition="zennit",
    library_graph=zennit_merged_graph,
)

_CAPTUM_RULES = "captum/attr/_utils/lrp_rules.py"
CAPTUM = Profile(
    name="captum-0.9.0",
    library="captum",
    version="0.9.0",
    conventions=Conventions(bias="captum", eps=1e-9, stabilise="everywhere", epsilon_stabilises=True, maxpool_ties="first"),
    rules={m.rule: m for m in (
        RuleMapping("epsilon", "captum.attr._utils.lrp_rules.EpsilonRule", "epsilon", "epsilon",
                    {"epsilon": 1e-9}, f"{_CAPTUM_RULES}: EpsilonRule", "the paper's rule: x w with b"),
        RuleMapping("zplus", "captum.attr._utils.lrp_rules.Alpha1_Beta0_Rule", "zplus", "zplus", {},
                    f"{_CAPTUM_RULES}: Alpha1_Beta0_Rule",
                    "x w^+ without input split; the full bias b in the denominator"),
        RuleMapping("gamma", "captum.attr._utils.lrp_rules.GammaRule", "gamma", "gamma", {"gamma": 0.25},
                    f"{_CAPTUM_RULES}: GammaRule", "x (w + gamma w^+); the full bias b in the denominator"),
    )},
    sources=("captum/attr/_utils/lrp_rules.py (PropagationRule, EpsilonRule, GammaRule, Alpha1_Beta0_Rule)",
             "captum/attr/_core/lrp.py (LRP.attribute, SUPPORTED_LAYERS_WITH_RULES)"),
    passes=("ReLU: relevance passes unchanged; MaxPool/AvgPool: EpsilonRule; BatchNorm2d: its own "
            "EpsilonRule (not merged, modelled as a layer of its own); top relevance f_c divided by the modified z'"),
    add=RuleMapping("add", "captum Addition_Module with captum.attr._utils.lrp_rules.EpsilonRule", "add_z",
                    ADD_RULE, {},
                    "captum/attr/_utils/custom_modules.py: Addition_Module; captum/attr/_core/lrp.py: "
                    "SUPPORTED_LAYERS_WITH_RULES; captum/attr/_utils/lrp_rules.py: PropagationRule",
                    "two addends; the output hook divides R by (a_1 + a_2) + 1e-9 sign, the input hooks "
                    "multiply by each addend: R_k = a_k / stab(a_1 + a_2) R"),
    addition="captum",
    library_graph=captum_unmerged_graph,
    batch_norm_rule="lrp0",
    library_layers=captum_unmerged_network,
)

_AUTOLRP_RULES = "autolrp/backward/rules.py"
AUTOLRP = Profile(
    name="autoLRP-0.2.0",
    library="autoLRP",
    version="0.2.0",
    conventions=Conventions(bias="magnitude", eps=1e-11, stabilise="everywhere"),
    rules={m.rule: m for m in (
        RuleMapping("epsilon", "autolrp.backward.rules.epsilon", "lrp0", "epsilon", {"epsilon": 1e-11},
                    f"{_AUTOLRP_RULES}: epsilon; autolrp/backward/install.py: install_matmul, install_conv",
                    "x w over z without its bias, + eps sign, eps = LRPConfig.eps (1e-11) for every stabiliser; "
                    "the bias first keeps |b| / (|z - b| + |b| + eps) of R_j (apply_bias_split)"),
        RuleMapping("zplus", "autolrp.backward.rules.zplus", "zplus_split", "zplus", {},
                    f"{_AUTOLRP_RULES}: zplus",
                    "x^+ w^+ + x^- w^- without bias, stabilised by eps everywhere, after the bias's magnitude share"),
        RuleMapping("alphabeta", "autolrp.backward.rules.alpha_beta", "alphabeta", "alphabeta",
                    {"alpha": 2.0, "beta": 1.0}, f"{_AUTOLRP_RULES}: alpha_beta",
                    "(x w)^+ and (x w)^- groups without bias, after the bias's magnitude share"),
    )},
    sources=("autolrp/backward/rules.py (PRODUCT_RULES)", "autolrp/backward/lrp_utils.py (stabilize, apply_bias_split)",
             "autolrp/backward/install.py (install_matmul, install_conv)", "autolrp/nodes.py (ROUTING_NODES, "
             "PASSTHROUGH_NODES)", "autolrp/backward/engine.py (_backward: unit seed)"),
    passes=("ReLU: passthrough; max pooling: the plain gradient (winner-take-all); average and sum pooling: the "
            "plain gradient, R / k to each input (the reference keeps the z-rule at pooling layers: not modelled, "
            "flagged at the pooling layer); BatchNorm: passthrough (not modelled, flagged); unit seed at the output "
            "(the adapter scales by f_c)"),
    single_eps=True,
)
"""autoLRP 0.2.0 (LRP on the PyTorch autograd graph). Its linear-layer hooks split the bias off
by magnitude first (``apply_bias_split``: the bias keeps |b_j| / (|z_j - b_j| + |b_j| + eps) of
R_j) and then run the rule on the layer without its bias, every denominator stabilised by
d + eps sign(d), sign(0) = +1, with the one ``LRPConfig.eps`` (1e-11). Its ``gamma`` selects the
group by the sign of z_j *without* the bias and adds no bias to either group, which no derived
rule here reproduces, so the profile does not offer gamma."""

_BACH = "Bach et al. 2015, PLOS ONE 10(7) e0130140"
BIAS_NEURON = Profile(
    name="bias-neuron (Bach et al. 2015)",
    library="bias-neuron",
    version="2015",
    conventions=Conventions(bias="neuron", eps=1e-12, stabilise="zero"),
    rules={m.rule: m for m in (
        RuleMapping("epsilon", "LRP-epsilon, Eq. (58)", "epsilon", "epsilon", {"epsilon": 0.01},
                    f"{_BACH}, Sec. 4.1, Eq. (58)",
                    "z_ij = x_i w_ij, z_j = sum_i z_ij + b_j: the bias neuron keeps b_j / (z_j + eps) R_j"),
        RuleMapping("alphabeta", "LRP-alpha-beta, Eq. (60)", "alphabeta", "alphabeta",
                    {"alpha": 2.0, "beta": 1.0}, f"{_BACH}, Sec. 4.1, Eq. (60)",
                    "the bias neuron joins z_j^+ as b_j^+ and z_j^- as b_j^-; no stabiliser"),
        RuleMapping("zplus", "LRP-alpha-beta with alpha = 1, beta = 0, Eq. (60)", "alphabeta", "zplus",
                    {"alpha": 1.0, "beta": 0.0}, f"{_BACH}, Sec. 4.1, Eq. (60)",
                    "(x w)^+ over sum_i (x w)^+ + b_j^+: z+ with the bias neuron's b_j^+"),
    )},
    sources=(f"{_BACH}, Sec. 4.1 (Eqs. 56, 58, 60)",
             "Montavon et al. 2019, LNCS 11700, Sec. 10.2.1 (the bias as a neuron)"),
    passes="ReLU: relevance passes unchanged; pooling: the z-rule; a zero denominator (0 / 0) passes nothing",
)
"""The "bias as a neuron" convention of Bach et al. (2015): the bias is an extra input neuron with
activation 1 and weight b_j, so it takes its share of every denominator (b_j^+ and b_j^- in the
two groups of alpha-beta, b_j in z_j for epsilon) and keeps its relevance. Only exact zero
denominators are stabilised (the paper's alpha-beta has no stabiliser; LRP-epsilon has its own).
It is a convention, not a library: ``lrp audit --attribution`` compares with it, ``--library``
cannot run it."""

#: libraries whose own LRP the audit runs (``--library``)
PROFILES: dict[str, Profile] = {"zennit": ZENNIT, "captum": CAPTUM, "autolrp": AUTOLRP}
#: conventions a saved attribution is also compared with (no library to run)
CONVENTION_PROFILES: dict[str, Profile] = {"bias-neuron": BIAS_NEURON}
#: everything ``lrp audit --attribution`` compares with by default
ATTRIBUTION_PROFILES: dict[str, Profile] = {**PROFILES, **CONVENTION_PROFILES}


def get_profile(library: str, runnable: bool = False) -> Profile:
    """The profile named ``library`` (``"zennit"``, ``"captum"``, ``"bias-neuron"``).

    With ``runnable=True`` only libraries the audit can run (:data:`PROFILES`).
    """
    known = PROFILES if runnable else ATTRIBUTION_PROFILES
    try:
        return known[library]
    except KeyError:
        raise UnknownRuleError(f"no {'library' if runnable else 'profile'} {library!r}; "
                               f"known: {', '.join(known)}") from None


__all__ = ["ATTRIBUTION_PROFILES", "AUTOLRP", "BIAS_NEURON", "CAPTUM", "CONVENTION_PROFILES", "DTD", "PROFILES", "Profile",
           "RuleMapping", "ZENNIT", "get_profile"]


# ---- transformers: LXT 2.1 (lrp audit --library lxt) ------------------------------------------

@dataclass(frozen=True)
class OpRule:
    """What one LXT variant does at one kind of op of a transformer, and what it conserves.

    Attributes
    ----------
    kind : str
        ``linear``, ``layer_norm``, ``gelu``, ``softmax``, ``matmul``, ``scale``, ``add``,
        ``add_constant``, ``mean``.
    library_rule : str
        The LXT function or patch that implements it.
    conserves : bool
        Whether the rule passes on all relevance arriving at the op's output to its data inputs
        (up to its stabiliser); False where the derivation gives an absorbed term.
    absorbed : str
        What is absorbed where ``conserves`` is False (or "" where nothing is).
    source : str
        File in LXT 2.1 and the paper's equation.
    """

    kind: str
    library_rule: str
    conserves: bool
    absorbed: str = ""
    source: str = ""


@dataclass(frozen=True)
class TransformerProfile:
    """One LXT variant (``--rule`` of ``lrp audit --library lxt``): its rule per op kind."""

    name: str
    library: str
    version: str
    paper: str
    ops: Mapping[str, OpRule]
    stabiliser: str
    #: the reference's composite for it (:data:`lrp_num.reference.composites.COMPOSITE_DEFINITIONS`)
    reference: str | None = "attnlrp"
    #: LXT's conventions where they differ from that composite, restated as reference rules:
    #: "linear", "matmul", "add", "patch_embed" -> (rule, parameters)
    reference_rules: Mapping[str, tuple] = field(default_factory=dict)
    #: what the graph cannot restate (a stabiliser on an op the graph folds away), x max |R_ref|
    model_error: float = 0.0
    #: op kinds below which the reference has no rule for the variant: the comparison stops at the
    #: first tensor such an op reads
    reference_stops_at: tuple[str, ...] = ()
    #: graph tensor suffix -> the factor by which the variant's relevance there is a multiple of the
    #: reference's by construction (compared after dividing by it)
    relevance_scale: Mapping[str, float] = field(default_factory=dict)
    #: the convention differences, as the report states them
    conventions: tuple[str, ...] = ()


_LXT_EXPLICIT = "lxt/explicit/functional.py"
_LXT_EFFICIENT = "lxt/efficient/rules.py, lxt/efficient/patches.py"
_CONSTANT = "the constant addend (the position embedding) keeps its share p / (x + p) R"
_BIAS = "the bias b_j keeps b_j / (z_j + eps) R_j (epsilon rule with the bias in the denominator)"

LXT_ATTNLRP = TransformerProfile(
    name="attnlrp", library="lxt", version="2.1",
    paper="Achtibat et al. 2024, AttnLRP, ICML (Prop. 3.1, 3.3, 3.4, Eqs. 8-9)",
    ops={op.kind: op for op in (
        OpRule("linear", "linear_epsilon (eps 1e-6); patch conv: rules.epsilon_lrp (eps 1e-8)", False, _BIAS,
               f"{_LXT_EXPLICIT}: linear_epsilon_fn; lxt/explicit/rules.py: epsilon_lrp_fn; Eq. 8"),
        OpRule("layer_norm", "layer_norm: the standard deviation detached, epsilon on the rest", False,
               "the shift beta keeps beta / (y + eps) R (Prop. 3.4 with the affine part as a linear layer)",
               f"{_LXT_EXPLICIT}: layer_norm_grad_fn"),
        OpRule("gelu", "rules.identity", True, "", "lxt/explicit/rules.py: identity_fn; Eq. 9 (identity rule)"),
        OpRule("softmax", "softmax: R_i = x_i (R_i - s_i sum_j R_j)", False,
               "the bias term of the expansion at x: sum_j R_j - sum_i x_i (R_i - s_i sum_j R_j)",
               f"{_LXT_EXPLICIT}: softmax_fn; Prop. 3.1"),
        OpRule("matmul", "matmul: epsilon, then each factor half (uniform rule)", True, "",
               f"{_LXT_EXPLICIT}: matmul_fn; Prop. 3.3"),
        OpRule("scale", "mul2 by a constant: all relevance to the tensor", True, "", f"{_LXT_EXPLICIT}: mul2_fn"),
        OpRule("add", "add2: epsilon on a sum", True, "", f"{_LXT_EXPLICIT}: add2_tensors_fn; Eq. 8"),
        OpRule("add_constant", "add2 with a parameter addend", False, _CONSTANT, f"{_LXT_EXPLICIT}: add2_tensors_fn"),
        OpRule("mean", "mean: epsilon on the mean", True, "", f"{_LXT_EXPLICIT}: mean_fn"),
    )},
    stabiliser="z + eps (eps added, not eps sign(z): a z near -eps is amplified, not damped)",
    reference_rules={"linear": ("epsilon", {"epsilon": 1e-6, "signed": 0.0}),
                     "matmul": ("matmul_epsilon", {"epsilon": 5e-9, "signed": 0.0}),
                     "add": ("add_epsilon", {"epsilon": 1e-8, "signed": 0.0}),
                     "norm": ("norm_cp", {"stabiliser": 1e-6}),
                     "patch_embed": ("epsilon", {"epsilon": 1e-8, "signed": 0.0})},
    model_error=1e-4,
    conventions=("LXT's stabiliser is d + eps whatever d's sign (ours: d + eps sign(d)); its linear layers use "
                 "eps 1e-6, add2 1e-8 (our attnlrp: add_z, none) and matmul R / (2 C + 1e-8), i.e. eps 5e-9 on "
                 "C (ours: 1e-6): the reference runs with LXT's values and its unsigned stabiliser",
                 "the patch convolution (eps 1e-8) and the position embedding are one Dense in the graph: "
                 "the reference gives it eps 1e-8",
                 "LXT's layer_norm divides by y + 1e-6 (our norm_cp: by y): the reference restates it "
                 "(stabiliser 1e-6)",
                 "LXT's mean pooling (R / (sum x + 1e-6)) has no node in the graph (the mean is folded into the "
                 "head): the bound allows 1e-4 max|R_ref| for it (up to 1.8e-5 of max|R_ref| measured on "
                 "the 8 stored digits-vit test images)"),
)
"""AttnLRP with LXT's explicit autograd functions (backward returns relevance)."""

LXT_ATTNLRP_EFFICIENT = TransformerProfile(
    name="attnlrp-efficient", library="lxt", version="2.1",
    paper="Achtibat et al. 2024, AttnLRP, ICML (gradient x input form)",
    ops={op.kind: op for op in (
        OpRule("linear", "the gradient (q, k: divide_gradient 4; v: divide_gradient 2)", False,
               "the bias b_j keeps b_j / z_j R_j (gradient x input)", f"{_LXT_EFFICIENT}: wrap_attention_forward"),
        OpRule("layer_norm", "layer_norm_forward: stop_gradient on the standard deviation", False,
               "the shift beta keeps beta / y R", f"{_LXT_EFFICIENT}: layer_norm_forward"),
        OpRule("gelu", "identity_rule_implicit", True, "", f"{_LXT_EFFICIENT}: identity_rule_implicit_fn"),
        OpRule("softmax", "the gradient (gradient x input at x)", False, "the bias term of Prop. 3.1",
               "Prop. 3.1"),
        OpRule("matmul", "the gradient; the uniform halves come from divide_gradient at q, k, v", False,
               "gradient x input gives each factor all of R (2 R in total); the halving happens at q, k, v",
               f"{_LXT_EFFICIENT}: wrap_attention_forward"),
        OpRule("scale", "the gradient", True, "", ""),
        OpRule("add", "the gradient (z-rule on a sum)", True, "", ""),
        OpRule("add_constant", "the gradient", False, _CONSTANT, ""),
        OpRule("mean", "the gradient", True, "", ""),
    )},
    stabiliser="none (gradient x input)",
    reference_rules={"linear": ("epsilon", {"epsilon": 0.0}), "matmul": ("matmul_epsilon", {"epsilon": 0.0}),
                     "add": ("add_z", {})},
    model_error=1e-6,
    relevance_scale={"attn.scores": 2.0, "attn.attention": 2.0, "attn.v_heads": 2.0, "attn.q_heads": 4.0,
                     "attn.k_heads": 4.0},
    conventions=("gradient x input has no stabiliser and keeps the bias in the denominator: the reference runs "
                 "epsilon 0 on linear nodes and the matrix products (our attnlrp: epsilon 1e-6)",
                 "the uniform rule is applied as divide_gradient at q, k (4) and v (2), below the products: "
                 "between them and q, k, v LXT carries 2 R (scores, attention weights, v) and 4 R (q, k); "
                 "the audit divides by these factors (relevance_scale) and compares at q, k, v's inputs as is",
                 "identity_rule_implicit divides g(x) by x + 1e-10: the bound allows 1e-6 max|R_ref| for it (up to "
                 "5.6e-8 measured on the 8 stored digits-vit test images)"),
)
"""AttnLRP as ``lxt.efficient`` patches a model: gradient x input with three modifications."""

LXT_CPLRP = TransformerProfile(
    name="cplrp", library="lxt", version="2.1",
    paper="Ali et al. 2022, XAI for transformers: better explanations through conservative propagation, ICML",
    ops={op.kind: op for op in (
        OpRule("linear", "the gradient; q and k detached (stop_gradient)", False,
               "the bias b_j keeps b_j / z_j R_j (gradient x input)",
               f"{_LXT_EFFICIENT}: cp_multi_head_attention_forward"),
        OpRule("layer_norm", "layer_norm_forward: stop_gradient on the standard deviation", False,
               "the shift beta keeps beta / y R", f"{_LXT_EFFICIENT}: layer_norm_forward"),
        OpRule("gelu", "identity_rule_implicit", True, "", f"{_LXT_EFFICIENT}: identity_rule_implicit_fn"),
        OpRule("softmax", "no relevance: the attention weights are constants", True, "",
               f"{_LXT_EFFICIENT}: cp_multi_head_attention_forward"),
        OpRule("matmul", "the gradient to v only (A constant); q K^T gets none (q, k detached)", True, "",
               "Ali et al. 2022, Sec. 3; derivations/matmul_cp.py"),
        OpRule("scale", "the gradient", True, "", ""),
        OpRule("add", "the gradient (z-rule on a sum)", True, "", ""),
        OpRule("add_constant", "the gradient", False, _CONSTANT, ""),
        OpRule("mean", "the gradient", True, "", ""),
    )},
    stabiliser="none (gradient x input)",
    reference="cplrp",
    reference_rules={"linear": ("epsilon", {"epsilon": 0.0}), "matmul": ("matmul_cp", {"epsilon": 0.0}),
                     "add": ("add_z", {})},
    model_error=1e-6,
    conventions=("identity_rule_implicit divides g(x) by x + 1e-10: the bound allows 1e-6 max|R_ref| for it (up to "
                 "5.6e-8 measured on the 8 stored digits-vit test images)",
                 "gradient x input has no stabiliser: the reference runs epsilon 0 on linear nodes and on A V "
                 "(our cplrp: epsilon 1e-6); A V holds the attention weights constant (matmul_cp: all of R to "
                 "v, none to A, so none to the softmax, Q K^T, q or k), LayerNorm norm_cp, GELU the identity rule",),
)
"""CP-LRP as LXT applies it to torch's ViT (``lxt/efficient/models/vit_torch.py``)."""

#: ``lrp audit --library lxt --rule NAME``
LXT_PROFILES: dict[str, TransformerProfile] = {p.name: p for p in (LXT_ATTNLRP, LXT_ATTNLRP_EFFICIENT, LXT_CPLRP)}

__all__ += ["LXT_ATTNLRP", "LXT_ATTNLRP_EFFICIENT", "LXT_CPLRP", "LXT_PROFILES", "OpRule", "TransformerProfile"]
