"""Exception types raised by lrp-toolkit for user mistakes.

Every error that a user can cause (a bad shape, a NaN weight, an unknown rule, a corrupt model
file) is raised as a subclass of :class:`LRPError`, so callers can catch one type. The command
line turns these into a single line on stderr and exit status 2.
"""

from __future__ import annotations


class LRPError(Exception):
    """Base class of every documented lrp-toolkit error."""


class ShapeError(LRPError, ValueError):
    """An array has a shape that does not fit the layer, network or target."""


class KernelArgumentError(LRPError, ValueError):
    """A relevance kernel called with missing or inconsistent arguments (box bounds for z^B,
    an unknown stabilise mode, bias_shares of the wrong length)."""


class NonFiniteError(LRPError, ValueError):
    """A weight, bias or input holds NaN or Inf."""


class MissingBoundsError(LRPError, ValueError):
    """A rule needs the input box (lower, upper) and none was given, or the box cannot apply
    (the layer's input is not the network input, up to Flatten and Identity)."""


class DomainError(LRPError, ValueError):
    """An input lies outside the input domain a rule is derived for: outside the declared box
    l <= x <= h that z^B uses, or negative where a rule derived for the orthant x >= 0 (z+,
    LRP-gamma) is applied."""


class UnknownRuleError(LRPError, KeyError):
    """A rule, composite or convention name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it a plain sentence
        return str(self.args[0]) if self.args else ""


class UnsupportedLayerError(LRPError, TypeError):
    """A layer or model operator that the engine does not support."""


class ModelFileError(LRPError, ValueError):
    """A model file that is missing, corrupt, foreign or of an unknown layout."""


class ConventionFileError(LRPError, ValueError):
    """A convention file (``lrp audit --convention``) that cannot be read, is neither JSON nor
    TOML, or holds an unknown key or a value outside its documented choices."""


class ZeroDenominatorError(LRPError, ZeroDivisionError):
    """A relevance denominator is zero and the stabiliser eps is zero."""


class TargetError(LRPError, IndexError):
    """A target output index out of range, or an output relevance of the wrong shape."""


class MissingDependencyError(LRPError, ImportError):
    """An optional package (e.g. onnx) that a requested feature needs is not installed."""


class OutputPathError(LRPError, ValueError):
    """An output file that cannot be written: the path names a folder, or its folder does not
    exist or is not a folder. Checked before any work, so nothing is written half-way."""


class HeatmapFormatError(LRPError, ValueError):
    """A heatmap file name without an extension, or with one matplotlib cannot write."""


class PrecisionError(LRPError, ValueError):
    """A reference precision ``dps`` that is not an integer in the documented range
    (:data:`lrp_num.checks.MIN_DPS` to :data:`lrp_num.checks.MAX_DPS` decimal digits)."""


class DerivationScopeWarning(UserWarning):
    """A rule applied where its derivation does not reach: relevance arrives at neurons whose
    pre-activation z_j has the sign the rule is not derived for (the generated kernel's constant
    ``Z_SIGN``). Root-point rules on ReLU neurons (z+, w^2, z^B, LRP-0, LRP-gamma, flat) are
    derived for z_j > 0, where the relevance model R_j = c_j max(0, z_j) is active; zennit's
    Gamma is ``gamma_split`` for z_j > 0 and ``gamma_split_negative`` for z_j < 0
    (``Conventions(by_sign=True)`` selects them per neuron). The relevance is still computed
    (the rule's formula extends to the other sign); the warning says that no derivation, root
    point or proof stands behind it there. A warning, not an :class:`LRPError`: explaining a
    negative logit is a legitimate request; turn it into an error with
    ``warnings.simplefilter("error", DerivationScopeWarning)``."""


class GraphError(ShapeError):
    """A graph model that is not a valid directed acyclic graph of named nodes: a cycle, an input
    that no node produces, a duplicate name, addends or concatenated inputs whose shapes do not
    match, an unsupported operation. The message names the node."""
