"""The master's statistics: merged counters, the live status and the final job report.

A collaborator of :class:`~mixfleet.mapreduce.master.Master`, built with the
task table it reads and the few plan facts it reports; the master (and
:mod:`~mixfleet.mapreduce.recovery`) feed it winners and events.

Invariants:
- ``counters`` grows only through :meth:`Reporting.won` /
  :meth:`Reporting.merge_counters`, fed by winning attempts and restored
  tasks, never by losers;
- the report adds derived groups on a copy: ``skew`` (hot keys over
  ``hot_key_fraction`` of the map output, and the largest reduce partition
  over the mean) and ``speculation``, plus attempt/restore totals under
  ``mixfleet``;
- timeline times are seconds since the master started (``t0``).
"""

from __future__ import annotations

import time
from typing import Any

from mixfleet.mapreduce.results import JobReport, MapDone, ReduceDone
from mixfleet.mapreduce.tasks import TaskTable


class Reporting:
    def __init__(self, table: TaskTable, num_steps: int, bytes_total: int, hot_key_fraction: float,
                 incarnation: int):
        self.table, self.num_steps, self.bytes_total = table, num_steps, bytes_total
        self.hot_key_fraction, self.incarnation = hot_key_fraction, incarnation
        self.t0 = time.monotonic()
        self.bytes_done = 0  # claimed by first attempts (see Master.claim)
        self.counters: dict[str, dict[str, int]] = {}
        self.hot: dict[Any, int] = {}
        self.reduce_records: list[int] = []  # per reduce of the current step: the skew figure
        self.status_line = ""
        self.spec = {"backups_launched": 0, "backups_won": 0, "wasted_ms": 0, "presumed_lost": 0,
                     "workers_replaced": 0}
        self.restored = {"maps": 0, "reduces": 0}

    def merge_counters(self, counters: dict, sign: int = 1) -> None:
        """Add a winner's counters (``sign=-1`` takes back those of a map that runs again)."""
        for group, names in counters.items():
            bucket = self.counters.setdefault(group, {})
            for name, n in names.items():
                bucket[name] = bucket.get(name, 0) + sign * n

    def won(self, result: MapDone | ReduceDone, restored: bool = False) -> None:
        """Count a winning (or, ``restored``, a checkpointed) attempt's output."""
        self.merge_counters(result.counters)
        if isinstance(result, MapDone):
            for key, n in result.hot.items():
                self.hot[key] = self.hot.get(key, 0) + n
        if restored:
            self.restored["maps" if isinstance(result, MapDone) else "reduces"] += 1
            return
        if isinstance(result, ReduceDone):
            self.reduce_records.append(result.counters.get("mixfleet", {}).get("reduce_input_records", 0))
        if result.status:
            self.status_line = result.status

    def status(self, phase: str, step: int) -> dict:
        """The live status the runner polls (progress bars, ``--json`` progress)."""
        return {"phase": phase, "step": step, "steps": self.num_steps,
                "maps": self.table.counts("map"), "reduces": self.table.counts("reduce"),
                "bytes_done": min(self.bytes_done, self.bytes_total), "bytes_total": self.bytes_total,
                "elapsed_s": time.monotonic() - self.t0, "status": self.status_line}

    def report(self, status: str, parts: list | None = None, error: BaseException | None = None) -> JobReport:
        t = self.table
        counters = {g: dict(v) for g, v in self.counters.items()}
        total_out = counters.get("mixfleet", {}).get("map_output_records", 0)
        skew = {f"hot_key:{k}": n for k, n in sorted(self.hot.items(), key=lambda kv: -kv[1])[:10]
                if total_out and n >= self.hot_key_fraction * total_out}
        if self.reduce_records and sum(self.reduce_records):
            mean = sum(self.reduce_records) / len(self.reduce_records)
            skew["partition_max_over_mean_pct"] = int(100 * max(self.reduce_records) / mean)
        if skew:
            counters["skew"] = skew
        counters["speculation"] = dict(self.spec)
        runtime = counters.setdefault("mixfleet", {})
        runtime.update(map_attempts=t.launched_by_kind.get("map", 0),
                       reduce_attempts=t.launched_by_kind.get("reduce", 0),
                       maps_restored=self.restored["maps"], reduces_restored=self.restored["reduces"],
                       master_restarts=self.incarnation)
        return JobReport(status, len(t.of_kind("map")), len(t.of_kind("reduce")),
                         {"launched": t.launched, "failed": t.failed_attempts, "speculative": t.speculative},
                         counters, parts or [], error, self._timeline())

    def _timeline(self) -> list[dict]:
        return [{"task": t.id, "kind": t.kind, "worker": a.worker, "start": a.started - self.t0,
                 "end": (a.finished or time.monotonic()) - self.t0, "outcome": a.outcome,
                 "speculative": a.speculative}
                for t in self.table.tasks.values() for a in t.attempts]
