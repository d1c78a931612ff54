"""Demo step: telemetry agents on the emulated fleet, driven by load and a slowdown.

Starts one agent per node, reports load on one GPU of each type, injects a
thermal slowdown (half speed) on one GPU, waits until the hub shows it and
prints the GPU table. Every GPU here is emulated (``source: emulated``).
"""

from __future__ import annotations

import statistics
import time


def step(ctx) -> dict:
    import ray

    from mixfleet.platform.status import gpu_table
    from mixfleet.platform.telemetry import (
        clear_gpu_condition,
        get_hub,
        push_stats,
        report_gpu_load,
        set_gpu_condition,
        start_agents,
        wait_for_update,
    )

    snap = start_agents(period_s=0.5)
    first = {}
    for g in snap["gpus"]:
        first.setdefault(g["accelerator_type"], g)
    for i, g in enumerate(first.values()):  # a different load per GPU type
        report_gpu_load(g["node_id"], g["gpu_index"], util=0.9 - 0.3 * i, mem_frac=0.6 - 0.2 * i, ttl_s=30)
    slowed = first.get("T4") or next(iter(first.values()), None)
    if slowed is not None:
        set_gpu_condition(slowed["node_id"], slowed["gpu_index"], speed_factor=0.5)
    push_stats("demo.telemetry", "driver", {"gpus_driven": len(first)})

    def reading(s: dict, gpu: dict) -> dict:
        return next((x for x in s["gpus"] if (x["node_id"], x["gpu_index"]) == (gpu["node_id"], gpu["gpu_index"])),
                    {})

    def seen(s: dict) -> bool:  # every driven GPU shows its load, the slowed one its slowdown
        return all(reading(s, g).get("util_pct") for g in first.values()) and (
            slowed is None or reading(s, slowed).get("speed_factor") == 0.5)

    deadline = time.monotonic() + 10
    while not seen(snap) and time.monotonic() < deadline:
        snap = wait_for_update(snap["version"], timeout_s=1.0)
    hub = get_hub()
    rtt = []
    for _ in range(20):
        t0 = time.perf_counter()
        ray.get(hub.snapshot.remote())
        rtt.append(time.perf_counter() - t0)
    if not ctx.json_mode:
        from mixfleet.platform.output import compact, console

        driven = {(g["node_id"], g["gpu_index"]) for g in first.values()}
        shown = [g for g in snap["gpus"] if (g["node_id"], g["gpu_index"]) in driven]
        table = compact(gpu_table({**snap, "gpus": shown}, ""))
        table.title = None
        idle = len(snap["gpus"]) - len(shown)
        console().print(f"[bold]telemetry: load on {len(shown)} emulated GPUs, one slowed down[/bold]"
                        + (f" [dim]({idle} more idle, not shown)[/dim]" if idle else ""))
        console().print(table)
    if slowed is not None:
        clear_gpu_condition(slowed["node_id"], slowed["gpu_index"])
    by_type: dict[str, int] = {}
    for g in snap["gpus"]:
        by_type[g["accelerator_type"]] = by_type.get(g["accelerator_type"], 0) + 1
    return {
        "gpus": len(snap["gpus"]),
        "gpus_by_accelerator": by_type,
        "sources": sorted({g["source"] for g in snap["gpus"]}),
        "nodes_reporting": sum(1 for n in snap["nodes"].values() if not n["stale"]),
        "slowdown_seen": seen(snap),
        "busy_util_pct": {t: reading(snap, g).get("util_pct") for t, g in first.items()},
        "snapshot_rtt_ms_median": round(statistics.median(rtt) * 1e3, 2),
        "reason": snap["reason"],
    }
