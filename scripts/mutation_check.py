"""Mutation check of the test suite and of ``lrp verify``: run by hand, not in CI.

Each *semantic* mutant is one defect in the field's terms (a dropped clamp, swapped box bounds,
a missing bias share, a wrong batch-norm fold, a wrong composite choice, a ratio biased by
1e-12, a sampling proof that samples nothing, ...), written as a text patch: an old string in
one file and its replacement. For every mutant the script

1. copies the checkout (tracked and untracked, not ignored files: the working tree as it is)
   into a temporary folder; the working tree itself is never modified;
2. applies the patch there; a patch whose old string is missing or not unique is reported as
   "not applied" and counts neither as killed nor as survived;
3. regenerates the kernels there when the patch is in a derivation (``lrp regenerate``), as a
   developer would after editing one;
4. runs (a) the tests of the touched area (``pytest -x``, per-mutant timeout) and (b) ``lrp
   verify`` on the built-in model(s) that exercise the mutated code, with a small sample
   count; a non-zero exit status kills the mutant;
5. prints one Markdown table row: mutant, applied, killed by tests, killed by verify, seconds.

Before the mutants, the same test subsets and verify runs are run on the unmutated copy; if one
of them fails there, the check stops (a mutant "killed" by a test that fails anyway says
nothing).

*Syntactic* mutants (``--syntactic``) come from cosmic-ray (``pip install -e ".[mutation]"``)
over a scoped set of modules, with the configuration in ``mutation/cosmic-ray.toml``; cosmic-ray
rewrites the module files in place, so it, too, runs inside a temporary copy.

    python scripts/mutation_check.py                       # every semantic mutant
    python scripts/mutation_check.py --only dropped-clamp ratio-biased
    python scripts/mutation_check.py --list
    python scripts/mutation_check.py --syntactic           # cosmic-ray on the scope (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COSMIC_RAY_CONFIG = "mutation/cosmic-ray.toml"

KERNEL_TESTS = ("tests/test_generated_kernels.py",)
LAYER_TESTS = ("tests/test_layers.py", "tests/test_generated_kernels.py")
EXPLAIN_TESTS = ("tests/test_explain.py", "tests/test_network.py")
CODEGEN_TESTS = ("tests/test_codegen.py",)


@dataclass(frozen=True)
class Mutant:
    """One semantic defect: replace ``old`` by ``new`` (exactly one occurrence) in ``path``.

    ``tests`` are the test files of the touched area; ``models`` the built-in models whose
    ``lrp verify`` run exercises the mutated code (none: verify cannot see it).
    """

    name: str
    defect: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    models: tuple[str, ...] = ("digits-paths",)
    regenerate: bool = False


MUTANTS: tuple[Mutant, ...] = (
    Mutant("dropped-clamp", "z+ uses w instead of w+: the engine's 'positive' weight transform "
           "returns w", "lrp_num/layers/operators.py",
           '"positive": lambda w: np.maximum(w, 0),', '"positive": lambda w: w,', LAYER_TESTS),
    Mutant("dropped-clamp-derivation", "z+ declared with direction x_i instead of x_i 1[w_ij > 0], "
           "kernels regenerated", "derivations/z_plus.py",
           "direction=x_i * indicator_positive(w_ij),", "direction=x_i,",
           ("tests/test_derivations.py",), regenerate=True),
    Mutant("swapped-box-bounds", "z^B receives l and h swapped (the engine's input box)",
           "lrp_num/engine/explain.py",
           'reshape(a.shape[1:])[None]\n                    for name, bound in (("lower", self.domain.low), '
           '("upper", self.domain.high))}',
           'reshape(a.shape[1:])[None]\n                    for name, bound in (("lower", self.domain.high), '
           '("upper", self.domain.low))}', EXPLAIN_TESTS),
    Mutant("missing-bias-share", "LRP-epsilon's denominator without the bias b_j (its bias term "
           "dropped)", "lrp_num/_generated/epsilon.py",
           "    d_1 = bias + z_1\n", "    d_1 = z_1\n", KERNEL_TESTS + CODEGEN_TESTS),
    Mutant("fold-without-beta", "batch-norm fold drops beta: b' = (b - mu) gamma / sigma",
           "lrp_num/_generated/batchnorm_fold.py",
           "return _c1*weight, _c1*(-mean + bias) + beta", "return _c1*weight, _c1*(-mean + bias)",
           ("tests/test_network.py", "tests/test_layers.py")),
    Mutant("fold-variance-squared", "batch-norm fold with sigma = sqrt(var**2 + eps)",
           "lrp_num/_generated/batchnorm_fold.py",
           "_c1 = gamma/xp.sqrt(eps + var)", "_c1 = gamma/xp.sqrt(eps + var**2)",
           ("tests/test_network.py", "tests/test_layers.py")),
    Mutant("wrong-composite-choice", "deep-taylor takes z+ instead of z^B at a box input",
           "lrp_num/engine/composites.py",
           'return LayerRule("zbox" if input_is_box else "w2")',
           'return LayerRule("zplus" if input_is_box else "w2")', EXPLAIN_TESTS),
    Mutant("ratio-biased", "every stabilised ratio biased by a factor 1 + 1e-12",
           "lrp_num/engine/kernel_runtime.py",
           "    xp = namespace(d)\n    if stabilise ==",
           "    numerator = numerator * (1 + 1e-12)\n    xp = namespace(d)\n    if stabilise ==", KERNEL_TESTS),
    Mutant("boundary-strict", "z+ domain condition tested with < 0 instead of <= 0 (a neuron on "
           "the boundary counts as outside)", "lrp_num/_generated/zplus.py",
           "(denominator > 0) & (condition <= 0)", "(denominator > 0) & (condition < 0)",
           KERNEL_TESTS + CODEGEN_TESTS),
    Mutant("sampling-proof-samples-nothing", "prove_zero's counterexample search draws no layer "
           "(0 trials)", "lrp_sym/proofs.py",
           "    for _ in range(SEARCH_TRIALS):\n        instance = sampler(rng)",
           "    for _ in range(0):\n        instance = sampler(rng)",
           ("tests/test_derivations.py",), models=()),
)


@dataclass
class Outcome:
    """What one mutant run found; ``None`` where a step did not run."""

    mutant: Mutant
    applied: bool
    note: str = ""
    tests_killed: bool | None = None
    tests_detail: str = ""
    verify_killed: bool | None = None
    verify_detail: str = ""
    seconds: float = 0.0


def copy_checkout(destination: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of the checkout to ``destination``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def apply_patch(copy: Path, mutant: Mutant) -> str | None:
    """Apply the mutant in ``copy``; return why it could not be applied, or None."""
    path = copy / mutant.path
    if not path.is_file():
        return f"{mutant.path} does not exist"
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        return f"old string found {count} times in {mutant.path} (need exactly 1)"
    path.write_text(text.replace(mutant.old, mutant.new))
    return None


def _environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), HYPOTHESIS_PROFILE="ci", PYTHONDONTWRITEBYTECODE="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _run(command: list[str], copy: Path, timeout: float) -> tuple[int | None, str]:
    """Exit status (None on timeout) and the last lines of the output."""
    try:
        done = subprocess.run(command, cwd=copy, env=_environment(copy), capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:.0f} s"
    lines = (done.stdout + done.stderr).strip().splitlines()
    failed = [line.split()[0] + line.split("FAIL", 1)[1] for line in lines if "  FAIL" in line]  # verify rows
    failed += [line.split(" - ")[0] for line in lines if line.startswith(("FAILED ", "ERROR "))]  # pytest
    return done.returncode, "; ".join(failed) if failed else " | ".join(lines[-2:])


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    return _run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], copy, timeout)


def run_verify(copy: Path, models: tuple[str, ...], samples: int, timeout: float) -> tuple[int | None, str]:
    """``lrp verify`` on each model; the first non-zero exit status (or timeout) and its output."""
    for model in models:
        status, tail = _run([sys.executable, "-m", "lrp_num.cli", "verify", "--model", model,
                             "--samples", str(samples)], copy, timeout)
        if status != 0:
            return status, f"{model}: {tail}"
    return 0, "passed"


def run_mutant(mutant: Mutant, args: argparse.Namespace) -> Outcome:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lrp-mutant-") as folder:
        copy = copy_checkout(Path(folder))
        problem = apply_patch(copy, mutant)
        if problem is not None:
            return Outcome(mutant, False, note=problem, seconds=time.perf_counter() - started)
        outcome = Outcome(mutant, True)
        if mutant.regenerate:
            status, tail = _run([sys.executable, "-m", "lrp_num.cli", "regenerate"], copy, args.timeout)
            outcome.note = "regenerated" if status == 0 else f"regenerate failed ({status}): {tail}"
        status, outcome.tests_detail = run_tests(copy, mutant.tests, args.timeout)
        outcome.tests_killed = status not in (0, None, 5)  # 5: no tests collected
        if status is None:
            outcome.tests_detail = "timeout (not counted as killed)"
        if mutant.models:
            status, outcome.verify_detail = run_verify(copy, mutant.models, args.samples, args.timeout)
            outcome.verify_killed = status not in (0, None)
    outcome.seconds = time.perf_counter() - started
    return outcome


def check_baseline(mutants: list[Mutant], args: argparse.Namespace) -> None:
    """Every test subset and verify run must pass on the unmutated copy."""
    with tempfile.TemporaryDirectory(prefix="lrp-baseline-") as folder:
        copy = copy_checkout(Path(folder))
        for tests in sorted({m.tests for m in mutants}):
            status, tail = run_tests(copy, tests, args.timeout)
            if status != 0:
                sys.exit(f"baseline: {' '.join(tests)} fails without a mutant ({status}): {tail}")
        models = tuple(sorted({model for m in mutants for model in m.models}))
        status, tail = run_verify(copy, models, args.samples, args.timeout)
        if status != 0:
            sys.exit(f"baseline: lrp verify fails without a mutant ({status}): {tail}")
    print(f"baseline: the test subsets and lrp verify ({', '.join(models)}) pass unmutated", flush=True)


def _mark(value: bool | None) -> str:
    return "n/a" if value is None else ("killed" if value else "SURVIVED")


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as a Markdown table with the kill rates below it."""
    lines = ["| mutant | applied | killed by tests | killed by verify | seconds |",
             "|---|---|---|---|---|"]
    for o in outcomes:
        applied = "yes" if o.applied else f"not applied: {o.note}"
        lines.append(f"| {o.mutant.name} | {applied} | {_mark(o.tests_killed) if o.applied else '-'} | "
                     f"{_mark(o.verify_killed) if o.applied else '-'} | {o.seconds:.0f} |")
    applied = [o for o in outcomes if o.applied]
    by_tests = sum(bool(o.tests_killed) for o in applied)
    exercised = [o for o in applied if o.verify_killed is not None]
    by_verify = sum(bool(o.verify_killed) for o in exercised)
    lines.append("")
    lines.append(f"killed by the tests: {by_tests} of {len(applied)} applied mutants; "
                 f"by lrp verify: {by_verify} of the {len(exercised)} the built-in models exercise; "
                 f"not applied: {len(outcomes) - len(applied)}")
    return "\n".join(lines)


def run_syntactic(args: argparse.Namespace) -> int:
    """cosmic-ray over the scope of ``mutation/cosmic-ray.toml``, inside a temporary copy."""
    if shutil.which("cosmic-ray") is None and not (Path(sys.executable).parent / "cosmic-ray").exists():
        sys.exit('cosmic-ray is not installed: pip install -e ".[mutation]"')
    cosmic_ray = shutil.which("cosmic-ray") or str(Path(sys.executable).parent / "cosmic-ray")
    with tempfile.TemporaryDirectory(prefix="lrp-cosmic-ray-") as folder:
        copy = copy_checkout(Path(folder))
        session = copy / "session.sqlite"
        env = _environment(copy)
        for step in (["init", COSMIC_RAY_CONFIG, str(session)], ["baseline", COSMIC_RAY_CONFIG],
                     ["exec", COSMIC_RAY_CONFIG, str(session)]):
            print("cosmic-ray", " ".join(step), flush=True)
            subprocess.run([cosmic_ray, *step], cwd=copy, env=env, check=True)
        counts = _cosmic_ray_counts(session)
        if args.report:
            Path(args.report).write_text(json.dumps(counts, indent=2))
    total = sum(counts.values())
    killed = counts.get("killed", 0)
    print(f"cosmic-ray: {total} mutants, {killed} killed ({100 * killed / max(total, 1):.1f} %), "
          + ", ".join(f"{name} {count}" for name, count in sorted(counts.items())))
    return 0


def _cosmic_ray_counts(session: Path) -> dict[str, int]:
    """Outcomes in a cosmic-ray session: killed, survived, incompetent (the mutant raised before
    a test could judge it; counted apart, as cosmic-ray does), or the worker's outcome."""
    with sqlite3.connect(session) as db:
        rows = db.execute("SELECT r.worker_outcome, r.test_outcome FROM work_items w "
                          "LEFT JOIN work_results r ON w.job_id = r.job_id").fetchall()
    counts: dict[str, int] = {}
    for worker, outcome in rows:  # a worker outcome (e.g. abnormal, skipped) where no test ran
        name = str(outcome if outcome is not None else worker or "pending").split(".")[-1].lower()
        counts[name] = counts.get(name, 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--samples", type=int, default=2, help="lrp verify --samples (default 2)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test or verify run")
    parser.add_argument("--skip-baseline", action="store_true", help="do not check the unmutated copy first")
    parser.add_argument("--syntactic", action="store_true", help="run cosmic-ray on the configured scope")
    parser.add_argument("--report", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    if args.syntactic:
        return run_syntactic(args)
    mutants = list(MUTANTS)
    if args.list:
        for m in mutants:
            print(f"{m.name:<32} {m.path}: {m.defect}")
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in mutants})
        if unknown:
            sys.exit(f"unknown mutant(s) {', '.join(unknown)}; --list shows them")
        mutants = [m for m in mutants if m.name in args.only]
    if not args.skip_baseline:
        check_baseline(mutants, args)
    outcomes = []
    for mutant in mutants:
        outcome = run_mutant(mutant, args)
        outcomes.append(outcome)
        print(f"{mutant.name}: applied {outcome.applied} {outcome.note}; tests {_mark(outcome.tests_killed)} "
              f"({outcome.tests_detail}); verify {_mark(outcome.verify_killed)} ({outcome.verify_detail}); "
              f"{outcome.seconds:.0f} s", flush=True)
    print()
    print(table(outcomes))
    if args.report:
        Path(args.report).write_text(json.dumps(
            [{"mutant": o.mutant.name, "applied": o.applied, "note": o.note, "tests_killed": o.tests_killed,
              "verify_killed": o.verify_killed, "tests_detail": o.tests_detail,
              "verify_detail": o.verify_detail, "seconds": round(o.seconds, 1)} for o in outcomes], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
