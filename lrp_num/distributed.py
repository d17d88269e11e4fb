"""Verification and audits of many inputs on many workers, with Dask's distributed scheduler.

``lrp verify`` and ``lrp audit`` split a batch of inputs into one task per sample and run the
tasks on a Dask cluster: a local one of ``--workers N`` processes, or an existing one at
``--scheduler ADDRESS``. Each task returns its sample's result as plain data (dicts of numbers
and strings); the client gathers the results by sample index, so that a task recomputed after
its worker died (Dask reschedules the tasks a lost worker held, and ``retries`` re-runs a task
that raised) fills its own slot once and is never counted twice. The merge then combines the
per-sample results into one report, with the same numbers as a serial run over the same
per-sample results (:func:`verify_serial`):

* maxima over the samples for the error measures (ulps, relative error, error over bound,
  conservation, balance, forward error);
* sums for the counts (negative inputs, near ties, root points inside and active, mismatches);
* the fraction of root points in the domain from the summed counts, the times as means.

The checks of a merged row are set from the merged measurements by the same function as a
row of a batch (:func:`lrp_num.verify.set_checks`).

Each worker computes with one BLAS thread (threadpoolctl), so that N workers use N cores.
Dask is an optional extra (``pip install 'lrp-toolkit[distributed]'``); nothing here imports it
until a cluster is asked for.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from lrp_num.errors import LRPError, MissingDependencyError

INSTALL_HINT = "pip install 'lrp-toolkit[distributed]'"
#: local workers: one process each, one thread, one BLAS thread
ONE_THREAD_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: the scheduler's HTTP endpoints (health, metrics; no dashboard) on a free port of 127.0.0.1 only
SCHEDULER_HTTP = {"dashboard_address": "127.0.0.1:0", "dashboard": False}
#: how often a task that raised is run again (a worker's death is handled by the scheduler)
RETRIES = 2


def _one_blas_thread():
    """One BLAS thread for a task (threadpoolctl, part of the distributed extra), so that N
    workers use N cores; a no-op where threadpoolctl is missing (a serial run in the test extra)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def require_dask(flag: str = "--workers/--scheduler") -> None:
    """Raise MissingDependencyError (one line naming the extra) when dask.distributed is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MissingDependencyError(f"{flag} needs Dask's distributed scheduler: {INSTALL_HINT}") from None


@contextlib.contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``scheduler``, or to a new local cluster of
    ``workers`` processes (one thread each) bound to 127.0.0.1 with no dashboard.

    Raises
    ------
    MissingDependencyError
        Dask's distributed scheduler is not installed.
    LRPError
        ``workers`` below 1, or no scheduler answers at ``scheduler``.
    """
    require_dask()
    import distributed

    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as error:
            raise LRPError(f"--scheduler {scheduler!r}: no Dask scheduler answers there ({error})") from None
        with client:
            yield client
        return
    workers = 1 if workers is None else workers
    if workers < 1:
        raise LRPError(f"--workers must be at least 1, got {workers}")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, scheduler_kwargs=SCHEDULER_HTTP,
                                  env=ONE_THREAD_ENVIRONMENT, silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def map_samples(client, task: Callable[[Any, Any], Any], shared: Any, items: Sequence, label: str,
                retries: int = RETRIES) -> list:
    """``[task(shared, item) for item in items]`` computed on the cluster, in the order of ``items``.

    ``shared`` (the model and settings) goes to every worker once; each item is one task. The
    results are gathered by item index as they complete (a progress bar on stderr), so each
    index is filled exactly once however often its task ran.

    Raises
    ------
    LRPError
        A task's own documented error (the first one seen, re-raised as it is), or a sample
        whose task could not be completed (its workers kept dying: distributed's KilledWorker).
    """
    from concurrent.futures import CancelledError

    from distributed import KilledWorker, as_completed

    from lrp_num.progress import progress

    [shared_future] = client.scatter([shared], broadcast=True, hash=False)
    run = uuid.uuid4().hex[:8]
    futures = {client.submit(task, shared_future, item, key=f"{label}-{run}-{k}", retries=retries, pure=False): k
               for k, item in enumerate(items)}
    results: dict[int, Any] = {}
    try:
        for future in progress(as_completed(futures), label, total=len(futures)):
            k = futures[future]
            if k in results:  # cannot happen with one future per index; guards the merge regardless
                continue
            try:
                results[k] = future.result()
            except (KilledWorker, CancelledError) as error:  # the task's workers kept dying, or the cluster went
                raise LRPError(f"{label}: sample {k} could not be computed ({type(error).__name__}: {error})") \
                    from None
    finally:
        client.cancel(list(futures))
    missing = [k for k in range(len(items)) if k not in results]
    if missing:
        raise LRPError(f"{label}: no result for sample(s) {missing}")
    return [results[k] for k in range(len(items))]


# -- lrp verify -----------------------------------------------------------------------------------

def verify_sample(settings: dict, item: dict) -> dict:
    """Verify one sample (the task of :func:`verify_distributed`): ``{"index", "report"}``, the
    report of :func:`lrp_num.verify.verify` on that sample alone as plain data."""
    from lrp_num.verify import verify

    target = item["target"]
    with _one_blas_thread():
        report = verify(settings["network"], np.asarray(item["x"])[None],
                        rules=settings["rules"], composites=settings["composites"],
                        targets=None if target is None else np.asarray([target]),
                        input_domain=settings["input_domain"], dps=settings["dps"],
                        model_name=settings["model_name"], conventions=settings.get("conventions"))
    return {"index": item["index"], "report": report.as_dict()}


def _verify_items(x: np.ndarray, targets) -> list[dict]:
    return [{"index": k, "x": np.asarray(x[k], dtype=np.float64),
             "target": None if targets is None else int(targets[k])} for k in range(len(x))]


def _verify_settings(network, rules, composites, input_domain, dps, model_name, conventions) -> dict:
    from lrp_num.checks import check_dps

    return {"network": network, "rules": tuple(rules), "composites": tuple(composites),
            "input_domain": input_domain, "dps": check_dps(dps), "model_name": model_name,
            "conventions": conventions}


def verify_distributed(client, network, x: np.ndarray, *, rules: Sequence[str], composites: Sequence[str],
                       targets=None, input_domain=None, dps: int = 50, model_name: str = "model",
                       conventions=None):
    """:func:`lrp_num.verify.verify` of the batch ``x``, one task per sample on ``client``'s cluster.

    Returns
    -------
    (VerifyReport, list of dict)
        The merged report (:func:`merge_verify`) and the per-sample results, in sample order.
    """
    settings = _verify_settings(network, rules, composites, input_domain, dps, model_name, conventions)
    per_sample = map_samples(client, verify_sample, settings, _verify_items(x, targets), f"verifying {model_name}")
    return merge_verify(model_name, settings["dps"], per_sample, len(x)), per_sample


def verify_serial(network, x: np.ndarray, *, rules: Sequence[str], composites: Sequence[str], targets=None,
                  input_domain=None, dps: int = 50, model_name: str = "model", conventions=None):
    """The same per-sample tasks and merge as :func:`verify_distributed`, in this process, one
    after the other (no Dask): the serial run a distributed one must equal."""
    settings = _verify_settings(network, rules, composites, input_domain, dps, model_name, conventions)
    per_sample = [verify_sample(settings, item) for item in _verify_items(x, targets)]
    return merge_verify(model_name, settings["dps"], per_sample, len(x)), per_sample


_MAXIMA = ("max_ulps", "max_relative", "max_error_over_bound", "conservation_float64", "conservation_reference",
           "balance_reference", "conservation_threshold", "forward_over_bound", "conservation_over_bound")
_SUMS = ("negative_inputs", "near_ties", "root_point_mismatches", "root_point_ambiguous", "root_points_active",
         "root_points_inside", "root_point_compared")
_MEANS = ("time_engine", "time_reference")


def merge_rows(parts: Sequence[dict], dps: int):
    """One :class:`~lrp_num.verify.RuleReport` from the rows (as dicts) of one rule or composite
    measured on single samples: what a row of the whole batch reports (see the module docstring).

    A rule whose engine refused a sample (outside its domain) is outside the domain for the
    batch, as in a batch run; its domain check holds when the reference refused every such sample.
    """
    from lrp_num.verify import Check, RuleReport, set_checks

    first = parts[0]
    row = RuleReport(first["name"], first["kind"])
    errors = [part["error"] for part in parts if part["error"] is not None]
    if errors:
        row.error = errors[0]
        return row
    outside = [part for part in parts if part["outside_domain"] is not None]
    if outside:
        row.outside_domain = outside[0]["outside_domain"]
        refused = all(check["holds"] for part in outside for check in part["checks"])
        detail = ("the reference refuses the inputs as the engine does" if refused
                  else "the engine refuses the inputs, the reference does not")
        row.checks = [Check("domain", refused, True, detail)]
        return row
    for name in _MAXIMA:
        setattr(row, name, max(part[name] for part in parts))
    for name in _SUMS:
        setattr(row, name, sum(part[name] for part in parts))
    for name in _MEANS:
        setattr(row, name, float(np.mean([part[name] for part in parts])))
    row.root_points_reference = (row.root_points_inside / row.root_points_active
                                 if row.root_points_active else None)
    engine = [part["root_points_engine"] for part in parts if part["root_points_engine"] is not None]
    row.root_points_engine = float(np.mean(engine)) if engine else None
    row.root_point_mismatch_nodes = sorted({node for part in parts for node in part["root_point_mismatch_nodes"]})
    for part in parts:
        for node, count in part["mixed_signs"].items():
            row.mixed_signs[node] = row.mixed_signs.get(node, 0) + count
    row.positive_domain = all(part["positive_domain"] for part in parts)
    return set_checks(row, dps)


def merge_verify(model_name: str, dps: int, per_sample: Sequence[dict], n_samples: int | None = None):
    """The :class:`~lrp_num.verify.VerifyReport` of the batch from its per-sample results
    (``{"index", "report"}`` dicts); each index 0 .. ``n_samples`` - 1 (default: as many as
    there are results) must appear exactly once, or LRPError."""
    from lrp_num.verify import VerifyReport

    n_samples = len(per_sample) if n_samples is None else n_samples
    indices = sorted(result["index"] for result in per_sample)
    if indices != list(range(n_samples)):
        raise LRPError(f"merge: the sample indices are not 0..{n_samples - 1} once each: {indices}")
    ordered = sorted(per_sample, key=lambda result: result["index"])
    reports = [result["report"] for result in ordered]
    names = [(row["name"], row["kind"]) for row in reports[0]["rows"]]
    rows = []
    for position, _ in enumerate(names):
        rows.append(merge_rows([report["rows"][position] for report in reports], dps))
    return VerifyReport(model_name, len(reports), dps, rows)


# -- lrp audit ------------------------------------------------------------------------------------

def audit_sample(settings: dict, item: dict) -> dict:
    """Audit one sample (the task of :func:`audit_distributed`): ``{"index", "report"}``, the
    :class:`~lrp_num.audit.compare.AuditReport` of that sample alone as plain data."""
    from lrp_num.audit.compare import audit_attribution, audit_library

    x = np.asarray(item["x"], dtype=np.float64)[None]
    common = settings["common"]
    with _one_blas_thread():
        if item.get("attribution") is None:
            report = audit_library(settings["network"], x, settings["library"], dtype=settings["dtype"], **common)
        else:
            report = audit_attribution(settings["network"], x, np.asarray(item["attribution"])[None],
                                       library=settings["for_library"], **common)
    return {"index": item["index"], "report": report.to_dict()}


def _audit_items(x: np.ndarray, attribution: np.ndarray | None) -> list[dict]:
    from lrp_num.errors import ShapeError

    if attribution is not None and np.shape(attribution) != np.shape(x):
        raise ShapeError(f"--attribution has shape {np.shape(attribution)}; split over workers it needs one "
                         f"relevance per input, the inputs' shape {np.shape(x)}")
    return [{"index": k, "x": np.asarray(x[k], dtype=np.float64),
             "attribution": None if attribution is None else np.asarray(attribution[k])} for k in range(len(x))]


def audit_distributed(client, network, x: np.ndarray, *, library: str | None = None,
                      attribution: np.ndarray | None = None, for_library: str | None = None,
                      dtype: str = "float64", **common) -> "AuditBatch":
    """Audit every sample of ``x`` on its own, one task per sample on ``client``'s cluster:
    ``library``'s LRP (:func:`lrp_num.audit.compare.audit_library`), or the saved ``attribution``
    (one relevance per input; :func:`lrp_num.audit.compare.audit_attribution`). ``common``: the
    keyword arguments both take (rule, composite, target, parameters, input_domain, dps,
    tolerance, strict)."""
    settings = {"network": network, "library": library, "for_library": for_library, "dtype": dtype,
                "common": common}
    label = f"auditing {library or 'the attribution'}"
    return AuditBatch(map_samples(client, audit_sample, settings, _audit_items(x, attribution), label))


def audit_serial(network, x: np.ndarray, *, library: str | None = None, attribution: np.ndarray | None = None,
                 for_library: str | None = None, dtype: str = "float64", **common) -> "AuditBatch":
    """The tasks of :func:`audit_distributed` in this process, one after the other (no Dask)."""
    settings = {"network": network, "library": library, "for_library": for_library, "dtype": dtype,
                "common": common}
    return AuditBatch([audit_sample(settings, item) for item in _audit_items(x, attribution)])


class AuditBatch:
    """The audits of the samples of a batch, each on its own, merged into one verdict.

    The batch matches when every sample does; ``exit_status`` is ``lrp audit``'s (0 or 1).
    ``per_sample``: ``{"index", "report"}`` with each sample's report as plain data, in order.
    """

    def __init__(self, per_sample: Sequence[dict]):
        indices = sorted(result["index"] for result in per_sample)
        if indices != list(range(len(per_sample))):
            raise LRPError(f"merge: the sample indices are not 0..{len(per_sample) - 1} once each: {indices}")
        self.per_sample = sorted(per_sample, key=lambda result: result["index"])

    @property
    def reports(self) -> list[dict]:
        return [result["report"] for result in self.per_sample]

    @property
    def exit_status(self) -> int:
        return max(report["exit_status"] for report in self.reports)

    @property
    def verdict(self) -> str:
        return "matches" if self.exit_status == 0 else "fails"

    def failing(self) -> list[int]:
        """The indices of the samples whose audit fails."""
        return [result["index"] for result in self.per_sample if result["report"]["exit_status"]]

    def to_dict(self) -> dict:
        first = self.reports[0]
        findings = sorted({finding for report in self.reports for finding in report["findings"]})
        return {"library": first["library"], "profile": first["profile"], "method": first["method"],
                "n_samples": len(self.per_sample), "verdict": self.verdict, "exit_status": self.exit_status,
                "findings": findings, "failing_samples": self.failing(), "per_sample": self.per_sample}

    def _rows(self) -> list[tuple[str, ...]]:
        rows = []
        for result in self.per_sample:
            report = result["report"]
            audits = report["nodes"] or report["layers"]
            own = max((a["own_relative"] for a in audits), default=0.0)
            dtd = max((a["dtd_relative"] for a in audits), default=0.0)
            at = report["deviation_at"]
            rows.append((str(result["index"]), report["verdict"], ", ".join(report["findings"]) or "-",
                         f"{own:.1e}", f"{dtd:.1e}", "-" if at is None else str(at)))
        return rows

    _COLUMNS = ("sample", "verdict", "findings", "own dev (rel)", "DTD dev (rel)", "deviates most at")

    def _header(self) -> str:
        first = self.reports[0]
        return (f"audit of {first['library']} against profile {first['profile']} and DTD: {first['method']}, "
                f"{len(self.per_sample)} sample(s) audited one by one, {first['dtype']}; "
                f"equal within {first['tolerance']}")

    def _verdict_line(self) -> str:
        failing = self.failing()
        return (f"verdict: {self.verdict} ({len(self.per_sample) - len(failing)} of {len(self.per_sample)} "
                "sample(s) match" + (f"; failing: {', '.join(map(str, failing))}" if failing else "") + ")")

    def render_table(self) -> str:
        """One row per sample (its verdict, findings and worst relative deviations), then the verdict."""
        rows = [self._COLUMNS] + self._rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._COLUMNS))]
        lines = [self._header(), ""]
        for n, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * width for width in widths))
        lines += ["", "deviations: max |R_lib - R_ref| over max |R_ref| at any layer, from the library's own "
                      "convention and from DTD; --json has every sample's full report", "", self._verdict_line()]
        return "\n".join(lines)

    def render_markdown(self) -> str:
        lines = [f"### {self._header()}", "", "| " + " | ".join(self._COLUMNS) + " |",
                 "|" + "---|" * len(self._COLUMNS)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self._rows()]
        return "\n".join(lines + ["", self._verdict_line()]) + "\n"

    def render_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=True, default=float)
