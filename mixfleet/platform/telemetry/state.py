"""The telemetry hub's pure core: latest readings, bounded history, pushed stats, staleness.

No Ray here; the :class:`~mixfleet.platform.telemetry.hub.TelemetryHub`
actor wraps one :class:`HubState` behind a lock. The clock is passed in,
so staleness is testable without sleeping.

Invariants:
- ``version`` grows by one on every change (agent report, pushed stat,
  load or condition), so a poller waits for ``version > since``.
- History is bounded: at most ``history`` entries per GPU and per node.
- A node's GPUs are ``stale`` when its agent is known to be down
  (:meth:`HubState.mark_down`, the moment Ray reports the agent process
  gone) or has not reported for ``max(stale_after_s, 3 * period_s)``; they
  stay listed (never silently kept as fresh, never silently dropped). The
  first report after such a gap clears it and counts in the node's
  ``stale_gaps`` and ``last_gap_s``.
- Reported load expires after its TTL (then the emulated GPU idles);
  injected conditions last until cleared.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from mixfleet.errors import InputError
from mixfleet.platform.telemetry.readings import validate_stat

NO_AGENT_REASON = ("no telemetry agent has reported yet; start agents with "
                   "mixfleet.platform.telemetry.start_agents() or run `mixfleet cluster status`")


def check_fraction(name: str, value: Any, *, low: float = 0.0, low_open: bool = False) -> float:
    """``value`` as a float in [low, 1] (or (low, 1]); InputError naming it otherwise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > 1 or value < low or (low_open and value == low):
        interval = f"({low}, 1]" if low_open else f"[{low}, 1]"
        raise InputError(f"bad {name} {value!r}: expected a number in {interval}",
                         f"pass {name} as a fraction, e.g. 0.5")
    return float(value)


class HubState:
    """Latest snapshot + bounded history per GPU and per node + pushed stats."""

    def __init__(self, clock: Callable[[], float], *, history: int = 120, stale_after_s: float = 2.0,
                 stats_stale_after_s: float = 10.0, load_ttl_s: float = 10.0):
        self.clock = clock
        self.history_len = history
        self.stale_after_s = stale_after_s
        self.stats_stale_after_s = stats_stale_after_s
        self.load_ttl_s = load_ttl_s
        self.period_s: float | None = None  # the period agents are told to use (None: their own)
        self.version = 0
        self.gpus: dict[tuple[str, int], dict] = {}
        self.gpu_history: dict[tuple[str, int], deque] = {}
        self.nodes: dict[str, dict] = {}
        self.node_history: dict[str, deque] = {}
        self.stats: dict[str, dict[str, dict]] = {}
        self.loads: dict[tuple[str, int], dict] = {}
        self.conditions: dict[tuple[str, int], dict] = {}

    # --- writes -------------------------------------------------------------

    def configure(self, *, period_s: float | None = None, stale_after_s: float | None = None) -> None:
        """Change the agents' sampling period and the staleness threshold at run time."""
        for name, v in (("period_s", period_s), ("stale_after_s", stale_after_s)):
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0):
                raise InputError(f"bad {name} {v!r}: expected a positive number of seconds", "e.g. 0.5")
        if period_s is not None:
            self.period_s = float(period_s)
        if stale_after_s is not None:
            self.stale_after_s = float(stale_after_s)

    def report(self, node_id: str, meta: dict, readings: list[dict]) -> dict:
        """Store one agent sample; answer ``{"drive": {gpu: {...}}, "period_s": float | None}``."""
        now = self.clock()
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = {"node_id": node_id, "restarts": 0, "stale_gaps": 0,
                                          "last_gap_s": None, "first_report_ts": now}
            self.node_history[node_id] = deque(maxlen=self.history_len)
        elif node.get("last_report_ts") is not None:
            gap = now - node["last_report_ts"]
            if node.get("down") or gap > self._stale_after(node):
                node["stale_gaps"] += 1
                node["last_gap_s"] = round(gap, 3)
        node["down"] = None
        if meta.get("restarted") and meta.get("pid") != node.get("pid"):
            node["restarts"] += 1
        node.update({k: meta.get(k) for k in ("accelerator_type", "source", "period_s", "pid", "hostname")})
        node["num_gpus"] = len(readings)
        node["last_report_ts"] = now
        for key in [k for k in self.gpus if k[0] == node_id and k[1] >= len(readings)]:
            del self.gpus[key]
        for r in readings:
            key = (node_id, int(r["gpu_index"]))
            self.gpus[key] = r
            self.gpu_history.setdefault(key, deque(maxlen=self.history_len)).append(r)
        if readings:
            self.node_history[node_id].append(_node_summary(readings, now))
        self.version += 1
        return {"drive": self.drive_for(node_id), "period_s": self.period_s}

    def mark_down(self, node_id: str, why: str) -> None:
        """The agent of ``node_id`` is gone (died, stopped): its GPUs are stale until it reports again."""
        node = self.nodes.get(node_id)
        if node is not None and not node.get("down"):
            node["down"] = why
            self.version += 1

    def push_stats(self, scope: str, key: str, values: dict, ts: float | None = None) -> None:
        clean = validate_stat(scope, key, values)
        self.stats.setdefault(scope, {})[key] = {"values": clean, "ts": self.clock() if ts is None else ts}
        self.version += 1

    def report_load(self, node_id: str, gpu_index: int, util: float, mem_frac: float,
                    ttl_s: float | None = None) -> None:
        self.loads[(node_id, int(gpu_index))] = {
            "util": check_fraction("util", util), "mem_frac": check_fraction("mem_frac", mem_frac),
            "until": self.clock() + (self.load_ttl_s if ttl_s is None else ttl_s)}
        self.version += 1

    def set_condition(self, node_id: str, gpu_index: int, speed_factor: float | None,
                      throttle: str = "sw_thermal_slowdown") -> None:
        """Inject a slowdown (``speed_factor`` < 1) on one GPU; ``None`` clears it."""
        key = (node_id, int(gpu_index))
        if speed_factor is None:
            self.conditions.pop(key, None)
        else:
            self.conditions[key] = {"speed_factor": check_fraction("speed_factor", speed_factor, low_open=True),
                                    "throttle": throttle}
        self.version += 1

    # --- reads --------------------------------------------------------------

    def drive_for(self, node_id: str) -> dict[int, dict]:
        now = self.clock()
        drive: dict[int, dict] = {}
        for (nid, idx), load in list(self.loads.items()):
            if nid != node_id:
                continue
            if load["until"] < now:
                del self.loads[(nid, idx)]
            else:
                drive[idx] = {"util": load["util"], "mem_frac": load["mem_frac"]}
        for (nid, idx), cond in self.conditions.items():
            if nid == node_id:
                drive.setdefault(idx, {}).update(cond)
        return drive

    def _stale_after(self, node: dict) -> float:
        return max(self.stale_after_s, 3 * (node.get("period_s") or 0))

    def _node_stale(self, node: dict, now: float) -> bool:
        return bool(node.get("down")) or now - node["last_report_ts"] > self._stale_after(node)

    def snapshot(self) -> dict[str, Any]:
        """``{ts, version, reason, gpus, nodes, stats}``; ``reason`` says why it is empty or stale."""
        now = self.clock()
        nodes = {nid: {**n, "stale": self._node_stale(n, now),
                       "age_s": round(now - n["last_report_ts"], 3)} for nid, n in self.nodes.items()}
        gpus = [{**r, "stale": nodes[nid]["stale"]} for (nid, _), r in sorted(self.gpus.items())]
        stats = {scope: {k: {**v, "stale": now - v["ts"] > self.stats_stale_after_s} for k, v in keys.items()}
                 for scope, keys in self.stats.items()}
        reason = None
        if not nodes:
            reason = NO_AGENT_REASON
        elif all(n["stale"] for n in nodes.values()):
            reason = "every telemetry agent is stale (no report for a while); readings shown are old"
        elif not gpus:
            reason = "no node reports a GPU (CPU-only cluster)"
        return {"ts": now, "version": self.version, "reason": reason, "gpus": gpus, "nodes": nodes,
                "stats": stats}

    def history(self, node_id: str, gpu_index: int | None = None, last: int | None = None) -> list[dict]:
        """Past readings of one GPU, or per-node summaries when ``gpu_index`` is None (oldest first)."""
        rows = self.node_history.get(node_id) if gpu_index is None else self.gpu_history.get((node_id, gpu_index))
        rows = list(rows or [])
        return rows[-last:] if last else rows


def _node_summary(readings: list[dict], ts: float) -> dict:
    def total(field: str) -> float | None:
        vals = [r[field] for r in readings if r.get(field) is not None]
        return round(sum(vals), 1) if vals else None

    util = [r["util_pct"] for r in readings if r.get("util_pct") is not None]
    return {"ts": ts, "util_pct": round(sum(util) / len(util), 1) if util else None,
            "mem_used_mib": total("mem_used_mib"), "mem_total_mib": total("mem_total_mib"),
            "power_w": total("power_w"), "gpus": len(readings)}
