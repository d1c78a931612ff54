"""Jobs used by the MapReduce tests (loaded by path; shipped to Ray by value).

``ParallelProbe`` is the lab's timing check: each map/reduce attempt drops a
file in a scratch folder, watches how many siblings exist for a while and
reports the most it saw, so the job itself records real parallelism.
"""

import os
import re
import threading
import time
import uuid

from mixfleet.mapreduce import Job, Step

WORD = re.compile(r"[A-Za-z]+")


def _probe(scratch: str, kind: str, hold_s: float) -> tuple[str, int]:
    mine = os.path.join(scratch, f"{kind}-{os.getpid()}-{uuid.uuid4().hex}")
    open(mine, "w").close()
    seen = 0
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        seen = max(seen, sum(1 for n in os.listdir(scratch) if n.startswith(kind + "-")))
        time.sleep(0.02)
    return mine, seen


class ParallelProbe(Job):
    def __init__(self, scratch: str = "", hold_s: float = 1.0):
        super().__init__()
        self.scratch, self.hold_s = scratch, hold_s

    def mapper_init(self):
        self._file, self._seen = _probe(self.scratch, "map", self.hold_s)

    def mapper(self, _, line):
        for word in WORD.findall(line):
            yield word, 1

    def mapper_final(self):
        os.unlink(self._file)
        yield "~map-parallel", self._seen

    def reducer_init(self):
        self._rfile, self._rseen = _probe(self.scratch, "reduce", self.hold_s)

    def reducer(self, key, values):
        yield key, max(values) if key.startswith("~") else sum(values)

    def reducer_final(self):
        os.unlink(self._rfile)
        yield f"~reduce-parallel-{uuid.uuid4().hex[:6]}", self._rseen


class TwoStep(Job):
    """Most frequent word length: step 1 counts words, step 2 groups by length."""

    def steps(self):
        return [Step(mapper=self.words, combiner=self.total, reducer=self.total),
                Step(mapper=self.by_length, reducer=self.top)]

    def words(self, _, line):
        for w in WORD.findall(line):
            yield w.lower(), 1

    def total(self, w, counts):
        yield w, sum(counts)

    def by_length(self, word, count):
        yield len(word), count

    def top(self, length, counts):
        yield length, sum(counts)


class Boom(Job):
    """Raises on the line that contains 'Gregor' first (a user bug)."""

    def mapper(self, _, line):
        if "Gregor" in line:
            raise ValueError("boom on purpose")
        yield line[:1], 1


class Unpicklable(Job):
    def mapper(self, _, line):
        yield "lock", threading.Lock()


class NotJsonValue(Job):
    def mapper(self, _, line):
        yield "k", 1

    def reducer(self, key, values):
        yield key, {1, 2}


class Counting(Job):
    def mapper(self, _, line):
        self.increment_counter("lines", "seen")
        if not line.strip():
            self.increment_counter("lines", "blank")
        self.set_status("mapping")
        yield "lines", 1

    def combiner(self, key, values):
        yield key, sum(values)

    reducer = combiner


class Rows(Job):
    """For JSONL/Parquet/Dataset inputs: sum of ``n`` per ``group``."""

    def mapper(self, _, row):
        yield row["group"], row["n"]

    def reducer(self, group, values):
        yield group, sum(values)


class NotAJob:
    pass
