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
    assert len(report["load_before"]) == 3
    assert vit_speed.main(["--models", "digits-vit", "--variants", "cplrp", "--repeat", "1"]) == 0
    assert "x forward (" in capsys.readouterr().out
