"""The master's worker pool: worker actors, which are busy, and losing attempts on their way out.

Invariants:
- ``workers[i]`` is worker ``i``'s live actor handle; a replaced worker gets a
  new actor under the same index (so ``worker_index`` in user code is stable);
- ``busy[i]`` is the attempt worker ``i`` runs, including a losing map that is
  still stopping (``draining``): no task is handed to a busy worker;
- a losing map stops by itself at its next claim; it gets ``drain_grace_s`` to
  do so and keeps its worker (a new actor costs seconds), after that its worker
  is replaced. A losing reduce, which may be writing an attempt file, has its
  worker replaced at once. The commit waits until no loser runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import ray

from mixfleet.mapreduce.plan import JobPlan
from mixfleet.mapreduce.reporting import Reporting
from mixfleet.mapreduce.worker import Worker


class WorkerPool:
    def __init__(self, plan: JobPlan, stats: Reporting, shuffle: tuple[Any, str] | None):
        self.plan, self.stats, self.shuffle = plan, stats, shuffle
        self.workers: list[Any] = [None] * plan.num_workers
        self.where: list[tuple[str, int] | None] = [None] * plan.num_workers  # (node id, pid) per worker
        self.busy: dict[int, Any] = {}
        self.draining: dict[asyncio.Future, tuple[Any, Any, Any, float]] = {}  # losing maps, until a deadline

    def spawn(self, i: int) -> None:
        me = ray.get_runtime_context().current_actor
        plan = self.plan
        self.workers[i] = ray.remote(Worker).options(num_cpus=plan.worker_cpus, max_restarts=0,
                                                     max_concurrency=1).remote(
            [plan.job_ref], plan.files, me, plan.stores, plan.cfg, i, self.shuffle)
        self.where[i] = None  # set by the first task it starts

    def replace(self, i: int, handle: Any) -> None:
        if self.workers[i] is handle:  # not replaced already
            try:
                ray.kill(handle)
            except Exception:  # already dead
                pass
            self._force_kill(i)
            self.spawn(i)
            self.stats.spec["workers_replaced"] += 1

    def _force_kill(self, i: int) -> None:
        """A frozen process (SIGSTOP, a hung syscall) ignores ray.kill's polite exit and keeps
        its CPU reserved; on the master's own node, SIGKILL it directly."""
        where = self.where[i]
        if where and where[0] == ray.get_runtime_context().get_node_id():
            try:
                os.kill(where[1], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_all(self) -> None:
        for i, w in enumerate(self.workers):
            if w is not None:
                ray.kill(w)
                self.workers[i] = None

    # --- losers ----------------------------------------------------------------------
    def hand_over(self, inflight: dict) -> None:
        """A map phase is done: its losers stop at their next claim while the next phase runs."""
        deadline = time.monotonic() + self.plan.cfg.drain_grace_s
        self.draining.update({f: (*v, deadline) for f, v in inflight.items()})
        inflight.clear()

    def reap(self, final: bool = False) -> None:
        """Free the workers of losing maps that stopped; replace those past their deadline."""
        now = time.monotonic()
        for fut, (_task, attempt, handle, deadline) in list(self.draining.items()):
            if fut.done() or final or now > deadline:
                del self.draining[fut]
                self.stats.spec["wasted_ms"] += int(1000 * (now - attempt.started))
                if self.busy.get(attempt.worker) is attempt:
                    del self.busy[attempt.worker]
                if not fut.done() or (not fut.cancelled() and isinstance(fut.exception(), ray.exceptions.RayActorError)):
                    self.replace(attempt.worker, handle)  # past its deadline, or it died on the way out

    async def drain_all(self) -> None:
        """Before the commit: every losing map has stopped or lost its worker."""
        if self.draining:
            await asyncio.wait(self.draining, timeout=self.plan.cfg.drain_grace_s)
            self.reap(final=True)

    async def drain(self, inflight: dict) -> None:
        """A reduce phase is done: count its losers' time as wasted and make sure they are gone,
        so that no loser writes an attempt file after the commit (their workers are replaced)."""
        now = time.monotonic()
        gone = []
        for fut, (_task, attempt, handle) in list(inflight.items()):
            self.stats.spec["wasted_ms"] += int(1000 * (now - attempt.started))
            self.busy.pop(attempt.worker, None)
            del inflight[fut]
            if not fut.done():
                self.replace(attempt.worker, handle)
                gone.append(fut)
        if gone:
            await asyncio.wait(gone, timeout=max(10.0, self.plan.cfg.heartbeat_timeout_s))
