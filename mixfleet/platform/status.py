"""What ``mixfleet cluster status`` reports: live nodes grouped by accelerator type."""

from __future__ import annotations

from typing import Any

from mixfleet.platform.accelerators import accelerator_of


def node_rows() -> list[dict[str, Any]]:
    """One dict per alive Ray node, sorted by accelerator type then node id.

    Keys: ``node_id``, ``node_type``, ``accelerator_type`` (``None`` for a
    CPU node), ``cpus``, ``gpus``, ``memory_gib``, ``object_store_gib``,
    ``address``, ``emulated_gpus`` and ``labels``.
    """
    import ray

    from mixfleet.platform.local_cluster import EMULATED_LABEL, NODE_TYPE_LABEL

    rows = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        labels = n.get("Labels", {}) or {}
        rows.append({
            "node_id": n["NodeID"],
            "node_type": labels.get(NODE_TYPE_LABEL),
            "accelerator_type": accelerator_of(res),
            "cpus": res.get("CPU", 0.0),
            "gpus": res.get("GPU", 0.0),
            "memory_gib": round(res.get("memory", 0.0) / 2**30, 2),
            "object_store_gib": round(res.get("object_store_memory", 0.0) / 2**30, 3),
            "address": n.get("NodeManagerAddress"),
            "emulated_gpus": labels.get(EMULATED_LABEL) == "true",
            "labels": {k: v for k, v in labels.items() if not k.startswith("ray.io/")},
        })
    rows.sort(key=lambda r: (r["accelerator_type"] or "~cpu", r["node_type"] or "", r["node_id"]))
    return rows


def by_accelerator(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Node ids grouped by accelerator type (``"cpu"`` for CPU-only nodes)."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(r["accelerator_type"] or "cpu", []).append(r["node_id"])
    return groups
