"""Recovery for the master: lineage for lost map outputs, restore from a checkpoint, save one.

A mixin of :class:`~mixfleet.mapreduce.master.Master` (it uses the master's
table, stores, file systems and counters).

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

import time

import ray

from mixfleet.mapreduce import checkpoint as ckpt
from mixfleet.mapreduce.tasks import State, Task


class Recovery:
    # --- lineage ----------------------------------------------------------------------
    def _outputs_lost(self, task: Task, attempt, lost: list[str]) -> None:
        """A reduce attempt could not fetch the blocks of maps ``lost``: retry it after those
        maps (and every map whose blocks lived in the same, dead, store) ran again."""
        self._lost(task, attempt)
        nodes = {t.result.get("node") for t in self.table.of_kind("map") if t.id in lost and t.result}
        self.recompute |= {t.id for t in self.table.of_kind("map")
                           if t.state is State.DONE and t.result and t.result.get("refs")
                           and (t.id in lost or t.result.get("node") in nodes)}

    def _recompute_lost(self, maps: list[Task]) -> None:
        for t in maps:
            if t.id in self.recompute and t.state is State.DONE:
                self._merge_counters(t.result["counters"], sign=-1)
                self.table.recompute(t)
                self.spec["maps_recomputed"] = self.spec.get("maps_recomputed", 0) + 1
        self.recompute = set()

    def _restore_done(self, tasks: list[Task], saved: list, kind: str) -> None:
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
            result = dict(s["result"])
            if kind == "map":
                files = result.get("files")
                if task.id in refs:
                    result["refs"] = refs[task.id]
                elif files and all(f is None or self.ckpt_fs.get_file_info(f).type == pafs.FileType.File
                                   for f in files):
                    result["refs"] = None
                else:
                    continue
            elif self.output[0].get_file_info(result["path"]).type != pafs.FileType.File:
                continue
            task.state, task.result = State.DONE, result
            self.restored["maps" if kind == "map" else "reduces"] += 1
            self._merge_counters(result["counters"])
            for key, n in result.get("hot", {}).items():
                self.hot[key] = self.hot.get(key, 0) + n

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
    def _restore_stats(self) -> None:
        s = self.saved.get("stats", {})
        self.table.launched += s.get("launched", 0)
        self.table.failed_attempts += s.get("failed", 0)
        self.table.speculative += s.get("speculative", 0)
        for kind, n in s.get("launched_by_kind", {}).items():
            self.table.launched_by_kind[kind] = self.table.launched_by_kind.get(kind, 0) + n
        for k, v in s.get("spec", {}).items():
            self.spec[k] = self.spec.get(k, 0) + v

    def _save(self, force: bool = False) -> None:
        if not self.cfg.checkpoint or (not force and time.monotonic() - self.last_save < self.cfg.checkpoint_every_s):
            return
        self.last_save = time.monotonic()
        steps = {}
        for step, st in self.step_state.items():
            steps[step] = {"boundaries": st.get("boundaries"),
                           "maps": [_task_json(t) for t in st.get("maps", [])],
                           "reduces": [_task_json(t) for t in st.get("reduces", [])]}
        t = self.table  # totals include the restored incarnations' (see _restore_stats)
        stats = {"launched": t.launched, "failed": t.failed_attempts, "speculative": t.speculative,
                 "launched_by_kind": t.launched_by_kind, "spec": dict(self.spec)}
        ckpt.save(self.ckpt_fs, self.ckpt_path, {"fingerprint": self.fingerprint, "phase": self.phase,
                                                 "step": self.step, "incarnation": self.incarnation,
                                                 "steps": steps, "stats": stats})


def _task_json(t: Task) -> dict:
    result = None
    if t.state is State.DONE and t.result is not None:
        result = {k: v for k, v in t.result.items() if k not in ("refs", "block", "error")}
        result["hot"] = {str(k): v for k, v in result.get("hot", {}).items()}
    return {"id": t.id, "index": t.index, "state": t.state.value,
            "pieces": [ckpt.piece_to_json(p) for p in t.pieces], "result": result}


