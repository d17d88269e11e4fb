"""The pytest plugin of lrp-toolkit: the reference as a fixture, its precision as an option.

Registered through the entry point ``lrp_toolkit`` in the ``pytest11`` group, so installing
lrp-toolkit makes it available in every pytest run (``-p no:lrp_toolkit`` turns it off; without
the installed entry point, ``-p lrp_num.testing.pytest_plugin`` turns it on):

* ``--lrp-dps D``: the digits of the mpmath reference for the whole run (an integer from 20 to
  10000; default :data:`lrp_num.testing.reference_check.DEFAULT_DPS`), used by every
  :func:`~lrp_num.testing.assert_matches_reference` that passes no ``dps=``;
* fixture ``lrp_dps``: that number;
* fixture ``lrp_reference``: a :class:`Reference` whose ``assert_matches(R, model, x, ...)`` is
  :func:`~lrp_num.testing.assert_matches_reference` at that precision and whose
  ``explain(model, x, ...)`` returns the reference relevance as float64.

The plugin imports neither torch nor hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from lrp_num.testing.reference_check import DEFAULT_DPS, DEFAULTS, as_network, assert_matches_reference


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lrp-toolkit", "lrp-toolkit's reference")
    group.addoption("--lrp-dps", type=int, default=None, metavar="D",
                    help=f"digits of the mpmath reference of lrp_num.testing (20 to 10000; default {DEFAULT_DPS})")


def pytest_configure(config: pytest.Config) -> None:
    from lrp_num.checks import check_dps
    from lrp_num.errors import PrecisionError

    dps = config.getoption("--lrp-dps", default=None)
    if dps is None:
        return
    try:
        dps = check_dps(dps)
    except PrecisionError as error:
        raise pytest.UsageError(f"--lrp-dps: {error}") from None
    _RESTORE.append(DEFAULTS.dps)
    DEFAULTS.dps = dps


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.getoption("--lrp-dps", default=None) is not None and _RESTORE:
        DEFAULTS.dps = _RESTORE.pop()  # an in-process run (pytester) leaves the default as it was


#: the precision before this run set ``--lrp-dps``
_RESTORE: list[int] = []


def pytest_report_header(config: pytest.Config) -> str:
    return f"lrp-toolkit reference: {DEFAULTS.dps} digits"


@dataclass(frozen=True)
class Reference:
    """The reference at the run's precision (the fixture ``lrp_reference``)."""

    dps: int

    def assert_matches(self, R: Any, model: Any, x: Any, rule: Any = None, composite: Any = None,
                       **options: Any) -> None:
        """:func:`lrp_num.testing.assert_matches_reference` at ``dps`` digits."""
        options.setdefault("dps", self.dps)
        assert_matches_reference(R, model, x, rule, composite, **options)

    def explain(self, model: Any, x: Any, rule: str | None = None, composite: Any = None, target: Any = None,
                **options: Any) -> np.ndarray:
        """The reference relevance of ``x`` (a torch tensor or an array) for ``model`` (a torch
        module or our network), by :func:`lrp_num.reference.explain`, as float64."""
        from lrp_num import reference

        x_np = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        x_np = x_np.astype(np.float64)
        shape = getattr(model, "input_shape", None)
        network = as_network(model, x_np.shape if shape is not None and x_np.shape == tuple(shape) else x_np.shape[1:])
        relevance = reference.explain(network, x_np, rule, composite, target, dps=self.dps, **options)
        return reference.to_float(relevance)


@pytest.fixture
def lrp_dps() -> int:
    """The reference's digits for this run (``--lrp-dps``)."""
    return DEFAULTS.dps


@pytest.fixture
def lrp_reference(lrp_dps: int) -> Reference:
    """The mpmath reference at ``--lrp-dps`` digits: ``lrp_reference.assert_matches(R, model, x,
    rule="zplus", library="zennit")``, ``lrp_reference.explain(model, x, rule="zplus")``."""
    return Reference(lrp_dps)
