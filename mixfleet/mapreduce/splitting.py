"""Dynamic splitting: an idle worker takes over the unclaimed remainder of a running map.

A running map reads its split chunk by chunk, each chunk claimed from the
master first (:meth:`Master.claim`). :class:`Claims` logs those claims per
attempt, which gives the attempt's own read rate, and caps each claim at
``claim_s`` of reading at that rate: a slow worker holds little more than
what it is reading now, so little is left for it to finish, or for a backup
to redo, once an idle worker has taken the rest.

:func:`steal` cuts the running map with the most unclaimed *time* (bytes over
its attempt's rate) at a byte offset at or after what it has already claimed
(so no line is read twice or skipped, see :mod:`records`); the tail, with any
later pieces, becomes a new task. The cut gives each side a share in
proportion to its rate, so both finish together: half each between equal
workers, ten elevenths to the thief when the victim reads ten times slower.
A cut is made when the thief's share is at least one chunk, or would take the
victim at least ``min_saving_s`` to read.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixfleet.mapreduce.inputs import Piece
from mixfleet.mapreduce.tasks import State, Task, TaskTable

MIN_CLAIM = 64 * 1024


@dataclass
class _Log:
    first: float    # when the attempt's first claim was granted
    granted: int    # bytes granted so far
    last: int       # bytes of the latest grant (being read now)


class Claims:
    """Claims per map attempt, keyed ``(task_id, attempt)``: rates and claim sizes."""

    def __init__(self, claim_s: float):
        self.claim_s = claim_s
        self.logs: dict[tuple[str, int], _Log] = {}

    def grant(self, key: tuple[str, int], nbytes: int, now: float) -> int:
        """Bytes granted to a claim of ``nbytes``: at most what the attempt reads in
        ``claim_s`` at its rate so far (a claim means the previous one was read), at least
        ``MIN_CLAIM``; the first claim of an attempt is not capped."""
        log = self.logs.get(key)
        if log is not None and now > log.first and nbytes > 0:
            nbytes = min(nbytes, max(MIN_CLAIM, int(log.granted / (now - log.first) * self.claim_s)))
        if nbytes > 0:
            if log is None:
                self.logs[key] = _Log(now, nbytes, nbytes)
            else:
                log.granted += nbytes
                log.last = nbytes
        return nbytes

    def read(self, key: tuple[str, int]) -> int:
        """Bytes the attempt has read: all it was granted but its latest claim."""
        log = self.logs.get(key)
        return 0 if log is None else log.granted - log.last

    def rate(self, key: tuple[str, int], now: float) -> float | None:
        """Bytes per second the attempt reads (``None`` before its first claim). While the
        first claim is being read, the claim over the time so far: an upper bound, which
        already shows a worker ten times slower than the others."""
        log = self.logs.get(key)
        if log is None or now <= log.first:
            return None
        return (self.read(key) or log.granted) / (now - log.first)


def share(unclaimed: int, victim_rate: float | None, thief_rate: float | None) -> int:
    """Bytes of ``unclaimed`` the thief takes so that both sides finish together."""
    if not victim_rate or not thief_rate:
        return unclaimed // 2
    return int(unclaimed * thief_rate / (victim_rate + thief_rate))


def steal(table: TaskTable, tasks: list[Task], files: list, chunk_bytes: int,
          rate_of=lambda t: None, thief_rate: float | None = None, min_saving_s: float = 1.0) -> Task | None:
    """Cut the running map with the most unclaimed time; the tail becomes a new task.

    ``rate_of(task)`` is the bytes per second of the task's running attempt (``None``
    when unknown: it is taken to read as fast as the thief), ``thief_rate`` the idle
    worker's own."""
    best, best_key, best_rate = None, 0.0, None
    for t in tasks:
        if t.state is not State.RUNNING or len(t.running_attempts) != 1:
            continue
        if any(p.block_kind or files[p.file].fmt == "parquet" for p in t.pieces):
            continue
        rate = rate_of(t)
        key = unclaimed(t) / (rate or thief_rate or 1.0)
        if key > best_key:
            best, best_key, best_rate = t, key, rate
    if best is None:
        return None
    left = unclaimed(best)
    take = share(left, best_rate, thief_rate)
    slow_enough = best_rate is not None and take >= MIN_CLAIM and take / best_rate >= min_saving_s
    if take < chunk_bytes and not slow_enough:
        return None
    cur = max(best.claimed) if best.claimed else 0
    piece = best.pieces[cur]
    granted = best.claimed.get(cur, piece.start)
    later = sum(p.size for p in best.pieces[cur + 1:])
    cut = min(piece.end, max(granted, piece.end + later - take))
    tail = ([Piece(piece.file, cut, piece.end)] if cut < piece.end else []) + best.pieces[cur + 1:]
    if not tail:
        return None
    best.pieces = best.pieces[:cur] + [Piece(piece.file, piece.start, cut)]
    best.size -= sum(p.size for p in tail)
    new = table.add(Task(f"{best.id}.{len(table.tasks)}", "map", len(tasks), tail,
                         size=sum(p.size for p in tail)))
    tasks.append(new)
    return new


def unclaimed(t: Task) -> int:
    """Bytes of ``t`` no attempt has claimed yet."""
    cur = max(t.claimed) if t.claimed else 0
    piece = t.pieces[cur]
    return piece.end - t.claimed.get(cur, piece.start) + sum(p.size for p in t.pieces[cur + 1:])
