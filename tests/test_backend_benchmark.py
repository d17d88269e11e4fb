"""benchmarks/backend_speed.py runs: every code path its GPU run takes (the ResNet-18 part, the
torch backend, zennit on the same device) runs here on the CPU, small and once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_backend_benchmark_runs_its_gpu_path_on_the_cpu(capsys, monkeypatch):
    from lrp_num.audit.zennit_adapter import import_zennit
    try:
        import_zennit()
    except ImportError:
        pytest.skip("zennit is not installed")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("backend_speed", "explain_speed", "resnet_speed"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import backend_speed
    backend_speed.main(["--repeats", "1", "--devices", "cpu", "--resnet-on-cpu",
                        "--resnet-batch", "1", "--resnet-size", "32"])
    printed = capsys.readouterr().out
    for line in ("MLP 784-1000-1000-10, batch 64", "VGG-like CNN 3x32x32, batch 16",
                 "ResNet-18, batch 1, 3x32x32", "torch backend  explain / forward",
                 "ours / zennit"):
        assert line in printed, printed
