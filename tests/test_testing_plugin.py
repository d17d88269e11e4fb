"""The pytest plugin of lrp_num.testing (entry point ``lrp_toolkit``): --lrp-dps and the fixtures."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import numpy  # noqa: F401 - imported before pytester's runs, which drop what they import

import lrp_num.testing.pytest_plugin as plugin
from lrp_num.testing.reference_check import DEFAULT_DPS, DEFAULTS

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent

SUITE = '''
import numpy as np
import lrp_num
from lrp_num.layers import Dense, ReLU
from lrp_num.testing import assert_matches_reference
from lrp_num.testing.reference_check import DEFAULTS

NETWORK = lrp_num.Sequential([Dense(np.array([[1.0, -2.0], [0.5, 1.0]]), np.array([0.1, -0.2])), ReLU(),
                              Dense(np.array([[1.0], [-1.0]]), np.array([0.3]))], input_shape=(2,))
X = np.array([[1.0, 2.0], [0.5, 0.25]])

def test_dps(lrp_dps):
    assert lrp_dps == DEFAULTS.dps == {dps}

def test_reference_fixture(lrp_reference):
    R = lrp_num.explain(NETWORK, X, rule="zplus")
    lrp_reference.assert_matches(R, NETWORK, X, rule="zplus")
    assert np.allclose(lrp_reference.explain(NETWORK, X, rule="zplus"), R, rtol=1e-14)
    assert_matches_reference(R.astype(np.float32), NETWORK, X, rule="zplus")

def test_reference_fixture_fails_a_wrong_rule(lrp_reference):
    R = lrp_num.explain(NETWORK, X, rule="epsilon", epsilon=0.5)
    try:
        lrp_reference.assert_matches(R, NETWORK, X, rule="zplus")
    except AssertionError as failure:
        assert "dps {dps}" in str(failure)
    else:
        raise AssertionError("a wrong rule passed")
'''


def _plugin_arguments() -> list[str]:
    installed = any(entry.value == "lrp_num.testing.pytest_plugin"
                    for entry in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "lrp_num.testing.pytest_plugin"]


def test_the_entry_point_names_the_plugin_module():
    with (ROOT / "pyproject.toml").open("rb") as handle:
        entry_points = tomllib.load(handle)["project"]["entry-points"]["pytest11"]
    assert entry_points == {"lrp_toolkit": "lrp_num.testing.pytest_plugin"}
    for hook in ("pytest_addoption", "pytest_configure", "lrp_reference", "lrp_dps"):
        assert hasattr(plugin, hook)


def test_lrp_dps_option_and_fixtures(pytester):
    pytester.makepyfile(test_downstream=SUITE.replace("{dps}", "44"))
    result = pytester.runpytest_inprocess(*_plugin_arguments(), "--lrp-dps", "44", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["lrp-toolkit reference: 44 digits"])
    assert DEFAULTS.dps == DEFAULT_DPS  # restored after the run


def test_default_dps_without_the_option(pytester):
    pytester.makepyfile(test_downstream=SUITE.replace("{dps}", str(DEFAULT_DPS)))
    result = pytester.runpytest_inprocess(*_plugin_arguments(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_a_bad_lrp_dps_is_a_usage_error(pytester):
    pytester.makepyfile(test_downstream="def test_nothing():\n    pass\n")
    result = pytester.runpytest_inprocess(*_plugin_arguments(), "--lrp-dps", "5", "-p", "no:cacheprovider")
    assert result.ret == 4  # pytest's usage error
    result.stderr.fnmatch_lines(["*--lrp-dps*20*"])
