"""Jobs used by the MapReduce tests (loaded by path; shipped to Ray by value).

``ParallelProbe`` is the lab's parallelism check: each map/reduce attempt drops a
file in a scratch folder and waits until it sees a sibling running (or an
earlier task saw one), and reports the most it saw, so the job itself records
real parallelism.
"""

import os
import re
import threading
import time
import uuid

from mixfleet.mapreduce import Job, Step

WORD = re.compile(r"[A-Za-z]+")


def _probe(scratch: str, kind: str, limit_s: float) -> tuple[str, int]:
    """Wait until a sibling task of the same kind is seen running (or one was seen by an
    earlier task: the ``ok-KIND`` marker); a handshake, not a fixed hold, so load can't fail it."""
    mine = os.path.join(scratch, f"{kind}-{os.getpid()}-{uuid.uuid4().hex}")
    ok = os.path.join(scratch, f"ok-{kind}")
    open(mine, "w").close()
    seen = 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and not os.path.exists(ok):
        seen = max(seen, sum(1 for n in os.listdir(scratch) if n.startswith(kind + "-")))
        if seen >= 2:
            open(ok, "w").close()
            break
        time.sleep(0.02)
    return mine, seen


class ParallelProbe(Job):
    def __init__(self, scratch: str = "", limit_s: float = 120.0):
        super().__init__()
        self.scratch, self.limit_s = scratch, limit_s

    def mapper_init(self):
        self._file, self._seen = _probe(self.scratch, "map", self.limit_s)

    def mapper(self, _, line):
        for word in WORD.findall(line):
            yield word, 1

    def mapper_final(self):
        os.unlink(self._file)
        yield "~map-parallel", self._seen

    def reducer_init(self):
        self._rfile, self._rseen = _probe(self.scratch, "reduce", self.limit_s)

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


class Crashy(Job):
    """The lab's crash app: about a third of task attempts kill their own worker
    process, a third sleep up to ``max_sleep_s``; the choice is drawn from
    ``(seed, task, attempt)`` so a seed replays the same failures."""

    def __init__(self, seed: int = 0, max_sleep_s: float = 10.0):
        super().__init__()
        self.seed, self.max_sleep_s = seed, max_sleep_s

    def _chaos(self):
        import random

        rng = random.Random(f"{self.seed}-{self.task_id}-{self.attempt}")
        r = rng.random()
        if r < 1 / 3:
            os._exit(1)
        elif r < 2 / 3:
            time.sleep(rng.uniform(0, self.max_sleep_s))

    def mapper_init(self):
        self._chaos()

    def mapper(self, _, line):
        for word in WORD.findall(line):
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer_init(self):
        self._chaos()

    def reducer(self, word, counts):
        yield word, sum(counts)


class Hang(Job):
    """The first attempt of the first map freezes its whole process (SIGSTOP): no
    heartbeat, no error; only the silence timeout can notice it."""

    def mapper_init(self):
        import signal

        if self.task_id.endswith("m-00000") and self.attempt == 1:
            os.kill(os.getpid(), signal.SIGSTOP)

    def mapper(self, _, line):
        for word in WORD.findall(line):
            yield word, 1

    def reducer(self, word, counts):
        yield word, sum(counts)


class Counted(Job):
    """Each map attempt leaves a file in ``scratch`` and takes 2-5 s (the lab's job count)."""

    def __init__(self, scratch: str = "", seconds: tuple = (2.0, 5.0)):
        super().__init__()
        self.scratch, self.seconds = scratch, seconds

    def mapper_init(self):
        import random

        open(os.path.join(self.scratch, f"{self.task_id}.a{self.attempt}.{uuid.uuid4().hex[:6]}"), "w").close()
        self._until = time.monotonic() + random.Random(self.task_id).uniform(*self.seconds)

    def mapper(self, _, line):
        for word in WORD.findall(line):
            yield word, 1

    def mapper_final(self):
        time.sleep(max(0.0, self._until - time.monotonic()))
        return ()

    def reducer(self, word, counts):
        yield word, sum(counts)


class WordCounting(Job):
    """The lab's word count, for the test jobs below to add their faults to."""

    def mapper(self, _, line):
        for word in WORD.findall(line):
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer(self, word, counts):
        yield word, sum(counts)


def wait_for_go(scratch: str, limit_s: float = 300.0) -> None:
    """Block until the test writes ``scratch/go`` (a handshake, so no test depends on timing)."""
    deadline = time.monotonic() + limit_s
    while not os.path.exists(os.path.join(scratch, "go")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never wrote {scratch}/go")
        time.sleep(0.02)


def announce(scratch: str, kind: str, task_id: str) -> None:
    """Leave ``KIND-TASK-PID-RANDOM`` in ``scratch`` (tests read the pid to check the process is gone)."""
    open(os.path.join(scratch, f"{kind}-{task_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"), "w").close()


class SlowReduce(WordCounting):
    """Word count whose reducers announce themselves in ``scratch`` and then wait for
    ``scratch/go``, which the test writes once it has done what it tests (kill the master,
    interrupt the driver): the job cannot finish before that, however loaded the machine.

    ``scratch`` defaults to ``$MIXFLEET_TEST_SCRATCH`` (read where the job is built)."""

    def __init__(self, scratch: str | None = None):
        super().__init__()
        self.scratch = scratch or os.environ.get("MIXFLEET_TEST_SCRATCH", "")

    def reducer_init(self):
        announce(self.scratch, "reduce", self.task_id)
        wait_for_go(self.scratch)


class GatedMap(SlowReduce):
    """Maps announce themselves and wait for ``scratch/go`` (interrupt mid-map)."""

    def mapper_init(self):
        announce(self.scratch, "map", self.task_id)
        wait_for_go(self.scratch)

    def reducer_init(self):
        pass


class Straggler(WordCounting):
    """Word count where every attempt on worker ``slow`` in ``phases`` is a CPU-bound straggler:
    it burns CPU in a loop (no sleep) until another attempt of the same task has finished (the
    ``done-TASK`` file), or for ``limit_s``. Once the other attempt has finished, the straggler
    still does not finish before ``limit_s`` (it waits without burning CPU): it must never race
    the winner to the master, so only a backup can win. A losing map returns early only once a
    reduce has started (``reduce-started``; it leaves ``saw-reduce-TASK``): the map phase is over,
    and the next phase did not wait for it.

    With ``reduce`` in ``phases`` the other worker's reduces wait (up to ``limit_s``) until the
    slow worker has one (``reduce-on-slow``), so each worker gets a reduce whatever the timing."""

    def __init__(self, scratch: str = "", slow: int = 1, limit_s: float = 120.0, phases: str = "map,reduce"):
        super().__init__()
        self.scratch, self.slow, self.limit_s, self.phases = scratch, slow, limit_s, phases.split(",")

    def _file(self, name: str) -> str:
        return os.path.join(self.scratch, name)

    def _straggle(self, phase: str):
        deadline = time.monotonic() + self.limit_s
        if self.worker_index != self.slow or phase not in self.phases:
            if phase == "reduce" and phase in self.phases:
                while not os.path.exists(self._file("reduce-on-slow")) and time.monotonic() < deadline:
                    time.sleep(0.05)
            return
        if phase == "reduce":
            open(self._file("reduce-on-slow"), "w").close()
        done = self._file(f"done-{self.task_id}")
        x = 0
        while not os.path.exists(done) and time.monotonic() < deadline:
            for i in range(20_000):
                x += i * i
        while time.monotonic() < deadline:  # lost the race by construction: wait to be drained
            if phase == "map" and os.path.exists(self._file("reduce-started")):
                open(self._file(f"saw-reduce-{self.task_id}"), "w").close()
                return
            time.sleep(0.2)

    def _done(self):
        open(self._file(f"done-{self.task_id}"), "w").close()

    def mapper_init(self):
        self._straggle("map")

    def mapper_final(self):
        self._done()

    def reducer_init(self):
        open(self._file("reduce-started"), "w").close()
        self._straggle("reduce")

    def reducer_final(self):
        self._done()


class BadPairs(Job):
    """Its reducer yields a bare string instead of a (key, value) pair (a user bug)."""

    def mapper(self, _, line):
        yield "lines", 1

    def reducer(self, key, values):
        yield f"{key}={sum(values)}"  # BAD-PAIR-LINE


class NotIterableMapper(Job):
    """Its mapper returns an int (a user bug)."""

    def mapper(self, _, line):
        return len(line)


class MapOrder(Job):
    """Each map emits its task id; the reducer keeps the order in which the ids arrive."""

    def mapper(self, _, line):
        return None

    def mapper_final(self):
        yield "order", self.task_id

    def reducer(self, key, ids):
        yield key, ",".join(ids)


class NodeGated(WordCounting):
    """Word count that holds the map phase open until the test writes ``scratch/go``, whatever
    the scheduler did: a map on ``hold_node`` (the driver's and master's node) waits, and so does
    every worker's second map, so each worker elsewhere finishes exactly one map and then waits.
    Every finished map leaves ``mapdone-TASK-ATTEMPT-NODEID`` (where its blocks were stored), so
    a test can kill a node that holds map outputs while the map phase is still open."""

    def __init__(self, scratch: str = "", hold_node: str = ""):
        super().__init__()
        self.scratch = scratch
        self.hold_node = hold_node

    def mapper_init(self):
        import ray

        ran_before = os.path.exists(os.path.join(self.scratch, f"ran-{os.getpid()}"))
        if ran_before or ray.get_runtime_context().get_node_id() == self.hold_node:
            wait_for_go(self.scratch)

    def mapper_final(self):
        import ray

        node = ray.get_runtime_context().get_node_id()
        open(os.path.join(self.scratch, f"ran-{os.getpid()}"), "w").close()
        open(os.path.join(self.scratch, f"mapdone-{self.task_id}-{self.attempt}-{node}"), "w").close()

