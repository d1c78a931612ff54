"""What one map or reduce task attempt does, free of actor plumbing.

``run_map`` reads a split batch by batch, maps, combines and partitions,
and returns one encoded block per reducer. ``run_reduce`` merges the blocks
of one partition, runs the reducer in key order and hands the pairs to a
sink. Both run the step's ``*_init`` / ``*_final`` hooks once per attempt
and raise :class:`JobError` naming the task, the input and the offset when
user code fails.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mixfleet.errors import JobError, MixfleetError
from mixfleet.mapreduce.inputs import InputFile, Piece
from mixfleet.mapreduce.job import Job, Step, TaskContext
from mixfleet.mapreduce.records import Claim, iter_records, line_offset
from mixfleet.mapreduce.shuffle import ReduceMerger, combine, count_hot, encode_block, partition

BUILTIN = "mixfleet"


class UserCodeError(JobError):
    """User code raised; carries the formatted traceback for the CLI to show."""

    def __init__(self, message: str, hint: str, user_traceback: str):
        super().__init__(message, hint)
        self.user_traceback = user_traceback

    def __reduce__(self):
        return (UserCodeError, (self.message, self.hint, self.user_traceback))


@dataclass
class MapOutput:
    blocks: list[bytes | None]
    input_records: int = 0
    input_bytes: int = 0
    output_records: int = 0
    hot: dict[Any, int] = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    status: str = ""


def _user_error(what: str, task_id: str, where: str, exc: BaseException) -> UserCodeError:
    tb = traceback.format_exc()
    return UserCodeError(
        f"{what} failed in task {task_id} at {where}: {type(exc).__name__}: {exc}",
        "see the traceback above; fix the job and rerun",
        tb,
    )


def _feed(groups: dict, pairs: Iterable | None) -> int:
    n = 0
    for k, v in pairs or ():
        bucket = groups.get(k)
        if bucket is None:
            groups[k] = [v]
        else:
            bucket.append(v)
        n += 1
    return n


def run_map(job: Job, step: Step, task_id: str, files: list[InputFile], pieces: list[Piece],
            part_of: Callable[[Any], int], num_reducers: int, *, chunk_bytes: int,
            hot_key_fraction: float, claim_for: Callable[[int], Claim | None] | None = None,
            progress: Callable[[int, int], None] | None = None, attempt: int = 0,
            worker: int = -1) -> MapOutput:
    """Map one split (see module docstring); ``claim_for(i)`` gives piece i's claim."""
    ctx = TaskContext(task_id, attempt, worker)
    job._bind(ctx)
    groups: dict[Any, list[Any]] = {}
    hot: dict[Any, int] = {}
    mapper, combiner = step.mapper or _identity_map, step.combiner
    records = out_records = nbytes = 0
    where = "mapper_init"
    try:
        if step.mapper_init:
            out_records += _feed(groups, step.mapper_init())
        for i, piece in enumerate(pieces):
            entry = files[piece.file] if piece.file >= 0 else None
            job.input_file = entry.uri if entry else None
            where = f"input '{job.input_file}'" if entry else "an in-memory block"
            claim = claim_for(i) if claim_for else None
            is_pairs = piece.block_kind == "pairs"
            for offset, batch in iter_records(entry, piece, chunk_bytes, claim):
                before = len(groups)
                n_out = 0
                get = groups.get
                for idx, rec in enumerate(batch):
                    try:
                        pairs = mapper(*rec) if is_pairs else mapper(None, rec)
                        if pairs is None:
                            continue
                        for k, v in pairs:
                            bucket = get(k)
                            if bucket is None:
                                groups[k] = [v]
                            else:
                                bucket.append(v)
                            n_out += 1
                    except Exception as exc:
                        if entry is None:
                            where = f"record {offset + idx} of an in-memory block"
                        elif entry.fmt in ("text", "jsonl"):
                            where = f"input '{entry.uri}' offset {line_offset(offset, batch, idx)}"
                        else:
                            where = f"input '{entry.uri}' row {offset + idx}"
                        raise _user_error("mapper", task_id, where, exc) from None
                records += len(batch)
                out_records += n_out
                nbytes += sum(len(r) + 1 for r in batch) if entry and entry.fmt == "text" else 0
                hot_min = max(2, int(hot_key_fraction * n_out)) if n_out > 100 else 1 << 62
                if combiner is not None and len(groups) - before < n_out:
                    where = f"combiner (input '{job.input_file}' offset {offset})"
                    groups = combine(groups, combiner, hot, hot_min)
                    where = f"input '{job.input_file}'"
                else:
                    count_hot(groups, hot, hot_min) if hot_min < (1 << 62) else None
                if progress:
                    progress(records, nbytes)
        job.input_file = None
        where = "mapper_final"
        if step.mapper_final:
            out_records += _feed(groups, step.mapper_final())
    except MixfleetError:
        raise
    except Exception as exc:
        raise _user_error("map", task_id, where, exc) from None
    blocks: list[bytes | None] = []
    try:
        parts = partition(groups, num_reducers, part_of)
    except TypeError as exc:
        raise JobError(f"task {task_id}: a map output key can't be hashed: {exc}",
                       "emit hashable keys (str, numbers, tuples)") from None
    for part in parts:
        blocks.append(encode_block(part, task_id) if part else None)
    return MapOutput(blocks, records, nbytes, out_records, hot, ctx.counters, ctx.status)


def _identity_map(key: Any, value: Any) -> Iterator[tuple[Any, Any]]:
    yield key, value


def run_reduce(job: Job, step: Step, task_id: str, fetch: Iterable[bytes], memory_bytes: int,
               spill_dir: str | None = None, attempt: int = 0, worker: int = -1
               ) -> tuple[Iterator[tuple[Any, Any]], ReduceMerger, TaskContext]:
    """Merge the encoded blocks, then a lazy stream of the reducer's output pairs.

    ``reducer_init`` runs when the stream starts, after the merge (once per attempt)."""
    ctx = TaskContext(task_id, attempt, worker)
    job._bind(ctx)
    merger = ReduceMerger(memory_bytes, spill_dir)
    for encoded in fetch:
        merger.add(encoded)
    reducer = step.reducer or _identity_reduce

    def stream() -> Iterator[tuple[Any, Any]]:
        where = "reducer_init"
        key = None
        try:
            if step.reducer_init:
                yield from step.reducer_init() or ()
            where = "reducer"
            for key, values in merger.items():
                ctx.increment(BUILTIN, "reduce_input_groups")
                yield from reducer(key, values) or ()
            where = "reducer_final"
            if step.reducer_final:
                yield from step.reducer_final() or ()
        except MixfleetError:
            raise
        except Exception as exc:
            at = f"key {key!r:.60}" if where == "reducer" else where
            raise _user_error(where, task_id, at, exc) from None
        finally:
            merger.close()

    return stream(), merger, ctx


def _identity_reduce(key: Any, values: list[Any]) -> Iterator[tuple[Any, Any]]:
    for v in values:
        yield key, v


def timed() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
