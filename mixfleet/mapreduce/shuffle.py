"""Map-side grouping/combining/partitioning and the reduce-side merge.

A map task groups its mapper output in one dict ``key -> [values]``
(batch work, no per-record Ray call), runs the combiner on keys with more
than one value after every chunk, and at the end cuts the dict into one
*block* per reducer: a pickled ``dict key -> [values]``. Blocks are pickled
here (not by Ray) so their exact size is known and an unserialisable value
is reported with its key.

The reduce side merges blocks into one dict and, past its memory budget,
spills the dict as a key-sorted run to a local file; the final stream is a
heap merge of the runs, grouped by key, in key order.
"""

from __future__ import annotations

import heapq
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Any

from mixfleet.errors import JobError
from mixfleet.mapreduce.keys import sort_keys

Groups = dict[Any, list[Any]]


def combine(groups: Groups, combiner: Callable, hot: dict[Any, int], hot_min: int) -> Groups:
    """Run ``combiner`` in place on every key with several values; count hot keys.

    A combiner may run zero or more times per key (Hadoop's contract), so
    keys with one value are left alone.
    """
    moved: list[tuple[Any, Any]] = []
    for key, values in groups.items():
        if len(values) < 2:
            continue
        if len(values) >= hot_min:
            hot[key] = hot.get(key, 0) + len(values)
        kept = []
        for k2, v2 in combiner(key, values) or ():
            if k2 == key:
                kept.append(v2)
            else:
                moved.append((k2, v2))
        groups[key] = kept
    for k2, v2 in moved:
        groups.setdefault(k2, []).append(v2)
    return groups


def count_hot(groups: Groups, hot: dict[Any, int], hot_min: int) -> None:
    """Hot-key accounting when there is no combiner."""
    for key, values in groups.items():
        if len(values) >= hot_min:
            hot[key] = hot.get(key, 0) + len(values)


def partition(groups: Groups, n: int, part_of: Callable[[Any], int]) -> list[Groups]:
    parts: list[Groups] = [{} for _ in range(n)]
    for key, values in groups.items():
        if values:  # a combiner may have emptied a key
            parts[part_of(key)][key] = values
    return parts


def encode_block(block: Groups, task_id: str) -> bytes:
    """Pickle a block; on failure name the first key/value that can't be serialised."""
    try:
        return pickle.dumps(block, protocol=5)
    except Exception as exc:
        for key, values in block.items():
            for value in values:
                try:
                    pickle.dumps((key, value), protocol=5)
                except Exception:
                    raise JobError(
                        f"task {task_id}: value {_short(value)} (type {type(value).__name__}) for key "
                        f"{_short(key)} can't be serialised: {exc}",
                        "emit only picklable keys and values (str, numbers, lists, dicts, tuples)",
                    ) from None
        raise JobError(f"task {task_id}: map output can't be serialised: {exc}",
                       "emit only picklable keys and values") from None


def _short(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReduceMerger:
    """Merge map blocks for one reducer under a memory budget (spilling runs)."""

    def __init__(self, budget_bytes: int, spill_dir: str | None = None):
        self.budget = budget_bytes
        self.groups: Groups = {}
        self.held = 0
        self.runs: list[str] = []
        self.spill_dir = spill_dir
        self.input_records = 0
        self.spills = 0

    def add(self, encoded: bytes) -> None:
        block: Groups = pickle.loads(encoded)
        groups = self.groups
        for key, values in block.items():
            self.input_records += len(values)
            cur = groups.get(key)
            if cur is None:
                groups[key] = values
            else:
                cur.extend(values)
        self.held += len(encoded)
        if self.held > self.budget:
            self._spill()

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix="mixfleet-mr-run-", suffix=".pkl", dir=self.spill_dir)
        with os.fdopen(fd, "wb") as f:
            keys = sort_keys(list(self.groups))
            for i in range(0, len(keys), 4096):
                pickle.dump([(k, self.groups[k]) for k in keys[i:i + 4096]], f, protocol=5)
        self.runs.append(path)
        self.spills += 1
        self.groups, self.held = {}, 0

    @property
    def spilled_runs(self) -> int:
        """Runs written to disk so far (kept after ``items()`` removes the files)."""
        return self.spills

    def items(self) -> Iterator[tuple[Any, list[Any]]]:
        """``(key, values)`` in key order, merging spilled runs."""
        if not self.runs:
            groups = self.groups
            for key in sort_keys(list(groups)):
                yield key, groups[key]
            return
        self._spill()
        streams = [_read_run(p) for p in self.runs]
        try:
            merged = heapq.merge(*streams, key=lambda kv: kv[0])
            for key, group in groupby(merged, key=lambda kv: kv[0]):
                values: list[Any] = []
                for _, vs in group:
                    values.extend(vs)
                yield key, values
        except TypeError:
            raise JobError("reduce keys are not mutually comparable, so spilled runs can't be merged",
                           "emit keys of one type, or raise reduce_memory_bytes") from None
        finally:
            self.close()

    def close(self) -> None:
        for path in self.runs:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.runs = []


def _read_run(path: str) -> Iterator[tuple[Any, list[Any]]]:
    with open(path, "rb") as f:
        while True:
            try:
                chunk = pickle.load(f)
            except EOFError:
                return
            yield from chunk
