"""The master's recovery: lineage for lost map outputs, restore from a checkpoint, save one.

A collaborator of :class:`~mixfleet.mapreduce.master.Master`, built with the
task table, the statistics (:class:`~mixfleet.mapreduce.reporting.Reporting`),
the block stores and the output file system; it owns the checkpoint state
(``saved``, ``step_state``) and the set of maps to ``recompute``.

- Lineage: when a reduce cannot fetch a map block because the node (and so
  the block store) holding it died, the reduce attempt is retried and every
  finished map whose blocks lived in that store runs again (as Spark and
  Hadoop re-run the maps of a lost node); their old counters are taken back
  so that counters stay those of one winning attempt per task.
- Restore: a task recorded done is restored only if its output is still
  reachable: map blocks held by a block store, durable shuffle files, or a
  reduce attempt file under ``_temporary``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray

from mixfleet.mapreduce import checkpoint as ckpt
from mixfleet.mapreduce.plan import JobPlan
from mixfleet.mapreduce.reporting import Reporting
from mixfleet.mapreduce.results import MapDone
from mixfleet.mapreduce.tasks import State, Task, TaskTable


class Recovery:
    def __init__(self, table: TaskTable, stats: Reporting, plan: JobPlan):
        self.table, self.stats, self.cfg = table, stats, plan.cfg
        self.stores, self.output_fs = plan.stores, plan.output[0]
        self.fingerprint, self.incarnation = plan.fingerprint, plan.incarnation
        self.recompute: set[str] = set()  # map tasks whose outputs a reduce could not fetch
        self.saved: dict = {}  # the checkpoint this master started from
        self.step_state: dict[str, dict] = {}  # per step: boundaries and its map and reduce tasks
        self.last_save = 0.0
        self.ckpt_fs: Any = None
        self.ckpt_path = ""
        if self.cfg.checkpoint:
            from mixfleet.mapreduce.inputs import filesystem_for

            self.ckpt_fs, self.ckpt_path = filesystem_for(self.cfg.checkpoint)

    # --- lineage ----------------------------------------------------------------------
    def outputs_lost(self, lost: list[str]) -> None:
        """A reduce attempt could not fetch the blocks of maps ``lost``: rerun those maps and
        every map whose blocks lived in the same, dead, store."""
        maps = self.table.of_kind("map")
        nodes = {t.result.node for t in maps if t.id in lost and t.result}
        self.recompute |= {t.id for t in maps if t.state is State.DONE and t.result and t.result.refs
                           and (t.id in lost or t.result.node in nodes)}

    def recompute_lost(self, maps: list[Task]) -> None:
        for t in maps:
            if t.id in self.recompute and t.state is State.DONE:
                self.stats.merge_counters(t.result.counters, sign=-1)
                self.table.recompute(t)
                self.stats.spec["maps_recomputed"] = self.stats.spec.get("maps_recomputed", 0) + 1
        self.recompute = set()

    # --- restore ----------------------------------------------------------------------
    def load(self) -> dict:
        """Read the checkpoint (if any) and add its attempt totals; returns its steps."""
        if not self.cfg.checkpoint:
            return {}
        self.saved = ckpt.load(self.ckpt_fs, self.ckpt_path, self.fingerprint) or {}
        s = self.saved.get("stats", {})
        self.table.launched += s.get("launched", 0)
        self.table.failed_attempts += s.get("failed", 0)
        self.table.speculative += s.get("speculative", 0)
        for kind, n in s.get("launched_by_kind", {}).items():
            self.table.launched_by_kind[kind] = self.table.launched_by_kind.get(kind, 0) + n
        for k, v in s.get("spec", {}).items():
            self.stats.spec[k] = self.stats.spec.get(k, 0) + v
        return self.saved.get("steps", {})

    def restore_done(self, tasks: list[Task], saved: list, kind: str) -> None:
        """Mark tasks done whose checkpointed output is still reachable."""
        import pyarrow.fs as pafs

        done = {s["id"]: s for s in saved if s.get("state") == "done"}
        if not done:
            return
        refs = self._lookup(list(done)) if kind == "map" else {}
        for task in tasks:
            s = done.get(task.id)
            if s is None:
                continue
            result = ckpt.result_from_json(kind, s["result"])
            if isinstance(result, MapDone):
                if task.id in refs:
                    result = dataclasses.replace(result, refs=refs[task.id])
                elif not (result.files and all(f is None or self.ckpt_fs.get_file_info(f).type == pafs.FileType.File
                                               for f in result.files)):
                    continue
            elif self.output_fs.get_file_info(result.path).type != pafs.FileType.File:
                continue
            task.state, task.result = State.DONE, result
            self.stats.won(result, restored=True)

    def _lookup(self, task_ids: list[str]) -> dict[str, list]:
        """The kept block references of ``task_ids``, from every store still alive."""
        refs: dict[str, list] = {}
        for store in self.stores.values():
            try:
                refs.update(ray.get(store.lookup.remote(task_ids)))
            except ray.exceptions.RayActorError:  # its node is gone, and its blocks with it
                continue
        return refs

    # --- checkpoint -------------------------------------------------------------------
    def save(self, phase: str, step: int, force: bool = False) -> None:
        if not self.cfg.checkpoint or (not force and time.monotonic() - self.last_save < self.cfg.checkpoint_every_s):
            return
        self.last_save = time.monotonic()
        steps = {}
        for s, st in self.step_state.items():
            steps[s] = {"boundaries": st.get("boundaries"),
                        "maps": [ckpt.task_to_json(t) for t in st.get("maps", [])],
                        "reduces": [ckpt.task_to_json(t) for t in st.get("reduces", [])]}
        t = self.table  # totals include the restored incarnations' (see load)
        stats = {"launched": t.launched, "failed": t.failed_attempts, "speculative": t.speculative,
                 "launched_by_kind": t.launched_by_kind, "spec": dict(self.stats.spec)}
        ckpt.save(self.ckpt_fs, self.ckpt_path, {"fingerprint": self.fingerprint, "phase": phase, "step": step,
                                                 "incarnation": self.incarnation, "steps": steps, "stats": stats})
