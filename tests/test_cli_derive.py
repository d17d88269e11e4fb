"""The ``lrp derive`` command: one rule, --list, --latex, --all, and a bad rule name."""

from __future__ import annotations

import re

from lrp_num.cli import main


def test_derive_one_rule_prints_direction_step_condition_and_proofs(capsys):
    assert main(["derive", "zplus"]) == 0
    out = capsys.readouterr().out
    for expected in ("search direction", "step t*", "root point x~_i", "q_ij", "x[i]*Max(0, w[i, j])",
                     "b[j] + Sum(x[i]*Min(0, w[i, j]), (i, 1, n)) <= 0", "[proved   ] conservation"):
        assert expected in out


def test_derive_latex(capsys):
    assert main(["derive", "zbox", "--latex"]) == 0
    assert r"\sum_{i=1}^{n}" in capsys.readouterr().out


def test_derive_list(capsys):
    assert main(["derive", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"w2", "zplus", "zbox", "lrp0", "gamma", "flat", "epsilon", "alphabeta", "maxpool",
            "batchnorm", "taylor", "sensitivity", "add_z", "add_zplus", "add_epsilon",
            "affine_channel", "concat"} <= set(names)


def test_unknown_rule_is_one_line_and_exit_2(capsys):
    assert main(["derive", "no-such-rule"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown rule 'no-such-rule'" in err[0]


def test_derive_all_passes_and_reports_identities(capsys):
    assert main(["derive", "--all"]) == 0
    out = capsys.readouterr().out
    assert "cross-rule identities" in out and "all proofs of" in out
    assert "[refuted  ] zbox_l0_h_infinity_is_zplus" in out
    summary = re.search(r"^(\d+) statements: (\d+) proved, (\d+) checked, (\d+) refuted "
                        r"\(as expected\), (\d+) assumed, (\d+) undecided$", out, re.M)
    assert summary, out[-400:]
    total, *counts = map(int, summary.groups())
    assert total == sum(counts) == out.count("\n     [") + out.count("\n  [")
    assert counts[1] > 0 and counts[4] == 0  # the sampling cross-checks; nothing undecided


def test_derive_all_fails_when_a_proof_is_not_as_expected(tmp_path, capsys):
    (tmp_path / "broken.py").write_text(
        "from lrp_sym import ORTHANT, RootPointRule, w_ij, x_i\n"
        "RULE = RootPointRule(name='broken', title='z+ claimed with q = x w', paper='-',\n"
        "                     direction=x_i, domain=ORTHANT)\n"
        "RULE.domain = __import__('lrp_sym').REAL_SPACE\n")
    assert main(["derive", "--all", "--derivations", str(tmp_path)]) == 1
    assert "positivity is refuted, expected proved" in capsys.readouterr().err


def test_bad_derivations_folder_is_exit_2(tmp_path, capsys):
    assert main(["derive", "--all", "--derivations", str(tmp_path / "missing")]) == 2
    assert "no derivations folder" in capsys.readouterr().err
