"""lrp verify / lrp audit over many inputs on Dask workers (lrp_num.distributed).

The merge needs no Dask and is tested always; the cluster tests skip cleanly without the
[distributed] extra. Every local cluster binds to 127.0.0.1 only, with no dashboard.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lrp_num.cli import main
from lrp_num.commands.common import load_model
from lrp_num.distributed import audit_serial, merge_verify, verify_serial
from lrp_num.errors import LRPError, ShapeError
from lrp_num.verify import verify

ROOT = Path(__file__).resolve().parent.parent
# a few rules with different checks (root points, positivity promised or not, absorbed relevance)
RULES = ("zplus", "w2", "epsilon")


def _comparable(report) -> dict:
    """A verify report as data without its timings (the only values a rerun may change)."""
    data = report.as_dict()
    for row in data["rows"]:
        row.pop("time_engine")
        row.pop("time_reference")
    return data


@pytest.fixture(scope="module")
def mlp():
    model = load_model("digits-mlp")
    x = model.test_images[:4]
    targets = model.test_labels[:4].astype(int)
    kwargs = dict(rules=RULES, composites=(), targets=targets, input_domain=model.input_domain, dps=30,
                  model_name="digits-mlp")
    serial, per_sample = verify_serial(model.network, x, **kwargs)
    return model, x, kwargs, serial, per_sample


# -- the merge (no Dask) --------------------------------------------------------------------------

def test_merged_samples_state_what_the_batch_states(mlp):
    """The per-sample merge and a batch run: the same checks and verdicts, the same reference
    measurements. The engine's own errors (ulps, error over bound) are not compared: NumPy's
    float64 products round differently for a batch of one than for a batch of four."""
    model, x, kwargs, serial, _ = mlp
    batch = verify(model.network, x, **kwargs)
    assert serial.samples == batch.samples == len(x)
    for merged, whole in zip(serial.rows, batch.rows):
        assert merged.name == whole.name
        assert [(c.name, c.holds, c.required) for c in merged.checks] == \
               [(c.name, c.holds, c.required) for c in whole.checks]
        for field in ("negative_inputs", "near_ties", "root_point_mismatches", "root_point_ambiguous",
                      "root_points_active", "root_points_inside", "root_point_compared", "root_points_reference",
                      "balance_reference", "conservation_reference", "mixed_signs", "positive_domain"):
            assert getattr(merged, field) == getattr(whole, field), (merged.name, field)
        assert merged.root_point_compared > 0 or merged.name == "epsilon"


def test_merge_takes_maxima_and_sums_over_the_samples(mlp):
    _, _, _, serial, per_sample = mlp
    for position, row in enumerate(serial.rows):
        parts = [result["report"]["rows"][position] for result in per_sample]
        assert row.max_ulps == max(part["max_ulps"] for part in parts)
        assert row.max_error_over_bound == max(part["max_error_over_bound"] for part in parts)
        assert row.negative_inputs == sum(part["negative_inputs"] for part in parts)
        assert row.root_points_inside == sum(part["root_points_inside"] for part in parts)


def test_merge_is_by_sample_index_not_by_arrival(mlp):
    _, _, _, serial, per_sample = mlp
    shuffled = [per_sample[k] for k in (2, 0, 3, 1)]
    assert _comparable(merge_verify("digits-mlp", 30, shuffled)) == _comparable(serial)


@pytest.mark.parametrize("indices", [(0, 1, 1, 3), (0, 1, 2), (1, 2, 3, 4)])
def test_merge_refuses_a_sample_twice_or_missing(mlp, indices):
    _, _, _, _, per_sample = mlp
    results = [dict(per_sample[min(k, 3)], index=k) for k in indices]
    with pytest.raises(LRPError, match="once each"):
        merge_verify("digits-mlp", 30, results, n_samples=4)


def test_merged_failure_is_a_failure(mlp):
    """A sample whose agreement fails makes the merged row fail, with its worst value."""
    _, _, _, _, per_sample = mlp
    broken = json.loads(json.dumps(per_sample))
    broken[2]["report"]["rows"][0]["max_error_over_bound"] = 7.5
    merged = merge_verify("digits-mlp", 30, broken)
    agreement = next(c for c in merged.rows[0].checks if c.name == "agreement")
    assert not agreement.holds and "7.5" in agreement.detail and not merged.ok
    assert merged.rows[1].ok


def test_audit_attribution_of_the_wrong_shape_is_refused_before_any_work():
    model = load_model("digits-mlp")
    x = model.test_images[:3]
    with pytest.raises(ShapeError, match="one relevance per input"):
        audit_serial(model.network, x, attribution=np.zeros((2, *x.shape[1:])), rule="zplus")


def test_without_the_flags_verify_imports_no_dask():
    code = ("import sys; from lrp_num.cli import main; "
            "status = main(['verify', '--model', 'digits-mlp', '--rules', 'zplus', '--samples', '1', "
            "'--dps', '20', '--json']); "
            "assert status == 0, status; "
            "assert not any(name.split('.')[0] in ('dask', 'distributed') for name in sys.modules), 'dask imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", [["verify", "--model", "digits-mlp", "--rules", "zplus"],
                                     ["audit", "--library", "zennit", "--model", "digits-mlp", "--rule", "zplus"]])
@pytest.mark.parametrize("flag", [["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:8786"]])
def test_without_dask_the_flags_are_one_line_naming_the_extra(monkeypatch, capsys, command, flag):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    assert main([*command, *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lrp-toolkit[distributed]" in err, err


@pytest.mark.parametrize("command", [["verify", "--model", "digits-mlp"],
                                     ["audit", "--library", "zennit", "--model", "digits-mlp", "--rule", "zplus"]])
def test_zero_workers_is_one_line_and_exit_2(capsys, command):
    assert main([*command, "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_verify_inputs_file_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((3, 5)))
    assert main(["verify", "--model", "digits-mlp", "--inputs", str(path), "--rules", "zplus"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "x.npy" in err


def test_verify_inputs_file_without_workers(tmp_path, capsys, mlp):
    model, x, _, _, _ = mlp
    path = tmp_path / "x.npy"
    np.save(path, x[:2])
    assert main(["verify", "--model", "digits-mlp", "--inputs", str(path), "--rules", "zplus", "--dps", "30",
                 "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["samples"] == 2 and "per_sample" not in report


# -- on a local Dask cluster ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    from lrp_num.distributed import SCHEDULER_HTTP

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, scheduler_kwargs=SCHEDULER_HTTP) as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


def test_distributed_report_equals_the_serial_one(mlp, dask_client):
    from lrp_num.distributed import verify_distributed

    model, x, kwargs, serial, per_sample = mlp
    report, results = verify_distributed(dask_client, model.network, x, **kwargs)
    assert [result["index"] for result in results] == list(range(len(x)))
    assert _comparable(report) == _comparable(serial)
    assert report.ok


def test_a_worker_killed_mid_run_costs_a_retry_not_a_sample(mlp, dask_client):
    """End one worker process (SIGKILL) while it computes: every sample comes back exactly once
    and the merged report equals the serial one."""
    from lrp_num.distributed import verify_distributed

    model, x, kwargs, serial, _ = mlp
    x8 = np.concatenate([x, x[::-1]])  # 8 tasks: both workers busy for a while
    targets = np.concatenate([kwargs["targets"], kwargs["targets"][::-1]])
    expected, _ = verify_serial(model.network, x8, **{**kwargs, "targets": targets})
    pids = dask_client.run(os.getpid)
    killed = {}

    def kill_a_busy_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            processing = dask_client.processing()
            busy = [address for address, keys in processing.items() if any("verifying" in str(k) for k in keys)]
            if len(busy) == 2:
                time.sleep(0.3)  # inside a task, not between two
                address = busy[0]
                killed["address"], killed["keys"] = address, list(processing[address])
                os.kill(pids[address], signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    report, results = verify_distributed(dask_client, model.network, x8, **{**kwargs, "targets": targets})
    killer.join()
    assert killed, "no worker was killed while both computed"
    assert killed["keys"], "the killed worker held no task"
    assert sorted(result["index"] for result in results) == list(range(len(x8)))
    assert _comparable(report) == _comparable(expected)
    dask_client.wait_for_workers(2, timeout=60)  # the nanny restarts the worker
    assert pids[killed["address"]] not in dask_client.run(os.getpid).values()


def test_verify_cli_on_workers_lists_per_sample_results(tmp_path, capsys, monkeypatch, mlp):
    """--json lists each sample's report; on a terminal a bar counts the completed samples."""
    pytest.importorskip("distributed")
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda self: True)  # as tests/test_cli_progress.py
    model, x, kwargs, _, _ = mlp
    path = tmp_path / "x.npy"
    np.save(path, x[:3])
    assert main(["verify", "--model", "digits-mlp", "--inputs", str(path), "--rules", "zplus", "--dps", "30",
                 "--workers", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "verifying digits-mlp" in captured.err and "/3 [" in captured.err
    [report] = json.loads(captured.out)
    assert report["samples"] == 3 and report["ok"]
    assert [result["index"] for result in report["per_sample"]] == [0, 1, 2]
    assert all(result["report"]["samples"] == 1 for result in report["per_sample"])
    expected, _ = verify_serial(model.network, x[:3], rules=("zplus",), composites=(), dps=30,
                                input_domain=model.input_domain, model_name="digits-mlp")
    assert [row["max_ulps"] for row in report["rows"]] == [row.max_ulps for row in expected.rows]


def test_audit_on_workers_equals_the_serial_audit(dask_client):
    pytest.importorskip("torch")
    from lrp_num.audit.zennit_adapter import import_zennit
    from lrp_num.distributed import audit_distributed

    try:
        import_zennit()
    except ImportError:
        pytest.skip("zennit is not installed")

    model = load_model("digits-mlp")
    x = model.test_images[:2]
    common = dict(rule="zplus", composite=None, target=None, parameters={}, input_domain=model.input_domain,
                  dps=30, tolerance=None, strict=False)
    batch = audit_distributed(dask_client, model.network, x, library="zennit", **common)
    serial = audit_serial(model.network, x, library="zennit", **common)

    def without_times(data):
        return [{k: v for k, v in result["report"].items() if k != "seconds"} for result in data.per_sample]

    assert without_times(batch) == without_times(serial)
    assert batch.exit_status == serial.exit_status == 0
    assert "2 of 2 sample(s) match" in batch.render_table()


def test_verify_on_an_existing_cluster_with_scheduler(capsys, mlp, dask_client):
    model, x, _, _, _ = mlp
    address = dask_client.scheduler.address
    assert address.startswith("tcp://127.0.0.1:")
    assert main(["verify", "--model", "digits-mlp", "--samples", "2", "--rules", "zplus", "--dps", "30",
                 "--scheduler", address, "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    expected, _ = verify_serial(model.network, x[:2], rules=("zplus",), composites=(), dps=30,
                                targets=model.test_labels[:2].astype(int), input_domain=model.input_domain,
                                model_name="digits-mlp")
    assert [result["index"] for result in report["per_sample"]] == [0, 1]
    assert [row["max_ulps"] for row in report["rows"]] == [row.max_ulps for row in expected.rows]
    assert len(dask_client.scheduler_info()["workers"]) == 2  # the cluster is still there afterwards


def test_the_benchmark_runs_and_its_inputs_stay_in_the_box(tmp_path):
    """benchmarks/distributed_speed.py end to end on 2 inputs and 1 worker (speed not asserted)."""
    pytest.importorskip("distributed")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from distributed_speed import shifted_inputs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    images = load_model("digits-cnn").test_images
    x = shifted_inputs(images, 32)
    assert x.shape == (32, *images.shape[1:]) and x.min() >= 0 and x.max() <= 1
    assert len({row.tobytes() for row in x}) == 32 and np.array_equal(x[:8], images)
    out = tmp_path / "speed.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distributed_speed.py"), "--inputs", "2",
                           "--dps", "20", "--workers", "1", "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr
    [result] = json.loads(out.read_text())["results"]
    assert result["workers"] == 1 and result["ok"] and result["compute_s"] > 0
