"""The master's task table: an explicit state machine per task.

States and the only legal moves::

    pending --start--> running --finish--> done --recompute (output lost)--> pending
                          |  \\--fail(final)--> failed
                          \\--lose (worker lost, attempts left)--> pending

A task may have several attempts (retries after a lost worker, and backup
attempts); the first attempt to finish wins and the task's ``result`` is
that attempt's. Counters come from winning attempts only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class State(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


_MOVES = {
    State.PENDING: {State.RUNNING},
    State.RUNNING: {State.DONE, State.FAILED, State.PENDING},
    State.DONE: {State.PENDING},  # only through recompute(): a map whose output was lost
    State.FAILED: set(),
}


@dataclass
class Attempt:
    number: int
    worker: int
    started: float
    finished: float | None = None
    outcome: str = "running"  # running | won | lost | failed | cancelled
    speculative: bool = False


@dataclass
class Task:
    id: str
    kind: str  # "map" | "reduce"
    index: int
    pieces: list = field(default_factory=list)
    state: State = State.PENDING
    attempts: list[Attempt] = field(default_factory=list)
    result: Any = None
    claimed: dict[int, int] = field(default_factory=dict)  # piece index -> granted offset
    size: int = 0

    def move(self, to: State) -> None:
        if to not in _MOVES[self.state]:
            raise AssertionError(f"task {self.id}: illegal move {self.state.value} -> {to.value}")
        self.state = to

    @property
    def running_attempts(self) -> list[Attempt]:
        return [a for a in self.attempts if a.outcome == "running"]


class TaskTable:
    """All tasks of one phase, in index order, with the counts the UI shows."""

    def __init__(self, clock=time.monotonic):
        self.tasks: dict[str, Task] = {}
        self.clock = clock
        self.launched = 0
        self.failed_attempts = 0
        self.speculative = 0
        self.launched_by_kind: dict[str, int] = {"map": 0, "reduce": 0}

    def add(self, task: Task) -> Task:
        assert task.id not in self.tasks, task.id
        self.tasks[task.id] = task
        return task

    def of_kind(self, kind: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.kind == kind]

    def pending(self, kind: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.kind == kind and t.state is State.PENDING]

    def start(self, task: Task, worker: int, speculative: bool = False) -> Attempt:
        if not speculative:
            task.move(State.RUNNING)
        attempt = Attempt(len(task.attempts) + 1, worker, self.clock(), speculative=speculative)
        task.attempts.append(attempt)
        self.launched += 1
        self.launched_by_kind[task.kind] = self.launched_by_kind.get(task.kind, 0) + 1
        self.speculative += int(speculative)
        return attempt

    def finish(self, task: Task, attempt: Attempt, result: Any) -> bool:
        """Record a finished attempt; True if it won (the task was not done yet)."""
        attempt.finished = self.clock()
        if task.state is State.DONE:
            attempt.outcome = "cancelled"
            return False
        attempt.outcome = "won"
        task.result = result
        task.move(State.DONE)
        for other in task.running_attempts:
            other.outcome, other.finished = "cancelled", self.clock()
        return True

    def lose(self, task: Task, attempt: Attempt, max_attempts: int) -> bool:
        """An attempt was lost with its worker; True if the task goes back to pending."""
        attempt.outcome, attempt.finished = "lost", self.clock()
        self.failed_attempts += 1
        if task.state is not State.RUNNING or task.running_attempts:
            return False
        if len(task.attempts) >= max_attempts:
            task.move(State.FAILED)
            return False
        task.move(State.PENDING)
        task.claimed.clear()
        return True

    def recompute(self, task: Task) -> None:
        """A finished map's output was lost (its node died): run it again (lineage)."""
        assert task.state is State.DONE and task.kind == "map", task.id
        task.move(State.PENDING)
        task.result = None
        task.claimed.clear()

    def fail(self, task: Task, attempt: Attempt) -> None:
        attempt.outcome, attempt.finished = "failed", self.clock()
        self.failed_attempts += 1
        if task.state is State.RUNNING:
            task.move(State.FAILED)

    def counts(self, kind: str) -> dict[str, int]:
        out = {s.value: 0 for s in State}
        for t in self.tasks.values():
            if t.kind == kind:
                out[t.state.value] += 1
        return out
