"""benchmarks/vit_speed.py runs end to end on digits-vit (small, once); speed is not asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("lxt")
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_vit_benchmark_reports_engine_and_lxt_times(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "vit_speed", raising=False)
    import vit_speed

    assert vit_speed.main(["--models", "digits-vit", "--variants", "cplrp", "--repeat", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["rows"]
    assert row["model"] == "digits-vit" and row["batch"] == 8 and row["dtype"] == "float32"
    for key in ("engine_forward_s", "engine_explain_s", "torch_forward_s", "lxt_cplrp_s"):
        assert row[key] > 0
    assert row["ratio_engine"] == pytest.approx(row["engine_explain_s"] / row["engine_forward_s"])
    # the headline of a model whose forward takes a millisecond: the ratio of the best CPU times
    assert row["repeat"] == 1 and row["ratio_engine_cpu"] == pytest.approx(
        row["engine_explain_best_cpu_s"] / row["engine_forward_best_cpu_s"])
    assert row["headline"] == ("cpu" if row["engine_forward_s"] < vit_speed.TINY_FORWARD_S else "wall")
    assert len(report["load_before"]) == 3
    assert vit_speed.main(["--models", "digits-vit", "--variants", "cplrp", "--repeat", "1"]) == 0
    assert "x forward by " in capsys.readouterr().out


def test_vit_benchmark_takes_the_best_of_many_runs_of_a_tiny_model_by_default():
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "vit_speed", raising=False)
    import vit_speed

    try:
        assert vit_speed.REPEATS["digits-vit"] >= 100 and vit_speed.REPEATS["vit-tiny"] <= 5
        calls = []
        best, best_cpu = vit_speed._interleaved([lambda: calls.append("a"), lambda: calls.append("b")], 3)
        assert calls == ["a", "b"] * 4  # one warm-up each, then in turn
        assert len(best) == 2 and all(cpu >= 0 for cpu in best_cpu)
    finally:
        monkeypatch.undo()
