"""scripts/mutation_check.py: its patches apply to this checkout, a patch that does not apply is
reported as such (never as killed), and the table counts kill rates over applied mutants only.
The mutants themselves are run by hand (see README, Mutation check)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation_check():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["mutation_check"]


def test_every_semantic_mutant_applies_to_this_checkout(mutation_check):
    """A mutant whose old string is gone would be reported "not applied": update it with the code."""
    for mutant in mutation_check.MUTANTS:
        text = (ROOT / mutant.path).read_text()
        assert text.count(mutant.old) == 1, f"{mutant.name}: its old string is not unique in {mutant.path}"
        assert mutant.old != mutant.new


def test_the_mutants_cover_the_defects_the_issue_names(mutation_check):
    names = {mutant.name for mutant in mutation_check.MUTANTS}
    assert {"dropped-clamp", "swapped-box-bounds", "missing-bias-share", "fold-without-beta",
            "fold-variance-squared", "wrong-composite-choice", "ratio-biased",
            "sampling-proof-samples-nothing"} <= names
    assert len(names) == len(mutation_check.MUTANTS)


def test_a_patch_applies_once_or_says_why_not(mutation_check, tmp_path):
    Mutant = mutation_check.Mutant
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "rule.py").write_text("q = x * max(w, 0)\nd = q + b\nd = q + b\n")
    clamp = Mutant("clamp", "dropped clamp", "pkg/rule.py", "max(w, 0)", "w", ())
    assert mutation_check.apply_patch(tmp_path, clamp) is None
    assert (tmp_path / "pkg" / "rule.py").read_text().startswith("q = x * w\n")
    twice = Mutant("bias", "bias", "pkg/rule.py", "d = q + b", "d = q", ())
    assert "found 2 times" in mutation_check.apply_patch(tmp_path, twice)
    gone = Mutant("gone", "gone", "pkg/rule.py", "max(w, 0)", "w", ())
    assert "found 0 times" in mutation_check.apply_patch(tmp_path, gone)
    missing = Mutant("missing", "missing", "pkg/other.py", "a", "b", ())
    assert "does not exist" in mutation_check.apply_patch(tmp_path, missing)


def test_the_table_counts_applied_mutants_only(mutation_check):
    Mutant, Outcome = mutation_check.Mutant, mutation_check.Outcome
    m = [Mutant(name, name, "f.py", "a", "b", ()) for name in ("one", "two", "three", "four")]
    outcomes = [
        Outcome(m[0], True, tests_killed=True, verify_killed=True),
        Outcome(m[1], True, tests_killed=False, verify_killed=False),
        Outcome(m[2], True, tests_killed=True, verify_killed=None),  # verify cannot see it
        Outcome(m[3], False, note="old string found 0 times in f.py (need exactly 1)"),
    ]
    text = mutation_check.table(outcomes)
    assert "| two | yes | SURVIVED | SURVIVED |" in text
    assert "| three | yes | killed | n/a |" in text
    assert "| four | not applied: old string found 0 times" in text
    assert ("killed by the tests: 2 of 3 applied mutants; by lrp verify: 1 of the 2 the built-in "
            "models exercise; not applied: 1") in text


def test_the_checkout_copy_holds_the_working_tree(mutation_check, tmp_path):
    copy = mutation_check.copy_checkout(tmp_path)
    assert (copy / "scripts" / "mutation_check.py").read_text() == (ROOT / "scripts" / "mutation_check.py").read_text()
    assert (copy / "lrp_num" / "models" / "digits_paths.npz").is_file()
    assert not (copy / ".git").exists()
