"""Prometheus gauges for GPU telemetry, through ``ray.util.metrics``.

Each telemetry agent sets one gauge per reading field, named
``mixfleet_gpu_<field>`` with labels ``node`` (Ray node id), ``gpu``
(index on the node) and ``accelerator_type``. Ray's metrics agent on each
node exports them on the node's metrics export port (``ray.nodes()[i]
["MetricsExportPort"]``, or fixed with ``connect(metrics_export_port=...)``),
where Prometheus scrapes them; Ray prefixes exported names with ``ray_``,
so the series read ``ray_mixfleet_gpu_util_pct{node=...,gpu="0",...}``.
Ray pushes metrics to its exporter every few seconds, so a new series
appears after a short delay.
"""

from __future__ import annotations

from typing import Any

TAG_KEYS = ("node", "gpu", "accelerator_type")

GPU_GAUGES: dict[str, str] = {
    "util_pct": "GPU utilisation (percent of time a kernel ran)",
    "mem_used_mib": "GPU memory used (MiB)",
    "mem_total_mib": "GPU memory total (MiB)",
    "power_w": "GPU power draw (W)",
    "sm_clock_mhz": "GPU SM clock (MHz)",
    "temp_c": "GPU temperature (C)",
    "speed_factor": "fraction of full speed while a slowdown is active (1 = not slowed)",
    "throttled": "1 while a slowdown reason (power cap, thermal, hw) is active, else 0",
    "ecc_errors": "uncorrected ECC errors (volatile count)",
    "xid_errors": "XID critical errors seen since the agent started",
}


def gauge_name(field: str) -> str:
    return f"mixfleet_gpu_{field}"


class GpuGauges:
    """The ``mixfleet_gpu_*`` gauges of one process; :meth:`record` sets them from readings."""

    def __init__(self) -> None:
        from ray.util.metrics import Gauge

        self._gauges = {f: Gauge(gauge_name(f), description=d, tag_keys=TAG_KEYS) for f, d in GPU_GAUGES.items()}

    def record(self, readings: list[dict[str, Any]]) -> None:
        from mixfleet.platform.telemetry.readings import throttling

        for r in readings:
            tags = {"node": r["node_id"], "gpu": str(r["gpu_index"]),
                    "accelerator_type": r.get("accelerator_type") or "unknown"}
            values = {f: r.get(f) for f in GPU_GAUGES}
            values["throttled"] = None if r.get("throttle_reasons") is None else float(bool(throttling(r)))
            for field, value in values.items():
                if value is not None:
                    self._gauges[field].set(float(value), tags=tags)
