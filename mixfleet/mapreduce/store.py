"""The block stores: own map outputs so that they outlive workers and masters.

Ray 2.60 has no ``ray.put(_owner=...)``, so ownership is given by making a
store actor itself ``ray.put`` each block: an object is owned by the process
that created it, and the stores are created by the driver, so a worker crash
or a master restart never loses a committed map output. There is one store
per node (pinned there), and a worker puts its blocks into its own node's
store (Hadoop and Spark keep map outputs on the mapper's machine too): the
blocks stay local, and when a node dies exactly the maps that ran there
lose their outputs, which the master then recomputes (lineage). A store
also indexes the winning attempt's references by task id, which is how a
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


def start_stores(store_cls: type) -> dict[str, Any]:
    """One store per alive node, pinned to it; the driver's node first (the default
    for a worker on a node that joined later)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    nodes = [here] + [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    remote = ray.remote(store_cls)
    return {node: remote.options(num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
        node, soft=False)).remote() for node in nodes}


def store_for(stores: dict[str, Any], node: str) -> tuple[str, Any]:
    """``(key, store)`` a worker on ``node`` uses: its node's, else the default (first)."""
    key = node if node in stores else next(iter(stores))
    return key, stores[key]
