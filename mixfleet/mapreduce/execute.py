"""What one map or reduce task attempt does, free of actor plumbing.

``run_map`` reads a split batch by batch, maps, combines and partitions,
and returns one encoded block per reducer. ``run_reduce`` merges the blocks
of one partition, runs the reducer in key order and hands the pairs to a
sink. Both run the step's ``*_init`` / ``*_final`` hooks once per attempt
and raise :class:`JobError` naming the task, the input and the offset when
user code fails.

The per-record path carries no runtime bookkeeping: a generator mapper is
driven by ``chain.from_iterable(map(mapper, ...))`` (no Python frame of ours
per record) into a ``defaultdict(list)``, and output records are counted per
batch from the grouped lengths. A chunk mapper (``mapper_chunk``) is called
once per line-aligned block. Output that is not ``(key, value)`` pairs is
caught where it is unpacked (no check per record) and reported with the
user's file and line.
"""

from __future__ import annotations

import inspect
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, repeat, starmap
from typing import Any

from mixfleet.errors import JobError, MixfleetError
from mixfleet.mapreduce.inputs import InputFile, Piece
from mixfleet.mapreduce.job import Job, Step, TaskContext
from mixfleet.mapreduce.records import Claim, iter_records, line_offset
from mixfleet.mapreduce.shuffle import ReduceMerger, combine, count_hot, encode_block, partition

BUILTIN = "mixfleet"
_UNKNOWN = object()


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

    def all_counters(self) -> dict:
        """The user's counters plus the runtime's own (group ``mixfleet``)."""
        builtin = self.counters.setdefault(BUILTIN, {})
        builtin.update(map_input_records=self.input_records, map_input_bytes=self.input_bytes,
                       map_output_records=self.output_records,
                       shuffle_bytes=sum(len(b) for b in self.blocks if b is not None))
        return self.counters


def reduce_counters(ctx: TaskContext, merger: ReduceMerger, records: int) -> dict:
    """The attempt's user counters plus the runtime's reduce counters."""
    ctx.counters.setdefault(BUILTIN, {}).update(reduce_input_records=merger.input_records,
                                                reduce_output_records=records, spilled_runs=merger.spilled_runs)
    return ctx.counters


def _user_error(what: str, task_id: str, where: str, exc: BaseException) -> UserCodeError:
    tb = traceback.format_exc()
    return UserCodeError(
        f"{what} failed in task {task_id} at {where}: {type(exc).__name__}: {exc}",
        "see the traceback above; fix the job and rerun",
        tb,
    )


def _ours(exc: BaseException) -> bool:
    """True when ``exc`` was raised in the catching frame itself (unpacking the user's
    output), not inside user code called from it."""
    return isinstance(exc, (TypeError, ValueError)) and exc.__traceback__ is not None \
        and exc.__traceback__.tb_next is None


def _short(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shape_error(what: str, job: Job, fn: Callable | None, got: Any, gen: Any = None) -> JobError:
    """``<what> of <Job> must yield (key, value) pairs; got ...`` naming the user's file and line
    (the line of the offending ``yield`` when ``gen`` is the suspended generator)."""
    func = getattr(fn, "__func__", fn)
    code = getattr(func, "__code__", None)
    line = getattr(getattr(gen, "gi_frame", None), "f_lineno", None) or (code.co_firstlineno if code else "?")
    name = getattr(func, "__name__", what)
    path = (getattr(job, "_source_files", None) or {}).get(name) or (code.co_filename if code else "?")
    got_text = "?" if got is _UNKNOWN else f"{_short(got)} ({type(got).__name__})"
    return JobError(f"{what} of {type(job).__name__} must yield (key, value) pairs; got {got_text} at "
                    f"{path}:{line}",
                    f"yield key, value for every output record of {name} (or return a list of pairs, or None)")


def _bad_output(what: str, job: Job, fn: Callable | None, out: Any, item: Any) -> JobError:
    """The error for ``out`` (what user code returned) failing to unpack at ``item``."""
    if not hasattr(out, "__iter__"):
        return shape_error(what, job, fn, out)
    return shape_error(what, job, fn, item, out)


def _replay(what: str, job: Job, fn: Callable, out: Any) -> JobError:
    """Find the first item of a fresh ``out`` that is not a pair."""
    if not hasattr(out, "__iter__"):
        return shape_error(what, job, fn, out)
    for item in out:
        try:
            _k, _v = item
        except (TypeError, ValueError):
            return shape_error(what, job, fn, item, out)
    return shape_error(what, job, fn, _UNKNOWN)


def _feed(groups: defaultdict, out: Iterable | None, what: str, job: Job, fn: Callable | None) -> None:
    if out is None:
        return
    item = _UNKNOWN
    try:
        for item in out:
            k, v = item
            groups[k].append(v)
    except (TypeError, ValueError) as exc:
        if not _ours(exc):
            raise
        raise _bad_output(what, job, fn, out, item) from None


def _where(entry: InputFile | None, offset: int, batch: Any, idx: int | None) -> str:
    if idx is None:
        return f"input '{entry.uri}' offset {offset}" if entry else f"block offset {offset}"
    if entry is None:
        return f"record {offset + idx} of an in-memory block"
    if entry.fmt in ("text", "jsonl"):
        return f"input '{entry.uri}' offset {line_offset(offset, batch, idx)}"
    return f"input '{entry.uri}' row {offset + idx}"


def _map_batch(groups: defaultdict, mapper: Callable, batch: Any, *, chunked: bool, is_pairs: bool,
               generator: bool, job: Job, task_id: str, entry: InputFile | None, offset: int) -> None:
    """Feed one batch's mapper output into ``groups`` (see the module docstring)."""
    if chunked:
        try:
            _feed(groups, mapper(batch), "mapper_chunk", job, mapper)
        except MixfleetError:
            raise
        except Exception as exc:
            raise _user_error("mapper_chunk", task_id, _where(entry, offset, batch, None), exc) from None
        return
    it = iter(batch)
    if generator:
        outs = starmap(mapper, it) if is_pairs else map(mapper, repeat(None), it)
        try:
            for k, v in chain.from_iterable(outs):
                groups[k].append(v)
            return
        except Exception as exc:
            idx = len(batch) - it.__length_hint__() - 1
            if _ours(exc):  # a yielded item is not a pair; replayed only to name it (the job fails)
                rec = batch[idx]
                raise _replay("mapper", job, mapper, mapper(*rec) if is_pairs else mapper(None, rec)) from None
            raise _user_error("mapper", task_id, _where(entry, offset, batch, idx), exc) from None
    for idx, rec in enumerate(batch):
        out = item = None
        try:
            out = mapper(*rec) if is_pairs else mapper(None, rec)
            if out is not None:
                for item in out:
                    k, v = item
                    groups[k].append(v)
        except Exception as exc:
            if _ours(exc):
                raise _bad_output("mapper", job, mapper, out, item) from None
            raise _user_error("mapper", task_id, _where(entry, offset, batch, idx), exc) from None


def _count(batch: Any) -> int:
    """Records in a batch: the lines of a text block, else its items."""
    if type(batch) is str:
        return batch.count("\n") + (not batch.endswith("\n")) if batch else 0
    return len(batch)


def _hot_min(fraction: float, values: int) -> int:
    """A key with this many of ``values`` is hot (never, for fewer than 100 values)."""
    return max(2, int(fraction * values)) if values > 100 else 1 << 62


def _held(groups: dict) -> int:
    return sum(map(len, groups.values()))


def run_map(job: Job, step: Step, task_id: str, files: list[InputFile], pieces: list[Piece],
            part_of: Callable[[Any], int], num_reducers: int, *, chunk_bytes: int,
            hot_key_fraction: float, claim_for: Callable[[int], Claim | None] | None = None,
            progress: Callable[[int, int], None] | None = None, attempt: int = 0,
            worker: int = -1) -> MapOutput:
    """Map one split (see module docstring); ``claim_for(i)`` gives piece i's claim."""
    ctx = TaskContext(task_id, attempt, worker)
    job._bind(ctx)
    groups: defaultdict = defaultdict(list)
    hot: dict[Any, int] = {}
    chunked = step.mapper_chunk is not None
    mapper = step.mapper_chunk or step.mapper or _identity_map
    generator = not chunked and inspect.isgeneratorfunction(mapper)
    combiner = step.combiner
    records = nbytes = since = 0
    where = "mapper_init"
    try:
        if step.mapper_init:
            _feed(groups, step.mapper_init(), "mapper_init", job, step.mapper_init)
        held = out_records = _held(groups)
        for i, piece in enumerate(pieces):
            entry = files[piece.file] if piece.file >= 0 else None
            job.input_file = entry.uri if entry else None
            where = f"input '{job.input_file}'" if entry else "an in-memory block"
            claim = claim_for(i) if claim_for else None
            is_pairs = piece.block_kind == "pairs"
            for offset, batch, size in iter_records(entry, piece, chunk_bytes, claim, raw=chunked):
                _map_batch(groups, mapper, batch, chunked=chunked, is_pairs=is_pairs, generator=generator,
                           job=job, task_id=task_id, entry=entry, offset=offset)
                now = _held(groups)
                n_out, held = now - held, now
                records += _count(batch)
                out_records += n_out
                nbytes += size
                since += n_out
                if combiner is not None:
                    # combine once values outnumber keys 4:1 (a chunk mapper adds about one value
                    # per key per block: combining every block would cost a call per key each time)
                    if held > 4 * len(groups) + 1024:
                        where = f"combiner (input '{job.input_file}' offset {offset})"
                        combine(groups, combiner, hot, _hot_min(hot_key_fraction, since))
                        held, since = _held(groups), 0
                        where = f"input '{job.input_file}'"
                elif n_out > 100:
                    count_hot(groups, hot, _hot_min(hot_key_fraction, n_out))
                if progress:
                    progress(records, nbytes)
        job.input_file = None
        where = "mapper_final"
        if step.mapper_final:
            _feed(groups, step.mapper_final(), "mapper_final", job, step.mapper_final)
            out_records += _held(groups) - held
        if combiner is not None and _held(groups) > len(groups):  # what is left, once, before the shuffle
            where = "combiner (end of the split)"
            combine(groups, combiner, hot, _hot_min(hot_key_fraction, since))
    except MixfleetError:
        raise
    except Exception as exc:
        raise _user_error("map", task_id, where, exc) from None
    try:
        parts = partition(groups, num_reducers, part_of)
    except TypeError as exc:
        raise JobError(f"task {task_id}: a map output key can't be hashed: {exc}",
                       "emit hashable keys (str, numbers, tuples)") from None
    blocks = [encode_block(part, task_id) if part else None for part in parts]
    return MapOutput(blocks, records, nbytes, out_records, hot, ctx.counters, ctx.status)


def _identity_map(key: Any, value: Any) -> Iterator[tuple[Any, Any]]:
    yield key, value


def sample_keys(step: Step, entry: InputFile | None, piece: Piece, chunk_bytes: int, n: int,
                max_batches: int = 4) -> list:
    """Keys the step's mapper emits for up to ``n`` records of ``piece`` (range partitioner).

    The sample runs ``mapper_init``, up to ``max_batches`` batches, then ``mapper_final``, so a
    mapper that combines in memory and emits only at the end (in-mapper combining) is sampled
    from what it emits there."""
    chunked = step.mapper_chunk is not None
    mapper = step.mapper_chunk or step.mapper or _identity_map
    keys: list = []
    if step.mapper_init:
        keys += [k for k, _ in step.mapper_init() or ()]
    for i, (_, batch, _size) in enumerate(iter_records(entry, piece, chunk_bytes, raw=chunked)):
        outs = [mapper(batch)] if chunked else (
            mapper(*rec) if piece.block_kind == "pairs" else mapper(None, rec) for rec in batch)
        for pairs in outs:
            keys += [k for k, _ in pairs or ()]
            if len(keys) >= n:
                break
        if len(keys) >= n or i + 1 >= max_batches:
            break
    if step.mapper_final:
        keys += [k for k, _ in step.mapper_final() or ()]
    return keys


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
        where, fn, out, item = "reducer_init", step.reducer_init, None, _UNKNOWN
        key = None
        groups = 0
        try:
            if step.reducer_init:
                out = step.reducer_init()
                for item in out or ():
                    k, v = item
                    yield k, v
            where, fn = "reducer", reducer
            for key, values in merger.items():
                groups += 1
                out = reducer(key, values)
                for item in out or ():
                    k, v = item
                    yield k, v
            where, fn = "reducer_final", step.reducer_final
            if step.reducer_final:
                out = step.reducer_final()
                for item in out or ():
                    k, v = item
                    yield k, v
        except MixfleetError:
            raise
        except Exception as exc:
            if _ours(exc):
                raise _bad_output(where, job, fn, out, item) from None
            at = f"key {key!r:.60}" if where == "reducer" else where
            raise _user_error(where, task_id, at, exc) from None
        finally:
            ctx.increment(BUILTIN, "reduce_input_groups", groups)
            merger.close()

    return stream(), merger, ctx


def _identity_reduce(key: Any, values: list[Any]) -> Iterator[tuple[Any, Any]]:
    for v in values:
        yield key, v
