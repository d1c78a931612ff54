"""GPU telemetry for the whole fleet: agents on every node, one hub, Prometheus gauges.

Parts read and push through these functions (all need a Ray session;
they call :func:`~mixfleet.platform.bootstrap.connect`, so they work from
drivers, Ray actors and Serve replicas alike)::

    from mixfleet.platform.telemetry import get_hub, push_stats, hub_snapshot
    start_agents()                      # one TelemetryAgent per alive node (idempotent)
    hub_snapshot()                      # {"ts", "version", "reason", "gpus": [...], "nodes": {...}, "stats": {...}}
    wait_for_update(since_version, 5)   # poll API for control loops
    push_stats("routing.replica", "A100-0", {"queue_len": 3, "tokens_per_s": 1200.0})

Emulated GPUs (nodes that declare ``accelerator_type:<T>`` without a device;
every reading says ``"source": "emulated"``) are driven by what parts report::

    report_gpu_load(node_id, gpu_index, util=0.8, mem_frac=0.5)   # holds for ttl_s (default 10 s)
    set_gpu_condition(node_id, gpu_index, speed_factor=0.5)        # thermal slowdown: clock, temp, reasons
    clear_gpu_condition(node_id, gpu_index)

A reading's ``speed_factor`` (1.0 unless a slowdown is active) is how a
control loop sees "this GPU now runs at half speed" -- the same field for
NVML (clock / max clock under a slowdown reason) and emulation. Readings
are marked ``stale`` when their node's agent stops reporting. See
docs/platform.md (Telemetry) for the JSON shape.
"""

from mixfleet.platform.telemetry.agent import TelemetryAgent, start_agents
from mixfleet.platform.telemetry.client import (
    clear_gpu_condition,
    gpu_history,
    hub_snapshot,
    push_stats,
    report_gpu_load,
    set_gpu_condition,
    wait_for_update,
)
from mixfleet.platform.telemetry.hub import TelemetryHub, get_hub

__all__ = [
    "TelemetryAgent",
    "TelemetryHub",
    "clear_gpu_condition",
    "get_hub",
    "gpu_history",
    "hub_snapshot",
    "push_stats",
    "report_gpu_load",
    "set_gpu_condition",
    "start_agents",
    "wait_for_update",
]
