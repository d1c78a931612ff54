"""Adapter to the platform TelemetryHub: fire-and-forget, a no-op where the hub is absent.

Keys: scope ``xfaas``; ``<workflow>/<node>@<cloud>`` per node (exec_s,
cold_start, cost_usd, out_kb), ``<workflow>/hop/<src>-><dst>`` per hop
(latency_s, kb) and ``<workflow>/run`` per run (latency_s, cost_usd, wall_s). Every value set
carries ``run`` (the run's id) so a reader can tell this run's figures from older ones.
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
    run = float(result.run_id)
    try:
        for row in result.nodes:
            if row.get("skipped"):
                continue
            push("xfaas", f"{wf}/{row['node']}@{row['cloud']}",
                 {"exec_s": float(row["exec_s"]), "cold_start": float(row["cold_start"]),
                  "cost_usd": float(row["cost_usd"]), "out_kb": float(row["out_kb"] or 0.0), "run": run})
        for src, dst, kb, lat in getattr(result, "hops", []):
            push("xfaas", f"{wf}/hop/{src}->{dst}", {"latency_s": float(lat), "kb": float(kb), "run": run})
        push("xfaas", f"{wf}/run", {"latency_s": result.latency_s, "cost_usd": result.cost_usd,
                                    "wall_s": result.wall_s, "run": run})
    except Exception as exc:  # never fail a workflow run because telemetry is down
        log.debug("telemetry push failed: %s", exc)
        return False
    return True


def read_run(result) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], tuple[float, float]]] | None:
    """This run's per-(node, cloud) exec times and per-hop (latency, KB) as the hub holds them.

    Only entries stamped with this run's id are returned (others are older runs or not yet
    applied); ``None`` when there is no hub to read.
    """
    try:
        from mixfleet.platform.telemetry import hub_snapshot

        stats = hub_snapshot(timeout_s=5.0)["stats"].get("xfaas", {})
    except Exception as exc:  # no hub: the caller uses the run's own records
        log.debug("telemetry read failed: %s", exc)
        return None
    run, prefix = float(result.run_id), f"{result.workflow}/"
    execs, hops = {}, {}
    for key, entry in stats.items():
        vals = entry.get("values", {})
        if not key.startswith(prefix) or vals.get("run") != run:
            continue
        rest = key[len(prefix):]
        if rest.startswith("hop/"):
            src, _, dst = rest[4:].partition("->")
            hops[(src, dst)] = (vals["latency_s"], vals["kb"])
        elif "@" in rest:
            node, _, cloud = rest.rpartition("@")
            execs[(node, cloud)] = vals["exec_s"]
    return execs, hops
