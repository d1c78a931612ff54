"""Speculative execution as a pure policy: Spark's trigger, LATE's choice (Zaharia et al., OSDI 2008).

Notation, per running task ``t`` with one attempt:
    p_t   progress in [0, 1] from its heartbeats (bytes or blocks done)
    a_t   age of the attempt (s)
    r_t = p_t / a_t                      progress rate
    left_t = (1 - p_t) / r_t             estimated time left (inf when p_t = 0)
    m     median duration of the phase's completed (winning) attempts

Rules (all configurable in :class:`RunConfig`):
- only once ``max(1, floor(threshold * tasks))`` of the phase's tasks are done
  (Spark's ``speculation.quantile``, 0.75: with two reduces, one done is enough);
- a task is a straggler when ``a_t > max(floor_s, multiplier * m)``
  (Spark's ``speculation.multiplier`` 1.5 and a 100 ms floor), so the trigger
  follows the phase's own task times: 2 s tasks are backed up after 3 s;
- at most ``ceil(cap * running)`` (10%) tasks with a live backup;
- the backup goes to an idle worker that is not itself slow: a worker
  whose completed-task rate is below ``slow_ratio`` x the median rate;
- a backup must be expected to finish first (Hadoop's ``DefaultSpeculator``):
  ``left_t`` must exceed the backup's own estimated run time, ``size_t`` over the
  chosen worker's observed rate, or ``m`` when either is unknown;
- among stragglers, the task with the longest ``left_t`` is backed up (LATE).
The master applies the decision; the first attempt to finish wins.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Running:
    """A running task as the policy sees it."""

    task_id: str
    age_s: float
    progress: float
    attempts_running: int
    worker: int
    size: int = 0  # bytes a backup would read (0: unknown)


def time_left(r: Running) -> float:
    if r.progress <= 0 or r.age_s <= 0:
        return math.inf
    rate = r.progress / r.age_s
    return (1.0 - min(r.progress, 1.0)) / rate


def slow_workers(rates: dict[int, float], slow_ratio: float) -> set[int]:
    """Workers whose observed rate is below ``slow_ratio`` x the median (needs >= 2 workers)."""
    if len(rates) < 2:
        return set()
    median = statistics.median(rates.values())
    return {w for w, r in rates.items() if r < slow_ratio * median}


def backup_time(r: Running, worker: int, rates: dict[int, float], median_s: float) -> float:
    """Estimated run time of a new attempt of ``r`` on ``worker``."""
    rate = rates.get(worker)
    return r.size / rate if r.size and rate else median_s


def straggler_age(durations: list[float], multiplier: float, floor_s: float) -> float:
    """The age past which a running attempt is a straggler (``inf`` before any task finished)."""
    if not durations:
        return math.inf
    return max(floor_s, multiplier * statistics.median(durations))


def choose_backup(running: list[Running], durations: list[float], done: int, total: int, idle: list[int],
                  rates: dict[int, float], *, threshold: float, multiplier: float, cap: float, floor_s: float,
                  slow_ratio: float) -> tuple[str, int] | None:
    """``(task_id, worker)`` for the next backup attempt, or ``None``.

    ``durations`` are the phase's completed attempts' run times, ``done`` its
    finished tasks (restored ones included), ``total`` all its tasks."""
    if not running or not idle or total == 0 or done < max(1, math.floor(threshold * total)):
        return None
    backed = sum(1 for r in running if r.attempts_running > 1)
    if backed >= math.ceil(cap * len(running)):
        return None
    slow = slow_workers(rates, slow_ratio)
    fast_idle = [w for w in idle if w not in slow]
    if not fast_idle:
        return None
    limit = straggler_age(durations, multiplier, floor_s)
    candidates = [r for r in running if r.attempts_running == 1 and r.age_s > limit]
    if not candidates:
        return None
    median_s = statistics.median(durations)
    for best in sorted(candidates, key=lambda r: (time_left(r), r.age_s), reverse=True):
        worker = next((w for w in fast_idle if w != best.worker), None)
        if worker is not None and time_left(best) > backup_time(best, worker, rates, median_s):
            return best.task_id, worker
    return None
