"""``lrp derive`` / ``lrp regenerate`` mistakes: one line, exit 2, nothing written; headers that
do not depend on how paths were spelled."""

from __future__ import annotations

import os

import pytest

from lrp_num.cli import main
from lrp_sym.registry import DEFAULT_DERIVATIONS

NO_STEP = ("from lrp_sym import ORTHANT, RootPointRule, x_i\n"
           "RULE = RootPointRule(name='nostep', title='no step', paper='-', direction=x_i * 0,\n"
           "                     domain=ORTHANT)\n")


def _folder(tmp_path, name, text):
    folder = tmp_path / "derivations"
    folder.mkdir()
    (folder / name).write_text(text)
    return folder


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_root_point_rule_without_a_unique_step_raises_derivation_error(tmp_path):
    from lrp_sym import DerivationError
    from lrp_sym.registry import load_declarations

    rule = load_declarations(_folder(tmp_path, "nostep.py", NO_STEP))["nostep"]
    with pytest.raises(DerivationError, match="no solution for the step t"):
        rule.derive()


@pytest.mark.parametrize("arguments", [["nostep"], ["--all"]])
def test_derive_of_a_failing_rule_is_one_line_naming_the_file(tmp_path, capsys, arguments):
    folder = _folder(tmp_path, "nostep.py", NO_STEP)
    assert main(["derive", "--derivations", str(folder), *arguments]) == 2
    line = _one_line(capsys)
    assert "nostep.py" in line and "deriving 'nostep' failed: DerivationError" in line


def test_regenerate_of_a_failing_rule_is_one_line(tmp_path, capsys):
    folder = _folder(tmp_path, "nostep.py", NO_STEP)
    out = tmp_path / "out"
    assert main(["regenerate", "--derivations", str(folder), "--out", str(out)]) == 2
    assert "DerivationError" in _one_line(capsys) and not out.exists()


@pytest.mark.parametrize("arguments", [["zplus", "--all"], ["zplus", "--list"]])
def test_derive_rule_with_all_or_list_is_exit_2(capsys, arguments):
    assert main(["derive", *arguments]) == 2
    assert "not both" in _one_line(capsys)


def test_derive_list_and_all_are_mutually_exclusive(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["derive", "--list", "--all"])
    assert caught.value.code == 2


def test_derive_latex_renders_the_rule_row_as_latex(capsys):
    assert main(["derive", "zplus", "--latex"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = out[out.index("   rule R_i:") + 1]
    assert row.strip().startswith("R_i = \\sum_j \\frac{") and "sum_j q_ij" not in row


@pytest.mark.parametrize("flag, kind", [("--out", "file"), ("--out", "under-file"),
                                        ("--docs", "file")])
def test_regenerate_into_a_file_is_one_line_and_writes_nothing(tmp_path, capsys, flag, kind):
    folder = _folder(tmp_path, "z_plus.py", (DEFAULT_DERIVATIONS / "z_plus.py").read_text())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker if kind == "file" else blocker / "sub"
    out = target if flag == "--out" else tmp_path / "kernels"
    arguments = ["regenerate", "--derivations", str(folder), "--out", str(out)]
    if flag == "--docs":
        arguments += ["--docs", str(target)]
    assert main(arguments) == 2
    assert "is a file, not a folder" in _one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["derivations", "file"]
    assert blocker.read_text() == "x"


def test_check_does_not_depend_on_path_spelling(tmp_path, capsys, monkeypatch):
    folder = _folder(tmp_path, "z_plus.py", (DEFAULT_DERIVATIONS / "z_plus.py").read_text())
    out, docs = tmp_path / "kernels", tmp_path / "docs"
    assert main(["regenerate", "--derivations", str(folder), "--out", str(out),
                 "--docs", str(docs)]) == 0
    header = (out / "zplus.py").read_text().splitlines()[1]
    assert str(tmp_path) not in header
    assert header == ("# Regenerate with: lrp regenerate --derivations ../derivations --out . "
                      "--docs ../docs  (in the kernel folder)")
    capsys.readouterr()
    monkeypatch.chdir(out)
    assert main(["regenerate", "--derivations", "../derivations/", "--out", ".",
                 "--docs", os.path.join("..", "kernels", "..", "docs")]) == 0
    assert "0 file(s) changed" in capsys.readouterr().out
    assert main(["regenerate", "--derivations", "../derivations", "--out", "../kernels/",
                 "--docs", "../docs", "--check"]) == 0
