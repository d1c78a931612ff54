"""Adapter to the platform TelemetryHub: fire-and-forget, a no-op where the hub is absent.

Keys: scope ``xfaas``; ``<workflow>/<node>@<cloud>`` per node (exec_s,
cold_start, cost_usd, out_kb), ``<workflow>/hop/<src>-><dst>`` per hop
(latency_s, kb) and ``<workflow>/run`` per run (latency_s, cost_usd, wall_s).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def _push():
    try:
        from mixfleet.platform.telemetry import push_stats
    except Exception:  # the hub is not part of this install/version: telemetry is optional
        return None
    return push_stats


def push_run(result) -> bool:
    """Push one run's figures; returns whether a hub accepted them (best effort)."""
    push = _push()
    if push is None:
        return False
    wf = result.workflow
    try:
        for row in result.nodes:
            if row.get("skipped"):
                continue
            push("xfaas", f"{wf}/{row['node']}@{row['cloud']}",
                 {"exec_s": float(row["exec_s"]), "cold_start": float(row["cold_start"]),
                  "cost_usd": float(row["cost_usd"]), "out_kb": float(row["out_kb"] or 0.0)})
        for src, dst, kb, lat in getattr(result, "hops", []):
            push("xfaas", f"{wf}/hop/{src}->{dst}", {"latency_s": float(lat), "kb": float(kb)})
        push("xfaas", f"{wf}/run", {"latency_s": result.latency_s, "cost_usd": result.cost_usd,
                                    "wall_s": result.wall_s})
    except Exception as exc:  # never fail a workflow run because telemetry is down
        log.debug("telemetry push failed: %s", exc)
        return False
    return True
