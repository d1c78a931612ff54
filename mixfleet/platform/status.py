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


SHORT_REASONS = {"sw_thermal_slowdown": "thermal", "hw_thermal_slowdown": "hw-thermal", "sw_power_cap": "power-cap",
                 "hw_slowdown": "hw-slow", "hw_power_brake_slowdown": "power-brake"}
GPU_COLUMNS = ["type", "node", "gpu", "source", "util%", "mem GiB", "W", "°C", "MHz", "throttle", "stale"]


def attach_telemetry(rows: list[dict[str, Any]], snapshot: dict[str, Any]) -> None:
    """Add each node's telemetry to its row: ``telemetry: {source, stale, age_s, gpus: [readings]}``.

    A node whose agent has not reported gets ``telemetry: None``.
    """
    by_node: dict[str, list[dict]] = {}
    for g in snapshot.get("gpus", []):
        by_node.setdefault(g["node_id"], []).append(g)
    for r in rows:
        node = snapshot.get("nodes", {}).get(r["node_id"])
        r["telemetry"] = None if node is None else {
            "source": node.get("source"), "stale": node["stale"], "age_s": node.get("age_s"),
            "restarts": node.get("restarts", 0), "gpus": by_node.get(r["node_id"], [])}


def gpu_table_rows(snapshot: dict[str, Any]) -> list[tuple]:
    """One row per GPU for the telemetry table (sorted by accelerator, node, index)."""
    from mixfleet.platform.telemetry.readings import throttling

    def gib(mib):
        return None if mib is None else round(mib / 1024, 1)

    out = []
    for g in sorted(snapshot.get("gpus", []),
                    key=lambda g: (g.get("accelerator_type") or "~", g["node_id"], g["gpu_index"])):
        mem = "-" if g.get("mem_total_mib") is None else f"{gib(g.get('mem_used_mib'))}/{gib(g['mem_total_mib']):g}"
        reasons = g.get("throttle_reasons")
        slow = "n/a" if reasons is None else (",".join(SHORT_REASONS.get(r, r) for r in throttling(g)) or "no")
        out.append((g.get("accelerator_type") or "?", g["node_id"][:6], g["gpu_index"], g["source"],
                    _int(g.get("util_pct")), mem, _int(g.get("power_w")), _int(g.get("temp_c")),
                    g.get("sm_clock_mhz"), slow,
                    "STALE" if g.get("stale") else ""))
    return out


def _int(v: float | None) -> int | None:
    return None if v is None else round(v)


def gpu_table(snapshot: dict[str, Any], title: str):
    """The telemetry table as a rich ``Table`` (printed once, or refreshed by ``--watch``)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, caption=snapshot.get("reason"), box=box.SIMPLE_HEAD, pad_edge=False,
                  padding=(0, 1), collapse_padding=True)
    for col in GPU_COLUMNS:
        table.add_column(col, justify="right" if col.endswith(("%", "W", "C", "MHz", "GiB")) else "left",
                         no_wrap=True)
    for row in gpu_table_rows(snapshot):
        table.add_row(*["-" if v is None else str(v) for v in row],
                      style="red" if row[-1] == "STALE" else "yellow" if row[-2] not in ("no", "n/a") else None)
    return table


NODE_STATES = ("launching", "pending", "running", "idle")


def autoscaler_report(node_types: dict[str, dict] | None = None) -> dict[str, Any] | None:
    """What Ray's autoscaler says, per node type (needs a connected Ray); ``None`` without an autoscaler.

    Per type: ``launching`` (queued for launch by the autoscaler), ``pending``
    (launched, raylet not reporting yet), ``running`` (alive in the GCS) and,
    of those, ``idle`` (no resource in use; the GCS's own idle tracking) with
    ``idle_s`` of the longest-idle one. Also ``demands`` (resource bundles
    waiting for a node) and ``failed`` launches. Read from the autoscaler's
    status record (the one ``ray status`` prints) and the GCS node states.
    """
    import json

    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    if not raw:
        return None
    status = json.loads(raw)
    report = status.get("autoscaler_report") or {}
    types: dict[str, dict[str, Any]] = {}

    def slot(name: str) -> dict[str, Any]:
        return types.setdefault(name, {k: 0 for k in NODE_STATES} | {"idle_s": 0.0, "busy": []})

    head = next((n for n, t in (node_types or {}).items() if t.get("head")), None)

    def name_of(ray_type: str) -> str:  # the fake provider names the head node's type its own way
        return head if head and ray_type in ("ray.head.default", "") else ray_type

    for name in node_types or {}:
        slot(name)
    for name, n in (report.get("pending_launches") or {}).items():
        slot(name_of(name))["launching"] += n
    for _ip, name, _status in report.get("pending_nodes") or []:
        slot(name_of(name))["pending"] += 1
    for node in _gcs_node_states():
        t = slot(name_of(node["type"]))
        t["running"] += 1
        if node["idle"]:
            t["idle"] += 1
            t["idle_s"] = max(t["idle_s"], node["idle_s"])
        else:  # why the autoscaler keeps it (Ray's own reasons, e.g. "Busy workers on node.")
            t["busy"] = sorted(set(t["busy"]) | set(node["activity"]))
    demands = (status.get("load_metrics_report") or {}).get("resource_demand") or []
    return {"node_types": types, "demands": [{"resources": r, "count": n} for r, n in demands],
            "failed": [{"node": ip, "node_type": t} for ip, t in report.get("failed_nodes") or []],
            "updated": status.get("time")}


def _gcs_node_states() -> list[dict[str, Any]]:
    """Alive nodes with their autoscaler node type and whether the GCS sees them idle."""
    import ray
    from ray.autoscaler.v2.sdk import get_cluster_resource_state
    from ray.core.generated.autoscaler_pb2 import NodeStatus

    gcs = ray._private.worker.global_worker.gcs_client
    out = []
    for n in get_cluster_resource_state(gcs).node_states:
        if n.status in (NodeStatus.RUNNING, NodeStatus.IDLE):
            out.append({"node_id": n.node_id.hex(), "type": n.ray_node_type_name,
                        "idle": n.status == NodeStatus.IDLE, "idle_s": round(n.idle_duration_ms / 1000, 1),
                        "activity": list(n.node_activity)})
    return out
