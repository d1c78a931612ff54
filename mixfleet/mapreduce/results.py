"""What a worker hands back to the master for one task attempt, one dataclass per outcome.

- :class:`MapDone` / :class:`ReduceDone`: the attempt finished; the winner's
  becomes the task's ``result`` in the task table;
- :class:`Lost`: a reduce could not fetch the blocks of these maps (their
  node or block store died); the master re-runs them (lineage);
- :class:`Failed`: user code (or the runtime) raised; the job fails with
  ``error``. A lost *worker* is not an outcome: it is the ``RayActorError``
  of the call.

:class:`JobReport` is what the master (or the inline runner) hands the
driver when the job ends.

The checkpoint's JSON form of a result is written and read in one place,
:mod:`~mixfleet.mapreduce.checkpoint` (ObjectRefs stay out: a restored map
gets its blocks back from a live block store or its durable shuffle files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mixfleet.mapreduce.execute import MapOutput


@dataclass
class Done:
    """The fields both kinds of finished attempt share."""

    counters: dict[str, dict[str, int]]
    status: str = ""  # the attempt's last user status line
    bytes: int = 1  # input bytes (map) or blocks read (reduce): the worker's rate for speculation


@dataclass
class MapDone(Done):
    refs: list | None = None  # one ObjectRef (or None) per reducer, in the block store of ``node``
    files: list[str | None] | None = None  # durable shuffle: one file (or None) per reducer
    node: str = ""
    hot: dict[Any, int] = field(default_factory=dict)  # the attempt's hottest keys and their counts

    @classmethod
    def of(cls, out: MapOutput, refs: list, files: list | None, node: str, nbytes: int, top: int = 20) -> MapDone:
        hot = dict(sorted(out.hot.items(), key=lambda kv: -kv[1])[:top])
        return cls(out.all_counters(), out.status, nbytes, refs, files, node, hot)


@dataclass
class ReduceDone(Done):
    records: int = 0
    path: str | None = None  # last step: the part attempt file
    block: Any = None  # other steps: the ObjectRef of the pickled pairs, the next step's input


@dataclass
class Lost:
    maps: list[str]  # map task ids whose blocks could not be fetched


@dataclass
class Failed:
    error: BaseException


@dataclass
class JobReport:
    status: str  # "succeeded" | "failed"
    map_tasks: int
    reduce_tasks: int
    attempts: dict[str, int]  # launched, failed, speculative
    counters: dict[str, dict[str, int]]
    parts: list[str] = field(default_factory=list)
    error: BaseException | None = None
    timeline: list[dict] = field(default_factory=list)  # one entry per attempt (none inline)

