"""Recovery for the master: restore finished tasks from a checkpoint, and save one.

A mixin of :class:`~mixfleet.mapreduce.master.Master` (it uses the master's
table, store, file systems and counters). A task recorded done is restored
only if its output is still reachable: map blocks held by the block store,
durable shuffle files, or a reduce attempt file under ``_temporary``.
"""

from __future__ import annotations

import time

import ray

from mixfleet.mapreduce import checkpoint as ckpt
from mixfleet.mapreduce.tasks import State, Task


class Recovery:
    def _restore_done(self, tasks: list[Task], saved: list, kind: str) -> None:
        """Mark tasks done whose checkpointed output is still reachable."""
        import pyarrow.fs as pafs

        done = {s["id"]: s for s in saved if s.get("state") == "done"}
        if not done:
            return
        refs = ray.get(self.store.lookup.remote(list(done))) if kind == "map" else {}
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


