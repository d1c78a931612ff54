"""The long-lived worker actor: runs map, reduce and sample tasks for one job.

A worker is created by the master with the job (an ObjectRef of the
cloudpickled instance), the resolved input files, the master's handle and
the block store's. It never decides anything: it runs what the master sends
and reports back. A background thread sends a heartbeat with the running
attempt's progress every ``heartbeat_s``; the reply says whether the attempt
lost (another attempt won), and the map stops reading at its next claim.

Map blocks are owned by the block store of this worker's node (see
:mod:`store`), so they outlive this worker; with durable shuffle they are also written under the
checkpoint URI. Every call returns one outcome of :mod:`results`; user
errors come back as :class:`~mixfleet.mapreduce.results.Failed` (not as an
exception), so that the master can tell them from a lost worker.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from typing import Any

import ray

from mixfleet.errors import JobError
from mixfleet.mapreduce.execute import reduce_counters, run_map, run_reduce, sample_keys
from mixfleet.mapreduce.inputs import Piece
from mixfleet.mapreduce.keys import hash_partitioner, range_partitioner
from mixfleet.mapreduce.outputs import write_attempt
from mixfleet.mapreduce.results import Failed, Lost, MapDone, ReduceDone
from mixfleet.mapreduce.settings import RunConfig
from mixfleet.mapreduce.store import store_for


def _error(exc: BaseException) -> Failed:
    from mixfleet.errors import JobError, MixfleetError

    if not isinstance(exc, MixfleetError):
        import traceback

        exc = JobError(f"internal error: {type(exc).__name__}: {exc}", traceback.format_exc().splitlines()[-1])
    return Failed(exc)


class _Lost(JobError):
    def __init__(self, map_id: str):
        super().__init__(map_id)
        self.map_id = map_id


class Worker:
    """One per CPU by default; tasks run one at a time on it."""

    def __init__(self, job_ref: list, files: list, master: Any, stores: dict, cfg: RunConfig, index: int,
                 shuffle_dir: tuple | None = None):
        import cloudpickle

        self.job = cloudpickle.loads(ray.get(job_ref[0]))
        self.steps = self.job.steps()
        self.files, self.master, self.cfg, self.index = files, master, cfg, index
        self.node, self.store = store_for(stores, ray.get_runtime_context().get_node_id())
        self.shuffle_dir = shuffle_dir
        self.current: tuple[str, int] | None = None
        self.progress = 0.0
        threading.Thread(target=self._beat, daemon=True, name="mixfleet-heartbeat").start()

    def _beat(self) -> None:
        while True:
            time.sleep(self.cfg.heartbeat_s)
            current = self.current
            if current is None:
                continue
            try:
                self.master.heartbeat.remote(current[0], current[1], self.progress)
            except Exception:  # the master is gone; a new one will replace this worker
                return

    def _start(self, task_id: str, attempt: int) -> None:
        """Report the start and wait for the master to record it (a round trip), so that
        even a process that freezes in its first user call is known to have started;
        ``(node id, pid, actor id)`` lets the master force-kill a frozen worker on its own node."""
        self.current, self.progress = (task_id, attempt), 0.0
        ctx = ray.get_runtime_context()
        where = (ctx.get_node_id(), os.getpid(), ctx.get_actor_id())
        ray.get(self.master.started.remote(task_id, attempt, self.index, where))

    # --- map ---------------------------------------------------------------------
    def map(self, task_id: str, attempt: int, step: int, pieces: list[Piece], num_reducers: int,
            boundaries: list | None) -> MapDone | Failed:
        self._start(task_id, attempt)
        total = max(1, sum(p.size for p in pieces))
        try:
            part_of = range_partitioner(boundaries) if boundaries is not None else hash_partitioner(num_reducers)
            out = run_map(self.job, self.steps[step], task_id, self.files, pieces, part_of, num_reducers,
                          chunk_bytes=self.cfg.chunk_bytes, hot_key_fraction=self.cfg.hot_key_fraction,
                          claim_for=self._claims(task_id, attempt, pieces, total), attempt=attempt,
                          worker=self.index)
            refs = ray.get(self.store.put.remote(out.blocks))
            files = self._spill(task_id, attempt, out.blocks) if self.shuffle_dir else None
        except Exception as exc:
            return _error(exc)
        finally:
            self.current = None
        return MapDone.of(out, refs, files, self.node, total)

    def _claims(self, task_id: str, attempt: int, pieces: list[Piece], total: int):
        done_before = [sum(p.size for p in pieces[:i]) for i in range(len(pieces))]

        def claim_for(i: int):
            if pieces[i].block_kind or self.files[pieces[i].file].fmt == "parquet":
                self.progress = done_before[i] / total
                return None

            def claim(pos: int, want: int) -> tuple[int, int]:
                self.progress = (done_before[i] + pos - pieces[i].start) / total
                if not self.cfg.steal and not self.cfg.speculation:
                    return want, pieces[i].end
                return tuple(ray.get(self.master.claim.remote(task_id, attempt, i, pos, want)))

            return claim

        return claim_for

    def _spill(self, task_id: str, attempt: int, blocks: list[bytes | None]) -> list[str | None]:
        """Durable shuffle: write every block under the checkpoint URI (atomic per file)."""
        fs, root = self.shuffle_dir
        folder = f"{root}/shuffle/{task_id}.a{attempt}"
        fs.create_dir(folder, recursive=True)
        paths: list[str | None] = []
        for i, block in enumerate(blocks):
            if block is None:
                paths.append(None)
                continue
            path = f"{folder}/r{i:05d}"
            with fs.open_output_stream(path + ".tmp") as f:
                f.write(block)
            fs.move(path + ".tmp", path)
            paths.append(path)
        return paths

    # --- reduce ------------------------------------------------------------------
    def reduce(self, task_id: str, attempt: int, step: int, index: int, sources: list, output: tuple | None,
               shuffle_fs: Any = None) -> ReduceDone | Lost | Failed:
        """Reduce one partition from ``sources``, ``(map task id, ObjectRef or durable block
        path)`` pairs; ``output=(fs, path, fmt)`` writes a part attempt, ``None`` returns a
        block. A block that can't be fetched because its node or store died is reported as
        :class:`Lost`, for the master to recompute that map."""
        self._start(task_id, attempt)
        try:
            live = [(m, s) for m, s in sources if s is not None]

            def fetch():
                for i, (map_id, src) in enumerate(live):
                    self.progress = 0.5 * i / max(1, len(live))
                    if isinstance(src, str):
                        with shuffle_fs.open_input_file(src) as f:
                            yield f.read()
                    else:
                        try:
                            yield ray.get(src)
                        except ray.exceptions.ObjectLostError:  # its owner (a store) or its node died
                            raise _Lost(map_id) from None

            stream, merger, ctx = run_reduce(self.job, self.steps[step], task_id, fetch(),
                                             self.cfg.reduce_memory_bytes, attempt=attempt, worker=self.index)
            self.progress = 0.5
            if output is None:
                pairs = list(stream)
                [ref] = ray.get(self.store.put.remote([pickle.dumps(pairs, protocol=5)]))
                tmp, n = None, len(pairs)
            else:
                fs, path, fmt = output
                ref = None
                tmp, n = write_attempt(fs, path, index, attempt, fmt, stream)
        except _Lost as lost:
            return Lost([lost.map_id])
        except Exception as exc:
            return _error(exc)
        finally:
            self.current = None
        return ReduceDone(reduce_counters(ctx, merger, n), ctx.status, len(live), records=n, path=tmp, block=ref)

    # --- sampling (range partitioner) -------------------------------------------------
    def sample(self, step: int, piece: Piece, n: int) -> list:
        """Keys the mapper emits for up to ``n`` records from ``piece``."""
        entry = self.files[piece.file] if piece.file >= 0 else None
        return sample_keys(self.steps[step], entry, piece, self.cfg.chunk_bytes, n)
