"""The master actor: owns the task table and drives the worker pool.

The master is an async Ray actor. ``run()`` executes the job step by step:
(sample for a range partitioner,) map phase, reduce phase, and for the last
step the job commit. Workers pull nothing: the master assigns one task at a
time to each idle worker, so maps are naturally submitted in rounds and
memory stays bounded. Between completions it lets an idle worker take over
the untouched remainder of the longest running split (``claim`` is how a
map reserves the bytes it is about to read, so a cut never overlaps work).

Invariants:
- only the master moves task states (see :mod:`tasks`);
- a user error fails the job at once; a lost worker is replaced and its
  task retried up to ``max_attempts``;
- ``run()`` returns only after every part file and ``_SUCCESS`` are
  committed, or after a failed job's attempt files are removed.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import ray

from mixfleet.mapreduce.inputs import Piece
from mixfleet.mapreduce.keys import range_boundaries
from mixfleet.mapreduce.outputs import abort, commit
from mixfleet.mapreduce.settings import RunConfig
from mixfleet.mapreduce.tasks import State, Task, TaskTable
from mixfleet.mapreduce.worker import Worker


class JobFailed(Exception):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class Master:
    def __init__(self, job_ref: list, files: list, splits: list[list[Piece]], num_steps: int,
                 partitioners: list[str], num_reducers: int, num_workers: int, worker_cpus: float,
                 output: tuple, cfg: RunConfig):
        self.job_ref, self.files, self.cfg = job_ref, files, cfg
        self.splits, self.num_steps, self.partitioners = splits, num_steps, partitioners
        self.num_reducers, self.output = num_reducers, output
        self.table = TaskTable()
        self.rng = random.Random(cfg.seed)
        self.worker_cpus = worker_cpus
        self.workers: list[Any] = [None] * num_workers
        self.busy: set[int] = set()
        self.phase, self.step = "starting", 0
        self.bytes_total = sum(sum(p.size for p in s) for s in splits)
        self.bytes_done = 0
        self.counters: dict[str, dict[str, int]] = {}
        self.hot: dict[Any, int] = {}
        self.reduce_records: list[int] = []
        self.t0 = time.monotonic()
        self.status_line = ""

    # --- worker pool -----------------------------------------------------------
    def _spawn(self, i: int) -> None:
        me = ray.get_runtime_context().current_actor
        self.workers[i] = ray.remote(Worker).options(num_cpus=self.worker_cpus, max_restarts=0).remote(
            self.job_ref, self.files, me, self.cfg, i)

    # --- the job -----------------------------------------------------------------
    async def run(self) -> dict:
        fs, path, fmt = self.output
        for i in range(len(self.workers)):
            self._spawn(i)
        try:
            pieces = self.splits
            winners: dict[int, str] = {}
            for step in range(self.num_steps):
                self.step = step
                last = step == self.num_steps - 1
                boundaries = await self._sample(step, pieces) if self.partitioners[step] == "range" else None
                maps = self._add_tasks("map", step, pieces)
                self.phase = "map"
                await self._phase(maps, lambda t, a, w: self.workers[w].map.remote(
                    t.id, a.number, step, list(t.pieces), self.num_reducers, boundaries))
                self.reduce_records = []
                reduces = self._add_tasks("reduce", step, [[] for _ in range(self.num_reducers)])
                self.phase = "reduce"
                out = self.output if last else None
                await self._phase(reduces, lambda t, a, w: self.workers[w].reduce.remote(
                    t.id, a.number, step, t.index, [m.result["refs"][t.index] for m in maps], out))
                if last:
                    winners = {t.index: t.result["path"] for t in reduces}
                else:
                    pieces = [[Piece(block=t.result["block"], block_kind="pairs", nbytes=t.result["records"])]
                              for t in reduces if t.result["records"]]
            self.phase = "commit"
            parts = commit(fs, path, winners, fmt)
            self.phase = "done"
            return self._report("succeeded", parts=parts)
        except JobFailed as failed:
            self.phase = "failed"
            abort(fs, path)
            return self._report("failed", error=failed.error)
        finally:
            for w in self.workers:
                if w is not None:
                    ray.kill(w)

    def _add_tasks(self, kind: str, step: int, groups: list[list[Piece]]) -> list[Task]:
        prefix = "m" if kind == "map" else "r"
        return [self.table.add(Task(f"s{step}-{prefix}-{i:05d}", kind, i, list(g), size=sum(p.size for p in g)))
                for i, g in enumerate(groups)]

    async def _phase(self, tasks: list[Task], launch) -> None:
        """Run ``tasks`` to completion on the pool (retrying lost attempts)."""
        inflight: dict[asyncio.Future, tuple[Task, Any]] = {}
        queue = tasks  # stolen tails are appended here, so the caller sees them
        while True:
            for i in range(len(self.workers)):
                if i in self.busy:
                    continue
                task = next((t for t in queue if t.state is State.PENDING), None)
                if task is None and self.cfg.steal and tasks and tasks[0].kind == "map":
                    task = self._steal(queue)
                if task is None:
                    break
                attempt = self.table.start(task, i)
                self.busy.add(i)
                inflight[asyncio.ensure_future(_await(launch(task, attempt, i)))] = (task, attempt)
            if not inflight:
                if all(t.state is State.DONE for t in queue):
                    return
                raise JobFailed(RuntimeError("no worker could run the remaining tasks"))
            done, _ = await asyncio.wait(inflight, timeout=self.cfg.poll_s, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                task, attempt = inflight.pop(fut)
                self.busy.discard(attempt.worker)
                self._on_done(task, attempt, fut)

    def _on_done(self, task: Task, attempt, fut: asyncio.Future) -> None:
        try:
            result = fut.result()
        except ray.exceptions.RayActorError:
            self._spawn(attempt.worker)
            if not self.table.lose(task, attempt, self.cfg.max_attempts) and task.state is State.FAILED:
                from mixfleet.errors import JobError

                raise JobFailed(JobError(f"task {task.id} lost its worker {len(task.attempts)} times",
                                         "check the workers' logs (out of memory?) or raise max_attempts"))
            return
        if "error" in result:
            self.table.fail(task, attempt)
            raise JobFailed(result["error"])
        if self.table.finish(task, attempt, result):
            self._merge_counters(result["counters"])
            if task.kind == "map":
                for key, n in result.get("hot", {}).items():
                    self.hot[key] = self.hot.get(key, 0) + n
            else:
                self.reduce_records.append(result["counters"].get("mixfleet", {}).get("reduce_input_records", 0))
            if result.get("status"):
                self.status_line = result["status"]

    def _merge_counters(self, counters: dict) -> None:
        for group, names in counters.items():
            bucket = self.counters.setdefault(group, {})
            for name, n in names.items():
                bucket[name] = bucket.get(name, 0) + n

    # --- dynamic splitting ---------------------------------------------------------
    async def claim(self, task_id: str, attempt: int, piece: int, pos: int, want: int) -> tuple[int, int]:
        """Reserve ``[pos, want)`` of a piece for a running map; returns ``(granted, end)``."""
        task = self.table.tasks[task_id]
        if piece >= len(task.pieces) or task.state is not State.RUNNING:
            return pos, pos
        end = task.pieces[piece].end
        granted = max(pos, min(want, end))
        self.bytes_done += granted - pos
        task.claimed[piece] = max(task.claimed.get(piece, 0), granted)
        return granted, end

    def _steal(self, queue: list[Task]) -> Task | None:
        """Cut the running map with the most unclaimed bytes; the tail becomes a new task."""
        best, best_left = None, 2 * self.cfg.chunk_bytes
        for t in queue:
            if t.state is not State.RUNNING or len(t.running_attempts) != 1:
                continue
            if any(p.block_kind or self.files[p.file].fmt == "parquet" for p in t.pieces):
                continue
            left = self._unclaimed(t)
            if left > best_left:
                best, best_left = t, left
        if best is None:
            return None
        cur = max(best.claimed) if best.claimed else 0
        piece = best.pieces[cur]
        granted = best.claimed.get(cur, piece.start)
        later = sum(p.size for p in best.pieces[cur + 1:])
        cut = min(piece.end, max(granted, piece.end + later - best_left // 2))
        tail = ([Piece(piece.file, cut, piece.end)] if cut < piece.end else []) + best.pieces[cur + 1:]
        best.pieces = best.pieces[:cur] + [Piece(piece.file, piece.start, cut)]
        best.size -= sum(p.size for p in tail)
        new = self.table.add(Task(f"{best.id}.{len(self.table.tasks)}", "map", len(queue), tail,
                                  size=sum(p.size for p in tail)))
        queue.append(new)
        return new

    def _unclaimed(self, t: Task) -> int:
        cur = max(t.claimed) if t.claimed else 0
        piece = t.pieces[cur]
        return piece.end - t.claimed.get(cur, piece.start) + sum(p.size for p in t.pieces[cur + 1:])

    # --- range partitioner ----------------------------------------------------------
    async def _sample(self, step: int, splits: list[list[Piece]]) -> list:
        self.phase = "sample"
        chosen = splits if len(splits) <= 64 else self.rng.sample(splits, 64)
        calls = []
        per = max(1, self.cfg.sample_records)
        for j, split in enumerate(chosen):
            piece = split[0]
            if not piece.block_kind and self.files[piece.file].fmt != "parquet":
                span = piece.end - piece.start
                start = piece.start + (self.rng.randrange(span // 2) if span > 2 else 0)
                piece = Piece(piece.file, start, piece.end)
            calls.append(self.workers[j % len(self.workers)].sample.remote(step, piece, per))
        sample: list = []
        for keys in await asyncio.gather(*[_await(c) for c in calls]):
            sample += keys
        return range_boundaries(sample, self.num_reducers)

    # --- reporting ---------------------------------------------------------------------
    def status(self) -> dict:
        return {"phase": self.phase, "step": self.step, "steps": self.num_steps,
                "maps": self.table.counts("map"), "reduces": self.table.counts("reduce"),
                "bytes_done": min(self.bytes_done, self.bytes_total), "bytes_total": self.bytes_total,
                "elapsed_s": time.monotonic() - self.t0, "status": self.status_line}

    def _report(self, status: str, parts: list | None = None, error: BaseException | None = None) -> dict:
        t = self.table
        counters = {g: dict(v) for g, v in self.counters.items()}
        total_out = counters.get("mixfleet", {}).get("map_output_records", 0)
        skew = {f"hot_key:{k}": n for k, n in sorted(self.hot.items(), key=lambda kv: -kv[1])[:10]
                if total_out and n >= self.cfg.hot_key_fraction * total_out}
        if self.reduce_records and sum(self.reduce_records):
            mean = sum(self.reduce_records) / len(self.reduce_records)
            skew["partition_max_over_mean_pct"] = int(100 * max(self.reduce_records) / mean)
        if skew:
            counters["skew"] = skew
        return {"status": status, "parts": parts or [], "error": error,
                "map_tasks": len(t.of_kind("map")), "reduce_tasks": len(t.of_kind("reduce")),
                "attempts": {"launched": t.launched, "failed": t.failed_attempts, "speculative": t.speculative},
                "counters": counters, "tasks": self._timeline()}

    def _timeline(self) -> list[dict]:
        return [{"task": t.id, "kind": t.kind, "worker": a.worker, "start": a.started - self.t0,
                 "end": (a.finished or time.monotonic()) - self.t0, "outcome": a.outcome,
                 "speculative": a.speculative}
                for t in self.table.tasks.values() for a in t.attempts]


async def _await(ref):
    return await ref
