"""The long-lived worker actor: runs map, reduce and sample tasks for one job.

A worker is created by the master with the job (an ObjectRef of the
cloudpickled instance), the resolved input files and the master's handle.
It never decides anything: it runs what the master sends and reports back.
Map blocks are put in Ray's object store by the worker and only their
references travel (Exoshuffle style). User errors come back as a result
with ``error`` set (not as an exception), so that the master can tell them
from a lost worker (a ``RayActorError``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray

from mixfleet.mapreduce.execute import BUILTIN, run_map, run_reduce
from mixfleet.mapreduce.inputs import Piece
from mixfleet.mapreduce.keys import hash_partitioner, range_partitioner
from mixfleet.mapreduce.outputs import write_attempt
from mixfleet.mapreduce.records import iter_records
from mixfleet.mapreduce.settings import RunConfig


def _error(exc: BaseException) -> dict:
    from mixfleet.errors import MixfleetError

    if not isinstance(exc, MixfleetError):
        import traceback

        from mixfleet.errors import JobError

        exc = JobError(f"internal error: {type(exc).__name__}: {exc}", traceback.format_exc().splitlines()[-1])
    return {"error": exc}


class Worker:
    """One per CPU by default; tasks run one at a time on it."""

    def __init__(self, job_ref: list, files: list, master: Any, cfg: RunConfig, index: int):
        import cloudpickle

        self.job = cloudpickle.loads(ray.get(job_ref[0]))
        self.steps = self.job.steps()
        self.files = files
        self.master = master
        self.cfg = cfg
        self.index = index

    def pid(self) -> int:
        return os.getpid()

    def map(self, task_id: str, attempt: int, step: int, pieces: list[Piece], num_reducers: int,
            boundaries: list | None) -> dict:
        t0 = time.perf_counter()
        try:
            part_of = range_partitioner(boundaries) if boundaries is not None else hash_partitioner(num_reducers)
            claim_for = self._claims(task_id, attempt, pieces) if self.cfg.steal else None
            out = run_map(self.job, self.steps[step], task_id, self.files, pieces, part_of, num_reducers,
                          chunk_bytes=self.cfg.chunk_bytes, hot_key_fraction=self.cfg.hot_key_fraction,
                          claim_for=claim_for)
        except Exception as exc:
            return _error(exc)
        refs = [ray.put(b) if b is not None else None for b in out.blocks]
        counters = out.counters
        builtin = counters.setdefault(BUILTIN, {})
        builtin["map_input_records"] = out.input_records
        builtin["map_input_bytes"] = out.input_bytes
        builtin["map_output_records"] = out.output_records
        builtin["shuffle_bytes"] = sum(len(b) for b in out.blocks if b is not None)
        return {"refs": refs, "block_bytes": [len(b) if b is not None else 0 for b in out.blocks],
                "counters": counters, "status": out.status, "hot": _top(out.hot),
                "elapsed_s": time.perf_counter() - t0, "worker": self.index}

    def _claims(self, task_id: str, attempt: int, pieces: list[Piece]):
        def claim_for(i: int):
            if pieces[i].block_kind or self.files[pieces[i].file].fmt == "parquet":
                return None

            def claim(pos: int, want: int) -> tuple[int, int]:
                return tuple(ray.get(self.master.claim.remote(task_id, attempt, i, pos, want)))

            return claim

        return claim_for

    def reduce(self, task_id: str, attempt: int, step: int, index: int, block_refs: list,
               output: tuple | None) -> dict:
        """Reduce one partition; ``output=(fs, path, fmt)`` writes a part attempt,
        ``None`` (an intermediate step) returns the pairs as a block."""
        import pickle

        t0 = time.perf_counter()
        try:
            refs = [r for r in block_refs if r is not None]

            def fetch():
                for i in range(0, len(refs), 8):
                    yield from ray.get(refs[i:i + 8])

            stream, merger, ctx = run_reduce(self.job, self.steps[step], task_id, fetch(),
                                             self.cfg.reduce_memory_bytes)
            if output is None:
                pairs = list(stream)
                result: dict = {"block": ray.put(pickle.dumps(pairs, protocol=5)), "records": len(pairs)}
            else:
                fs, path, fmt = output
                tmp, n = write_attempt(fs, path, index, attempt, fmt, stream)
                result = {"path": tmp, "records": n}
        except Exception as exc:
            return _error(exc)
        builtin = ctx.counters.setdefault(BUILTIN, {})
        builtin["reduce_input_records"] = merger.input_records
        builtin["reduce_output_records"] = result["records"]
        builtin["spilled_runs"] = merger.spilled_runs
        result.update(counters=ctx.counters, status=ctx.status, elapsed_s=time.perf_counter() - t0,
                      worker=self.index)
        return result

    def sample(self, step: int, piece: Piece, n: int) -> list:
        """Keys the mapper emits for up to ``n`` records from ``piece`` (range partitioner)."""
        st = self.steps[step]
        mapper = st.mapper
        keys: list = []
        entry = self.files[piece.file] if piece.file >= 0 else None
        for _, batch in iter_records(entry, piece, self.cfg.chunk_bytes):
            for rec in batch:
                pairs = mapper(*rec) if piece.block_kind == "pairs" else mapper(None, rec)
                keys += [k for k, _ in pairs or ()]
                if len(keys) >= n:
                    return keys
        return keys


def _top(hot: dict, n: int = 20) -> dict:
    return dict(sorted(hot.items(), key=lambda kv: -kv[1])[:n])
