"""The generator: separation, printing, the committed output, reproducibility, user folders."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sympy import (Function, Heaviside, Le, Lt, Max, Min, Piecewise, Rational, S, Sum, Symbol, exp,
                   pi, sinc, sqrt)

from codegen_support import EPS64, reference_relevance, shipped_sources
from lrp_num.cli import main
from lrp_num.engine.kernels import kernel_parameters, load_condition, load_kernel
from lrp_num.layers.operators import DenseOperator
from lrp_sym.codegen import (CodegenError, Source, build_outputs, check_sympy_version,
                             derive_folder, diff_outputs, print_array_api, separate, write_outputs)
from lrp_sym.derivation import Derivation, RatioTerm
from lrp_sym.registry import DEFAULT_DERIVATIONS
from lrp_sym.symbols import (b, bn_beta, bn_eps, bn_gamma, bn_mean, bn_var, gamma, h, i, j, l,
                             n, w, x)

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "lrp_num" / "_generated"
DOCS = ROOT / "docs" / "rules"
UPDATE = "python -m lrp_num.cli regenerate   (lrp regenerate)"

# -- separation ------------------------------------------------------------------------------


def _separated(q):
    return [(part.factor, part.transform) for part in separate(q)]


@pytest.mark.parametrize("q, expected", [
    (x[i] * Max(0, w[i, j]), [(x[i], "positive")]),
    (w[i, j] ** 2, [(S.One, "square")]),
    (S.One, [(S.One, "ones")]),
    (w[i, j] * x[i], [(x[i], "identity")]),
    ((gamma + 1) * x[i] * Max(0, w[i, j]) + x[i] * Min(0, w[i, j]),
     [((gamma + 1) * x[i], "positive"), (x[i], "negative")]),
    ((x[i] - l[i]) * Max(0, w[i, j]) + (x[i] - h[i]) * Min(0, w[i, j]),
     [(x[i] - l[i], "positive"), (x[i] - h[i], "negative")]),
    (Max(0, x[i] * w[i, j]), [(Max(0, x[i]), "positive"), (Min(0, x[i]), "negative")]),
    (Min(0, x[i] * w[i, j]), [(Min(0, x[i]), "positive"), (Max(0, x[i]), "negative")]),
    (2 * x[i] * (1 + Heaviside(w[i, j])) * w[i, j], [(4 * x[i], "positive"),
                                                    (2 * x[i], "negative")]),
])
def test_separation(q, expected):
    assert _separated(q) == expected


@pytest.mark.parametrize("q, offending", [
    (x[i] * w[i, j] ** 3 + x[i] * w[i, j], "w[i, j]**3*x[i]"),
    (Max(0, w[i, j] - x[i]), "Max(0, w[i, j] - x[i])"),
    (x[i] * w[i, j] + exp(w[i, j]), "exp(w[i, j])"),
    (Heaviside(w[i, j]) * x[i], "Heaviside(w[i, j])*x[i]"),
    (Max(0, w[i, j]) ** 2, "Max(0, w[i, j])**2"),
])
def test_non_separable_q_names_the_term(q, offending):
    with pytest.raises(CodegenError, match="not separable") as raised:
        separate(q)
    assert offending in str(raised.value)


def test_input_factor_may_not_hold_the_bias():
    with pytest.raises(CodegenError, match="b\\[j\\]"):
        separate((x[i] + b[j]) * w[i, j])


# -- printer ---------------------------------------------------------------------------------


def test_printer_spells_rectifiers_and_steps_in_the_array_api():
    names = {x: "x", l: "lower"}
    assert print_array_api(Max(0, x[i], l[i]), names) == "xp.clip(xp.maximum(lower, x), min=0)"
    assert print_array_api(Max(x[i], l[i]), names) == "xp.maximum(lower, x)"
    assert print_array_api(Min(0, x[i]), names) == "xp.clip(x, max=0)"
    assert print_array_api(Heaviside(x[i]), names) == "kernel_runtime.heaviside(x, 1/2)"
    assert print_array_api(Heaviside(x[i], 1), names) == "kernel_runtime.heaviside(x, 1)"
    assert print_array_api(1 / (gamma * x[i]), names) == "1/(gamma*x)"
    assert print_array_api(Rational(1, 3) * sqrt(x[i]), names) == "(1/3)*xp.sqrt(x)"
    assert print_array_api(pi * x[i], names) == "xp.pi*x"


@pytest.mark.parametrize("expr, message", [
    (Function("f")(Symbol("y")), "no array-API spelling"),
    (sinc(Symbol("y")), "not a function of the array API standard"),
    (Piecewise((1, Symbol("y") > 0), (0, True)), "branch-free"),
    (w[i, j], "no array"),
])
def test_printer_is_strict(expr, message):
    with pytest.raises(CodegenError, match=message):
        print_array_api(expr, {x: "x"})


def test_sympy_version_pin_is_enforced():
    assert check_sympy_version() == "1.14"
    with pytest.raises(CodegenError, match="pinned to SymPy 1.14"):
        check_sympy_version("1.13.3")
    with pytest.raises(CodegenError):
        check_sympy_version("1.15.0")


# -- the committed output --------------------------------------------------------------------


def test_committed_kernels_and_docs_are_up_to_date():
    outputs = build_outputs(list(shipped_sources()))
    diffs = diff_outputs(GENERATED, outputs.kernels, ".py") + diff_outputs(DOCS, outputs.docs, ".md")
    assert not diffs, ("generated files are stale; update them with\n    " + UPDATE + "\n\n"
                       + "".join(diffs)[:20000])


def _headers_and_imports(text: str) -> None:
    lines = text.splitlines()
    assert lines[0].startswith("# Generated by lrp-toolkit") and "DO NOT EDIT" in lines[0]
    assert lines[1] == "# Regenerate with: lrp regenerate"
    assert lines[2].startswith("# SymPy 1.14")
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    # array-API code: no array library is imported, the namespace comes from the inputs
    errors = [line for line in imports if line.startswith("from lrp_num.errors import ")]
    assert set(imports) - set(errors) <= {"from lrp_num.engine import kernel_runtime"}
    for line in errors:
        names = line[len("from lrp_num.errors import "):].split(", ")
        assert set(names) <= {"ShapeError", "UnsupportedLayerError"} and names == sorted(names)
    assert "numpy." not in text


def test_generated_files_have_header_and_import_no_array_library():
    for path in sorted(GENERATED.glob("*.py")):
        if "TEMPORARY" in path.read_text().splitlines()[0]:
            continue  # a hand-written stand-in, replaced once its derivation lands
        _headers_and_imports(path.read_text())
    assert "from z_plus.py" in (GENERATED / "zplus.py").read_text().splitlines()[0]


def test_regeneration_is_byte_identical_under_different_hash_seeds(tmp_path):
    runs = []
    for seed in ("0", "12345"):
        out, docs = tmp_path / f"out{seed}", tmp_path / f"docs{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        runs.append((out, docs, subprocess.Popen(
            [sys.executable, "-m", "lrp_num.cli", "regenerate", "--out", str(out), "--docs",
             str(docs)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    contents = []
    for out, docs, process in runs:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
        contents.append({(kind, p.name): p.read_bytes()
                         for kind, folder in (("kernels", out), ("docs", docs))
                         for p in sorted(folder.iterdir())})
    assert contents[0] == contents[1]
    committed = {(kind, p.name): p.read_bytes()
                 for kind, folder in (("kernels", GENERATED), ("docs", DOCS))
                 for p in sorted(folder.iterdir())
                 if p.suffix in (".py", ".md") and b"Generated by lrp-toolkit" in p.read_bytes()}
    assert committed == contents[0], "committed output is stale; update with " + UPDATE


# -- regenerate: check, write, stale files ----------------------------------------------------


def _single_rule_folder(tmp_path: Path, file_name: str, text: str | None = None) -> Path:
    folder = tmp_path / "derivations"
    folder.mkdir(parents=True, exist_ok=True)
    source = DEFAULT_DERIVATIONS / file_name
    (folder / file_name).write_text(text if text is not None else source.read_text())
    return folder


def test_check_reports_stale_missing_and_extra_files(tmp_path, capsys):
    derivations = _single_rule_folder(tmp_path, "z_plus.py")
    out = tmp_path / "kernels"
    args = ["regenerate", "--derivations", str(derivations), "--out", str(out)]
    assert main(args + ["--check"]) == 1  # nothing written yet: every file is missing
    assert "+++ " in capsys.readouterr().out
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["__init__.py", "zplus.py"]
    capsys.readouterr()
    assert main(args + ["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    (out / "zplus.py").write_text((out / "zplus.py").read_text() + "# edited\n")
    stale_owned = out / "old_rule.py"
    stale_owned.write_text("# Generated by lrp-toolkit from old.py. DO NOT EDIT.\n")
    foreign = out / "hand_written.py"
    foreign.write_text("# not generated\n")
    assert main(args + ["--check"]) == 1
    report = capsys.readouterr().out
    assert "-# edited" in report and "old_rule.py" in report and "hand_written" not in report
    assert main(args) == 0
    assert not stale_owned.exists() and foreign.exists()
    assert main(args + ["--check"]) == 0


def test_changing_a_derivation_changes_the_generated_code(tmp_path):
    original = derive_folder(_single_rule_folder(tmp_path / "a", "z_plus.py"))
    text = (DEFAULT_DERIVATIONS / "z_plus.py").read_text()
    changed_text = text.replace("direction=x_i * indicator_positive(w_ij)", "direction=x_i")
    assert changed_text != text
    changed = derive_folder(_single_rule_folder(tmp_path / "b", "z_plus.py", changed_text))
    before = build_outputs(original, docs=False).kernels["zplus.py"]
    after = build_outputs(changed, docs=False).kernels["zplus.py"]
    assert "'positive'" in before and "'identity'" in after and before != after


USER_RULES = '''
from lrp_sym import BOX, ORTHANT, RootPointRule, indicator_positive, l_i, w_ij, x_i

RULE = RootPointRule(
    name="{name}",
    title="{title}",
    paper="a user's own rule (test)",
    direction={direction},
    domain={domain},
)
'''


@pytest.mark.parametrize("name, direction, domain", [
    ("double_excitatory", "x_i * (1 + indicator_positive(w_ij)) * 2", "ORTHANT"),
    ("toward_lower", "x_i - l_i", "BOX"),
])
def test_user_direction_end_to_end(tmp_path, name, direction, domain):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / f"{name}.py").write_text(USER_RULES.format(
        name=name, title=f"user rule {name}", direction=direction, domain=domain))
    out = tmp_path / "kernels"
    completed = subprocess.run(
        [sys.executable, "-m", "lrp_num.cli", "regenerate", "--derivations", str(folder),
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    header = (out / f"{name}.py").read_text().splitlines()[:2]
    assert f"from {name}.py" in header[0] and "--derivations" in header[1]
    kernel = load_kernel(name, folder=out)
    assert kernel_parameters(name, folder=out) == {}

    (source,) = derive_folder(folder)
    has_condition = "domain_condition" in source.derivation.results
    assert (load_condition(name, folder=out) is not None) == has_condition
    rng = np.random.default_rng(11)
    weight, bias = rng.normal(size=(4, 3)), rng.normal(size=3) * 0.3
    relevance_out = rng.random((2, 3)) + 0.1
    if domain == "BOX":
        lower, upper = -1 - rng.random(4), 1 + rng.random(4)
        x_batch = lower + (upper - lower) * rng.random((2, 4))
        result = kernel(DenseOperator(weight, bias), x_batch, relevance_out, lower=lower,
                        upper=upper)
    else:
        lower = upper = None
        x_batch = np.abs(rng.normal(size=(2, 4)))
        result = kernel(DenseOperator(weight, bias), x_batch, relevance_out)
    reference = reference_relevance(source.derivation, weight, bias, x_batch, relevance_out,
                                    lower=lower, upper=upper)
    tolerance = 8 * np.spacing(np.abs(reference.relevance)) + 16 * EPS64 * reference.scale
    assert (np.abs(result - reference.relevance) <= tolerance).all()


@pytest.mark.parametrize("content, message", [
    (None, "no derivations folder"),
    ("this is not python(\n", "SyntaxError"),
    ("RULE = 3\n", "no RULE"),
    ('from lrp_sym import REAL_SPACE, RatioRule, RatioTerm, w_ij, x_i\n'
     'RULE = RatioRule(name="cubic", title="t", paper="p", '
     'terms=[RatioTerm(1, x_i * w_ij**3)], domain=REAL_SPACE)\n', "not separable"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    folder = tmp_path / "mine"
    if content is not None:
        folder.mkdir()
        (folder / "broken.py").write_text(content)
    status = main(["regenerate", "--derivations", str(folder), "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err
    assert status == 2 and message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_derivations_without_out_is_refused(tmp_path, capsys):
    assert main(["regenerate", "--derivations", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err


# -- layer kernels from stand-in derivations ---------------------------------------------------

m = Symbol("m", integer=True, positive=True)
_SIGMA = sqrt(bn_var + bn_eps)
BATCHNORM = Derivation(
    "batchnorm", "batch normalisation after a linear layer", "Ioffe and Szegedy 2015",
    results={"folded_weight": w[i, j] * bn_gamma / _SIGMA,
             "folded_bias": (b[j] - bn_mean) * bn_gamma / _SIGMA + bn_beta})
MAXPOOL = Derivation("maxpool", "max pooling, ties split equally", "LRP toolbox 1.3.1",
                     results={"winner_share": 1 / m, "loser_share": S.Zero})
DOCS_ONLY = Derivation("sensitivity", "sensitivity analysis", "Simonyan et al. 2014")
SUMPOOL = Derivation("sumpool", "sum pooling", "Montavon et al. 2019",
                     terms=[RatioTerm(S.One, x[i])])


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"_test_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layer_kernels_and_docs_only_pages_from_stand_in_derivations(tmp_path):
    sources = [Source("batchnorm.py", BATCHNORM), Source("max_pool.py", MAXPOOL),
               Source("sensitivity.py", DOCS_ONLY), Source("pooling.py", SUMPOOL)]
    outputs = build_outputs(sources)
    assert sorted(outputs.kernels) == ["__init__.py", "batchnorm_fold.py", "maxpool.py"]
    assert sorted(outputs.docs) == ["README.md", "batchnorm.md", "maxpool.md", "sensitivity.md",
                                    "sumpool.md"]
    assert "None: this analysis yields no kernel" in outputs.docs["sensitivity.md"]
    assert "[`lrp0`](lrp0.md) kernel" in outputs.docs["sumpool.md"]
    write_outputs(tmp_path, outputs.kernels, ".py")
    init = _import(tmp_path / "__init__.py")
    assert init.RULES == () and init.LAYER_KERNELS == ("batchnorm_fold", "maxpool")

    fold = _import(tmp_path / "batchnorm_fold.py").fold_batchnorm
    rng = np.random.default_rng(2)
    weight, bias = rng.normal(size=(5, 3)), rng.normal(size=3)
    g, beta, mean, var = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3), rng.random(3)
    folded_weight, folded_bias = fold(weight, bias, g, beta, mean, var, 1e-5)
    x_batch = rng.normal(size=(4, 5))
    expected = g * ((x_batch @ weight + bias) - mean) / np.sqrt(var + 1e-5) + beta
    assert np.allclose(x_batch @ folded_weight + folded_bias, expected, rtol=1e-12, atol=1e-12)

    relevance = _import(tmp_path / "maxpool.py").relevance
    pool = _Pool2x2()
    x_batch = np.array([[[[1.0, 3.0, 2.0, 2.0], [0.0, 3.0, 2.0, 2.0],
                          [5.0, 0.0, -1.0, -4.0], [0.0, 0.0, -2.0, -3.0]]]])
    relevance_out = np.array([[[[1.0, 4.0], [2.0, 3.0]]]])
    result = relevance(pool, x_batch, relevance_out)
    assert np.array_equal(result, [[[[0.0, 0.5, 1.0, 1.0], [0.0, 0.5, 1.0, 1.0],
                                     [2.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])
    assert result.sum() == relevance_out.sum()


class _Pool2x2:
    """A stand-in for the layers engineer's MaxPool2d: 2x2 windows, stride 2."""

    def patches(self, x):
        n, c, hh, ww = x.shape
        windows = x.reshape(n, c, hh // 2, 2, ww // 2, 2).transpose(0, 1, 2, 4, 3, 5)
        return windows.reshape(n, c, hh // 2, ww // 2, 4)

    def unpatch(self, r):
        n, c, ho, wo, _ = r.shape
        return r.reshape(n, c, ho, wo, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * ho,
                                                                               2 * wo)


def test_layer_kernel_results_are_checked():
    bad = Derivation("maxpool", "t", "p", results={"winner_share": 1 / Symbol("k")})
    with pytest.raises(CodegenError, match="loser_share"):
        build_outputs([Source("maxpool.py", bad)], docs=False)
    bad = Derivation("maxpool", "t", "p", results={"winner_share": 1 / Symbol("k"),
                                                 "loser_share": S.Zero})
    with pytest.raises(CodegenError, match="only on m"):
        build_outputs([Source("maxpool.py", bad)], docs=False)
    bad = Derivation("batchnorm", "t", "p", results={"folded_weight": x[i] * w[i, j],
                                                   "folded_bias": b[j]})
    with pytest.raises(CodegenError, match="unexpected"):
        build_outputs([Source("batchnorm.py", bad)], docs=False)


def test_reserved_parameter_names_are_refused():
    eps_named = Symbol("eps")
    bad = Derivation("clash", "t", "p", terms=[RatioTerm(S.One, x[i] * w[i, j] + eps_named)],
                     parameters=(eps_named,), defaults={eps_named: 1.0})
    with pytest.raises(CodegenError, match="reserved"):
        build_outputs([Source("clash.py", bad)], docs=False)


def test_docs_pages_show_math_proofs_and_signature():
    page = (DOCS / "zplus.md").read_text()
    for piece in ("# z+ rule", "$$", "\\max\\left(0, {w}_{i,j}\\right)", "## Proofs",
                  "`conservation`", "proved", "**step t\\***", "root point in domain when",
                  "relevance(op, x, relevance_out, *, lower=None"):
        assert piece in page
    assert "Counterexamples" in (DOCS / "alphabeta.md").read_text()
    index = (DOCS / "README.md").read_text()
    assert all(f"[`{s.derivation.name}`]" in index for s in shipped_sources())


def _with_condition(condition):
    return Derivation("cond", "t", "p", terms=[RatioTerm(S.One, x[i] * Max(0, w[i, j]))],
                      results={"domain_condition": condition})


def test_root_point_condition_is_generated_from_the_derived_relational():
    condition = Le(2 * Sum(x[i] * Min(0, w[i, j]), (i, 1, n)) + b[j], 0)
    text = build_outputs([Source("cond.py", _with_condition(condition))], docs=False).kernels[
        "cond.py"]
    assert "def root_point_in_domain(op, x, *, lower=None, upper=None):" in text
    assert "condition = bias + 2*z_3" in text and "op.forward(x, 'negative')" in text
    always = build_outputs([Source("cond.py", _with_condition(S.true))], docs=False)
    assert ("inside = xp.asarray(xp.broadcast_to((denominator > 0), z.shape), copy=True)"
            in always.kernels["cond.py"])
    without = Derivation("cond", "t", "p", terms=[RatioTerm(S.One, x[i] * w[i, j])])
    assert "root_point_in_domain" not in build_outputs([Source("cond.py", without)],
                                                      docs=False).kernels["cond.py"]


@pytest.mark.parametrize("condition, message", [
    (Lt(b[j], 0), "not of the form"),
    (Le(Sum(x[i] * w[i, j] ** 3, (i, 1, n)), 0), "not separable"),
    (Le(b[j] + x[1], 0), "may contain only"),
])
def test_bad_root_point_conditions_are_refused(condition, message):
    with pytest.raises(CodegenError, match=message):
        build_outputs([Source("cond.py", _with_condition(condition))], docs=False)
