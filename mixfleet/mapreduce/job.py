"""The user-facing job API, shaped like mrjob's ``MRJob`` / ``MRStep``.

A job is a class with ``mapper``, optional ``combiner``, ``reducer`` and the
optional ``*_init`` / ``*_final`` hooks; each hook is a generator of
``(key, value)`` pairs (or returns ``None``). ``steps()`` returns a list of
:class:`Step` for multi-step jobs; by default there is one step made of the
class's own methods.

Invariants:
- ``*_init`` and ``*_final`` run once per task attempt, like mrjob.
- For text input the mapper gets ``key=None`` and one line without its
  newline; for JSONL a parsed object; for Parquet and Ray Datasets a row dict.
  Steps after the first get the previous step's ``(key, value)`` pairs.
- A job may define ``mapper_chunk(self, chunk)`` instead (mrjob's
  ``mapper_raw``, Spark's ``mapPartitions``): it is called once per block the
  map reads (``chunk_bytes``, 4 MiB), with one ``str`` of whole lines
  (newlines kept) for text input, or the list of records otherwise. Combiner,
  counters, retries and backups work the same.
- Counters and status go to the attempt's :class:`TaskContext`; the master
  keeps only the counters of winning attempts.
- This module does not import Ray: a job file can be imported anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Pairs = Iterable[tuple[Any, Any]] | None


@dataclass(frozen=True)
class Step:
    """One map[-combine]-reduce step; any missing function is an identity."""

    mapper: Callable[..., Pairs] | None = None
    mapper_chunk: Callable[[Any], Pairs] | None = None
    combiner: Callable[..., Pairs] | None = None
    reducer: Callable[..., Pairs] | None = None
    mapper_init: Callable[[], Pairs] | None = None
    mapper_final: Callable[[], Pairs] | None = None
    reducer_init: Callable[[], Pairs] | None = None
    reducer_final: Callable[[], Pairs] | None = None


@dataclass
class TaskContext:
    """What one task attempt accumulates: user counters and the last status."""

    task_id: str = ""
    attempt: int = 0
    worker: int = -1
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    status: str = ""

    def increment(self, group: str, name: str, n: int = 1) -> None:
        bucket = self.counters.setdefault(str(group), {})
        bucket[str(name)] = bucket.get(str(name), 0) + int(n)


class Job:
    """Base class of a MapReduce job (override ``mapper`` and ``reducer``).

    Example::

        class WordCount(Job):
            def mapper(self, _, line):
                for word in line.split():
                    yield word, 1

            def combiner(self, word, counts):
                yield word, sum(counts)

            reducer = combiner
    """

    #: set by the runtime while a map task reads a file: the input's URI/path
    input_file: str | None = None

    def __init__(self) -> None:
        self._ctx = TaskContext()

    # --- what users override -------------------------------------------------
    def mapper(self, key: Any, value: Any) -> Pairs:
        """Identity mapper: yields ``(key, value)`` unchanged."""
        yield key, value

    def reducer(self, key: Any, values: Iterable[Any]) -> Pairs:
        """Identity reducer: yields every ``(key, value)``."""
        for value in values:
            yield key, value

    def steps(self) -> list[Step]:
        """The job's steps; one step of this class's own methods by default."""
        return [Step(
            mapper=self.mapper,
            mapper_chunk=self._own("mapper_chunk"),
            combiner=self._own("combiner"),
            reducer=self.reducer,
            mapper_init=self._own("mapper_init"),
            mapper_final=self._own("mapper_final"),
            reducer_init=self._own("reducer_init"),
            reducer_final=self._own("reducer_final"),
        )]

    # --- what users call -----------------------------------------------------
    def increment_counter(self, group: str, name: str, n: int = 1) -> None:
        """Add ``n`` to the user counter ``group/name`` (winning attempts only)."""
        self._ctx.increment(group, name, n)

    def set_status(self, msg: str) -> None:
        """Set this task's status line (shown in the task table)."""
        self._ctx.status = str(msg)

    @property
    def task_id(self) -> str:
        """The running task's id (e.g. ``s0-m-00003``)."""
        return self._ctx.task_id

    @property
    def attempt(self) -> int:
        """The running attempt's number (1 for the first; retries and backups count up)."""
        return self._ctx.attempt

    @property
    def worker_index(self) -> int:
        """The index of the worker actor running this attempt (stable across replacements)."""
        return self._ctx.worker

    # --- runtime plumbing ----------------------------------------------------
    def _own(self, name: str) -> Callable | None:
        return getattr(self, name, None)

    def _bind(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    def _note_sources(self) -> None:
        """Remember where the job's methods are defined (the driver has the file; a job
        shipped by value may not), for errors that name the user's file and line."""
        import inspect

        files = {}
        for name, fn in inspect.getmembers(type(self), inspect.isfunction):
            code = getattr(fn, "__code__", None)
            if code is not None and not fn.__module__.startswith("mixfleet."):
                files[name] = code.co_filename
        self._source_files = files

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_ctx", None)
        state.pop("input_file", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._ctx = TaskContext()


def check_steps(job: Job) -> list[Step]:
    """``job.steps()`` checked before anything starts: a list of :class:`Step` whose functions are callable."""
    from mixfleet.errors import InputError

    name = type(job).__name__
    steps = job.steps()
    hint = "return a list such as [Step(mapper=self.mapper, reducer=self.reducer)]"
    if not isinstance(steps, (list, tuple)):
        raise InputError(f"{name}.steps() returned {type(steps).__name__} {steps!r:.40}, not a list of Step", hint)
    for i, step in enumerate(steps):
        if not isinstance(step, Step):
            raise InputError(f"{name}.steps()[{i}] is {type(step).__name__} {step!r:.40}, not a Step", hint)
        for attr in ("mapper", "combiner", "reducer", "mapper_init", "mapper_final", "reducer_init",
                      "reducer_final"):
            fn = getattr(step, attr)
            if fn is not None and not callable(fn):
                raise InputError(f"{name}.steps()[{i}].{attr} is {type(fn).__name__} {fn!r:.40}, not a function",
                                 "pass a method or function (or leave it out)")
    return list(steps)
