"""Dynamic splitting: an idle worker takes over the unclaimed remainder of a running map.

The running map with the most unclaimed bytes is cut at a byte offset at or
after what it has already claimed (so no line is read twice or skipped, see
:mod:`records`); the tail, with any later pieces, becomes a new task.
"""

from __future__ import annotations

from mixfleet.mapreduce.inputs import Piece
from mixfleet.mapreduce.tasks import State, Task, TaskTable


def steal(table: TaskTable, tasks: list[Task], files: list, chunk_bytes: int) -> Task | None:
    """Cut the running map with the most unclaimed bytes; the tail becomes a new task."""
    best, best_left = None, 2 * chunk_bytes
    for t in tasks:
        if t.state is not State.RUNNING or len(t.running_attempts) != 1:
            continue
        if any(p.block_kind or files[p.file].fmt == "parquet" for p in t.pieces):
            continue
        left = unclaimed(t)
        if left > best_left:
            best, best_left = t, left
    if best is None:
        return None
    cur = max(best.claimed) if best.claimed else 0
    piece = best.pieces[cur]
    granted = best.claimed.get(cur, piece.start)
    later = sum(p.size for p in best.pieces[cur + 1:])
    cut = min(piece.end, max(granted, piece.end + later - best_left // 2))
    tail = ([Piece(piece.file, cut, piece.end)] if cut < piece.end else []) + best.pieces[cur + 1:]
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

