"""The master actor: owns the task table and drives the worker pool.

The master is an async Ray actor. ``run()`` executes the job step by step:
(sample for a range partitioner,) map phase, reduce phase, and for the last
step the job commit. The master assigns one task at a time to each idle
worker, so maps go out in rounds and memory stays bounded. Between
completions it

- lets an idle worker take over the unclaimed remainder of the longest
  running split (``claim`` reserves the bytes a map is about to read, so a
  cut never overlaps work; :mod:`splitting` sizes claims and cuts by the
  workers' rates);
- presumes an attempt silent for ``heartbeat_timeout_s`` lost, kills and
  replaces its worker and re-queues the task (a ``RayActorError`` does the
  same at once);
- launches backup attempts for stragglers (:mod:`speculation`: past 1.5x
  the phase's median task time, when the backup should finish first); the first attempt to finish
  wins and the others are told to stop at their next claim; a losing map stops while the next
  phase runs on the other workers;
- writes the durable checkpoint (:mod:`checkpoint`) at phase transitions
  and every ``checkpoint_every_s``.

It is built from a :class:`~mixfleet.mapreduce.plan.JobPlan`; workers answer
with the outcomes of :mod:`results`. Two collaborators share its task table:
:class:`~mixfleet.mapreduce.reporting.Reporting` (counters, live status,
final report) and :class:`~mixfleet.mapreduce.recovery.Recovery` (lineage,
restore, checkpoint); :class:`~mixfleet.mapreduce.pool.WorkerPool` holds the
worker actors and the losing attempts still stopping.

Invariants:
- only the master moves task states (see :mod:`tasks`); counters come from
  winning attempts only;
- a user error fails the job at once; a lost worker is retried up to
  ``max_attempts`` per task;
- ``run()`` returns only after every part file and ``_SUCCESS`` are
  committed, or after a failed job's attempt files are removed.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import ray

from mixfleet.errors import JobError
from mixfleet.mapreduce import checkpoint as ckpt
from mixfleet.mapreduce.inputs import Piece
from mixfleet.mapreduce.keys import sample_boundaries
from mixfleet.mapreduce.outputs import abort, commit
from mixfleet.mapreduce.plan import JobPlan
from mixfleet.mapreduce.pool import WorkerPool
from mixfleet.mapreduce.recovery import Recovery
from mixfleet.mapreduce.reporting import Reporting
from mixfleet.mapreduce.results import Failed, JobReport, Lost, MapDone
from mixfleet.mapreduce.speculation import Running, choose_backup
from mixfleet.mapreduce.splitting import Claims, steal
from mixfleet.mapreduce.store import store_for
from mixfleet.mapreduce.tasks import State, Task, TaskTable


class Recompute(JobError):
    """Raised by a phase once its running attempts ended after a reduce found map outputs lost."""


class JobFailed(JobError):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class Master:
    def __init__(self, plan: JobPlan):
        self.plan, self.cfg, self.files, self.stores = plan, plan.cfg, plan.files, plan.stores
        self.num_reducers = plan.num_reducers
        self.table = TaskTable()
        self.stats = Reporting(self.table, plan.num_steps, plan.input_bytes, plan.cfg.hot_key_fraction,
                               plan.incarnation)
        self.recovery = Recovery(self.table, self.stats, plan)
        self.rng = random.Random(plan.cfg.seed)
        rec = self.recovery
        self.pool = WorkerPool(plan, self.stats, (rec.ckpt_fs, rec.ckpt_path) if self.cfg.durable_shuffle else None)
        self.phase, self.step = "starting", 0
        self.seen: dict[tuple[str, int], float] = {}
        self.progress: dict[tuple[str, int], float] = {}
        self.rates: dict[str, dict[int, float]] = {"map": {}, "reduce": {}}
        self.claims = Claims(plan.cfg.claim_s)

    # --- the job -----------------------------------------------------------------
    async def run(self) -> JobReport:
        plan, rec = self.plan, self.recovery
        fs, path, fmt = plan.output
        for i in range(len(self.pool.workers)):
            self.pool.spawn(i)
        saved_steps = rec.load()
        try:
            pieces = plan.splits
            winners: dict[int, str] = {}
            for step in range(plan.num_steps):
                self.step = step
                last = step == plan.num_steps - 1
                saved = saved_steps.get(str(step), {})
                st = rec.step_state.setdefault(str(step), {"boundaries": saved.get("boundaries")})
                boundaries = st["boundaries"]
                if plan.partitioners[step] == "range" and boundaries is None:
                    boundaries = st["boundaries"] = await self._sample(step, pieces)
                maps = self._map_tasks(step, pieces, saved.get("maps"))
                st["maps"] = maps
                reduces = None
                while True:  # map, reduce, and back to the maps whose outputs were lost
                    self.phase = "map"
                    await self._phase(maps, lambda t, a, w, s=step, b=boundaries: self.pool.workers[w].map.remote(
                        t.id, a.number, s, list(t.pieces), self.num_reducers, b))
                    self._save(force=True)
                    if reduces is None:
                        self.stats.reduce_records = []
                        reduces = st["reduces"] = self._reduce_tasks(step, saved.get("reduces"), last)
                    self.phase = "reduce"
                    out = plan.output if last else None
                    shuffle_fs = rec.ckpt_fs if self.cfg.durable_shuffle else None
                    try:
                        await self._phase(reduces, lambda t, a, w, s=step, o=out, ms=maps, sf=shuffle_fs:
                                          self.pool.workers[w].reduce.remote(t.id, a.number, s, t.index,
                                                                        [self._source(m, t.index) for m in ms], o, sf))
                        rec.recompute = set()
                        break
                    except Recompute:
                        rec.recompute_lost(maps)
                self._save(force=True)
                if last:
                    winners = {t.index: t.result.path for t in reduces}
                else:
                    pieces = [[Piece(block=t.result.block, block_kind="pairs", nbytes=t.result.records)]
                              for t in reduces if t.result.records]
            await self.pool.drain_all()  # no loser may still run at the commit
            self.phase = "commit"
            parts = commit(fs, path, winners, fmt)
            self.phase = "done"
            self._save(force=True)
            return self.stats.report("succeeded", parts=parts)
        except JobFailed as failed:
            self.phase = "failed"
            self.pool.kill_all()  # first: a running attempt must not write while its folder goes
            abort(fs, path)
            return self.stats.report("failed", error=failed.error)
        finally:
            self.pool.kill_all()

    def _source(self, m: Task, index: int) -> tuple[str, Any]:
        """``(map task id, ObjectRef or durable file or None)`` of map ``m``'s block for ``index``."""
        ref = m.result.refs[index] if m.result.refs else None
        if ref is not None:
            return m.id, ref
        files = m.result.files
        return m.id, files[index] if files else None

    def _map_tasks(self, step: int, pieces: list[list[Piece]], saved: list | None) -> list[Task]:
        if saved and step == 0:  # the saved pieces include stolen tails
            tasks = [self.table.add(Task(s["id"], "map", s["index"], [ckpt.piece_from_json(p) for p in s["pieces"]],
                                         size=sum(p[3] or (p[2] - p[1]) for p in s["pieces"]))) for s in saved]
        else:
            tasks = [self.table.add(Task(f"s{step}-m-{i:05d}", "map", i, list(g), size=sum(p.size for p in g)))
                     for i, g in enumerate(pieces)]
        self.recovery.restore_done(tasks, saved or [], "map")
        return tasks

    def _reduce_tasks(self, step: int, saved: list | None, last: bool) -> list[Task]:
        tasks = [self.table.add(Task(f"s{step}-r-{i:05d}", "reduce", i)) for i in range(self.num_reducers)]
        if last:  # intermediate reduce blocks live only in this run's store
            self.recovery.restore_done(tasks, saved or [], "reduce")
        return tasks

    async def _phase(self, tasks: list[Task], launch) -> None:
        """Run ``tasks`` to completion on the pool (retries, steals, backups)."""
        inflight: dict[asyncio.Future, tuple[Task, Any, Any]] = {}
        kind = tasks[0].kind if tasks else "map"
        while True:
            self._check_silence(inflight)
            if self.recovery.recompute:  # let the running attempts end, then go back to the maps
                if not inflight:
                    raise Recompute("map outputs were lost: rerun the phase")
                idle = []
            else:
                idle = sorted((i for i in range(len(self.pool.workers)) if i not in self.pool.busy),
                              key=lambda i: self.pool.where[i] is None)  # workers known to be up first
            for i in list(idle):
                task = next((t for t in tasks if t.state is State.PENDING), None)
                if task is None and self.cfg.steal and kind == "map":
                    task = steal(self.table, tasks, self.files, self.cfg.chunk_bytes, self._read_rate,
                                 self.rates["map"].get(i))
                if task is None:
                    break
                self._launch(task, i, launch, inflight, speculative=False)
                idle.remove(i)
            if idle and self.cfg.speculation:
                pick = self._speculate(tasks, idle, kind)
                if pick is not None:
                    task, worker = pick
                    self._launch(task, worker, launch, inflight, speculative=True)
            if all(t.state is State.DONE for t in tasks):
                if kind == "map":  # losers stop at their next claim while the next phase starts
                    self.pool.hand_over(inflight)
                else:
                    await self.pool.drain(inflight)
                return
            if not inflight and not self.pool.draining:
                raise JobFailed(RuntimeError("no worker could run the remaining tasks"))
            done, _ = await asyncio.wait([*inflight, *self.pool.draining], timeout=self.cfg.poll_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                if fut in inflight:
                    self._on_done(*inflight.pop(fut), fut)
            self.pool.reap()
            self._save()

    def _launch(self, task: Task, worker: int, launch, inflight: dict, speculative: bool) -> None:
        attempt = self.table.start(task, worker, speculative=speculative)
        self.pool.busy[worker] = attempt
        if speculative:
            self.stats.spec["backups_launched"] += 1
        handle = self.pool.workers[worker]
        fut = asyncio.ensure_future(_await(launch(task, attempt, worker)))
        fut.add_done_callback(_retrieve)  # a dropped attempt's error is expected, not "never retrieved"
        inflight[fut] = (task, attempt, handle)

    def _check_silence(self, inflight: dict) -> None:
        now = time.monotonic()
        for fut, (task, attempt, handle) in list(inflight.items()):
            if attempt.outcome != "running":
                continue
            last = self.seen.get((task.id, attempt.number))
            # before its first report the attempt may be waiting for a new actor to start: more slack
            silent = now - last if last is not None else (now - attempt.started) / 3
            if silent > self.cfg.heartbeat_timeout_s:
                self.stats.spec["presumed_lost"] += 1
                del inflight[fut]
                self.pool.busy.pop(attempt.worker, None)
                self.pool.replace(attempt.worker, handle)
                self._lost(task, attempt)

    def _lost(self, task: Task, attempt) -> None:
        if not self.table.lose(task, attempt, self.cfg.max_attempts) and task.state is State.FAILED:
            raise JobFailed(JobError(f"task {task.id} lost its worker {len(task.attempts)} times",
                                     "check the workers' logs (out of memory?) or raise max_attempts"))

    def _on_done(self, task: Task, attempt, handle, fut: asyncio.Future) -> None:
        if self.pool.busy.get(attempt.worker) is attempt:
            del self.pool.busy[attempt.worker]
        try:
            result = fut.result()
        except ray.exceptions.RayActorError:
            self.pool.replace(attempt.worker, handle)
            if attempt.outcome == "running":
                self._lost(task, attempt)
            return
        elapsed = time.monotonic() - attempt.started
        if isinstance(result, Lost):  # retry this reduce after the lost maps ran again
            self._lost(task, attempt)
            self.recovery.outputs_lost(result.maps)
            return
        if attempt.outcome == "cancelled":  # another attempt already won
            self.stats.spec["wasted_ms"] += int(1000 * elapsed)
            return
        if isinstance(result, Failed):
            self.table.fail(task, attempt)
            raise JobFailed(result.error)
        self.rates[task.kind][attempt.worker] = result.bytes / max(elapsed, 1e-3)
        if self.table.finish(task, attempt, result):
            self.stats.spec["backups_won"] += int(attempt.speculative)
            self.stats.won(result)
            if isinstance(result, MapDone):
                store_for(self.stores, result.node)[1].register.remote(task.id, result.refs)

    def status(self) -> dict:
        """The live status the runner polls (progress bars, ``--json`` progress)."""
        return self.stats.status(self.phase, self.step)

    def _save(self, force: bool = False) -> None:
        self.recovery.save(self.phase, self.step, force)

    # --- health and speculation --------------------------------------------------------
    async def started(self, task_id: str, attempt: int, worker: int, where: tuple[str, int, str]) -> None:
        """A worker begins an attempt (awaited by it before any user code runs)."""
        self.seen[(task_id, attempt)] = time.monotonic()
        if where[2] == self.pool.workers[worker]._actor_id.hex():  # not a late call from the worker it replaced,
            self.pool.where[worker] = tuple(where[:2])  # whose pid the system may since have given to another process

    async def heartbeat(self, task_id: str, attempt: int, progress: float) -> None:
        self.seen[(task_id, attempt)] = time.monotonic()
        self.progress[(task_id, attempt)] = progress

    def _speculate(self, tasks: list[Task], idle: list[int], kind: str) -> tuple[Task, int] | None:
        now = time.monotonic()
        running, durations, done = [], [], 0
        for t in tasks:
            if t.state is State.DONE:
                done += 1
                durations += [a.finished - a.started for a in t.attempts if a.outcome == "won" and a.finished]
                continue
            live = t.running_attempts
            if t.state is State.RUNNING and live:
                first = live[0]
                key = (t.id, first.number)
                progress = self.progress.get(key, 0.0)
                if key in self.claims.logs and t.size:  # bytes read of the task as cut now
                    progress = min(1.0, self.claims.read(key) / t.size)
                running.append(Running(t.id, now - first.started, progress, len(live), first.worker,
                                       t.size if kind == "map" else 0))
        cfg = self.cfg
        pick = choose_backup(running, durations, done, len(tasks), idle, self.rates[kind],
                             threshold=cfg.speculation_threshold, multiplier=cfg.speculation_multiplier,
                             cap=cfg.speculation_cap, floor_s=cfg.speculation_floor_s,
                             slow_ratio=cfg.slow_worker_ratio)
        if pick is None:
            return None
        return self.table.tasks[pick[0]], pick[1]

    # --- dynamic splitting ---------------------------------------------------------
    async def claim(self, task_id: str, attempt: int, piece: int, pos: int, want: int) -> tuple[int, int]:
        """Reserve ``[pos, want)`` of a piece for a running map; returns ``(granted, end)``.

        ``(pos, pos)`` tells the attempt to stop: it lost, or the piece was handed away."""
        task = self.table.tasks[task_id]
        self.seen[(task_id, attempt)] = time.monotonic()
        if (piece >= len(task.pieces) or task.state is not State.RUNNING
                or task.attempts[attempt - 1].outcome != "running"):
            return pos, pos
        end = task.pieces[piece].end
        granted = pos + self.claims.grant((task_id, attempt), max(0, min(want, end) - pos), time.monotonic())
        if attempt == task.attempts[0].number or len(task.running_attempts) == 1:
            self.stats.bytes_done += granted - pos
        task.claimed[piece] = max(task.claimed.get(piece, 0), granted)
        return granted, end

    def _read_rate(self, task: Task) -> float | None:
        """Bytes per second of a running map's first attempt, from its claims."""
        live = task.running_attempts
        return self.claims.rate((task.id, live[0].number), time.monotonic()) if live else None

    # --- range partitioner ----------------------------------------------------------
    async def _sample(self, step: int, splits: list[list[Piece]]) -> list:
        self.phase = "sample"
        return await sample_boundaries(self.pool.workers, self.files, splits, step, self.rng,
                                       self.cfg.sample_records, self.num_reducers)


async def _await(ref):
    return await ref


def _retrieve(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()
