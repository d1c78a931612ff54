"""The block store: owns map outputs so that they outlive workers and masters.

Ray 2.60 has no ``ray.put(_owner=...)``, so ownership is given by making the
store actor itself ``ray.put`` each block: an object is owned by the process
that created it, and the store is created by the driver, so a worker crash
or a master restart never loses a committed map output. The store also
indexes the winning attempt's references by task id, which is how a
restarted master finds them again (its checkpoint only says "in the store").
"""

from __future__ import annotations

from typing import Any

import ray


class BlockStore:
    def __init__(self):
        self.winners: dict[str, list[Any]] = {}

    def put(self, blocks: list[bytes | None]) -> list[Any]:
        """Own ``blocks``; returns one reference (or ``None``) per block."""
        return [ray.put(b) if b is not None else None for b in blocks]

    def register(self, task_id: str, refs: list[Any]) -> None:
        """Keep the winning attempt's references (a restarted master asks for them)."""
        self.winners[task_id] = list(refs)

    def lookup(self, task_ids: list[str]) -> dict[str, list]:
        """The kept references of those tasks that have them."""
        return {t: self.winners[t] for t in task_ids if t in self.winners}

    def forget(self, prefix: str = "") -> None:
        for key in [k for k in self.winners if k.startswith(prefix)]:
            del self.winners[key]
