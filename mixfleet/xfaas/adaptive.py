"""Adaptive re-placement from telemetry: running medians per (function, cloud) and per hop.

After each run the placer reads the run's per-node exec times and per-hop
latencies back from the TelemetryHub (where the executor pushed them) into
windows of the last ``window`` observations. Its :class:`LearnedProfile`
uses the median exec time where one exists, and scales the prior hop
model by the median observed/predicted ratio of that cloud pair (so a slow
link also slows its unobserved payload sizes). It re-solves the ILP and
switches plans only when the predicted gain passes ``threshold`` (relative),
so noise does not flap the placement. New runs take :attr:`plan`; a run in
flight keeps the plan object it started with (plans are never mutated).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict, deque

from mixfleet.xfaas.model import Plan, Profile, UnitGraph, assess, predict


class LearnedProfile(Profile):
    """A :class:`Profile` corrected by observed running medians."""

    def __init__(self, workflow, clouds, prior: Profile, window: int):
        super().__init__(workflow, clouds, default_exec_s=prior.default_exec_s)
        self.prior = prior
        self.exec_obs: dict[tuple[str, str], deque] = defaultdict(lambda: deque(maxlen=window))
        self.hop_ratio: dict[tuple[str, str], deque] = defaultdict(lambda: deque(maxlen=window))

    def base_exec_s(self, node: str, cloud: str) -> float:
        obs = self.exec_obs.get((node, cloud))
        return statistics.median(obs) if obs else self.prior.exec_s(node, cloud)

    def hop_s(self, src: str, dst: str, kb: float) -> float:
        base = self.prior.hop_s(src, dst, kb)
        obs = self.hop_ratio.get((src, dst))
        return base * statistics.median(obs) if obs else base


class AdaptivePlacer:
    """Keeps the current plan of one workflow and re-plans from observations."""

    def __init__(self, workflow, prior: Profile, *, window: int = 5, threshold: float = 0.05, lam: float = 0.0,
                 fuse: bool = False):
        from mixfleet.xfaas.planner import make_plan

        self.workflow, self.prior, self.lam, self.fuse = workflow, prior, lam, fuse
        self.threshold = threshold
        self.model = LearnedProfile(workflow, prior.clouds, prior, window)
        self.plan: Plan = make_plan(workflow, "ilp_fusion" if fuse else "ilp", profile=self.model, lam=lam)
        self.plan.strategy = "adaptive"
        self.replans = 0
        self.hub_reads = 0  # observations that came back from the TelemetryHub
        self.history: list[dict] = []

    def observe(self, result, *, from_hub: bool = True) -> bool:
        """Take one finished run into the model; returns whether the plan changed.

        Figures are read back from the TelemetryHub (entries stamped with this run's id);
        any the hub does not hold (no hub, or a push not yet applied) come from the run's
        own records, which are the same numbers the executor pushed.
        """
        from mixfleet.xfaas._telemetry import read_run

        hub = read_run(result) if from_hub else None
        hub_exec, hub_hops = hub if hub else ({}, {})
        for row in result.nodes:
            if not row.get("skipped") and row.get("attempts", 1) == 1:
                key = (row["node"], row["cloud"])
                self.hub_reads += key in hub_exec
                self.model.exec_obs[key].append(float(hub_exec.get(key, row["exec_s"])))
        seen = set()
        for src, dst, kb, lat in result.hops:
            if (src, dst) in hub_hops and (src, dst) not in seen:
                lat, kb = hub_hops[(src, dst)]
                seen.add((src, dst))
                self.hub_reads += 1
            prior = self.prior.hop_s(src, dst, kb)
            if prior > 0:
                self.model.hop_ratio[(src, dst)].append(lat / prior)
        return self._maybe_replan()

    def _maybe_replan(self) -> bool:
        from mixfleet.xfaas.planner import make_plan

        units = UnitGraph(self.workflow, self.plan.groups, self.plan.fusion)
        cur_lat, cur_cost = predict(units, [self.plan.placement[g[0]] for g in units.members], self.model)
        cand = make_plan(self.workflow, "ilp_fusion" if self.fuse else "ilp", profile=self.model, lam=self.lam)
        cur = cur_lat + self.lam * cur_cost
        new = cand.predicted_latency_s + self.lam * cand.predicted_cost_usd
        changed = cur > 0 and (cur - new) / cur > self.threshold
        if changed:
            cand.strategy = "adaptive"
            self.plan = cand
            self.replans += 1
        self.history.append({"predicted_current_s": cur_lat, "predicted_best_s": cand.predicted_latency_s,
                             "replanned": changed})
        return changed


class DriftController:
    """Adaptive re-planning under load from telemetry, with hysteresis and a minimum dwell.

    It keeps a belief of each cloud's slowdown (1.0 = as benchmarked), estimated from the ratios
    observed exec time / benchmarked exec time of the functions that ran there (probes of one cheap
    function keep the clouds the plan does not use observed). A row arrives when its execution
    ends but tells the cloud's speed when it began (``started``, the function's own start
    timestamp), so the estimate is the median over the freshest rows: of those that arrived in
    the last ``window_s``, the ones that started within ``fresh_s`` of the newest start (at least
    ``min_samples`` of them); and once a belief moved, rows that started before the newest row it
    moved on no longer count for that cloud. Taken by arrival alone, the long executions that began
    just before a cloud recovered would hold the slow-down for a whole execution time after it,
    outvoting the probes that already see the recovery, and could pull the belief back after it.
    A belief moves only when the estimate leaves the band [belief / band, belief * band] on
    ``confirm`` consecutive control ticks, and snaps back to 1.0 inside [1 / band, band] (no drift creep).
    When a belief moved, it re-places the fusion groups of the current and of the initial plan
    under it (a local search from every single-cloud start and from their own placement: a few
    milliseconds, where a full fusion re-plan takes seconds that the degraded runs would wait
    for); the best candidate is taken only if it is predicted ``gain`` (relative) faster than
    the current plan under the same belief, and no sooner than ``dwell_s`` after the last
    change. Reads telemetry rows, never the world.
    """

    def __init__(self, workflow, prior: Profile, strategy: str = "ilp_fusion", *, lam: float = 0.0,
                 window_s: float = 8.0, fresh_s: float = 4.0, band: float = 1.6, confirm: int = 2,
                 gain: float = 0.05, dwell_s: float = 20.0, min_samples: int = 3, probe_every_s: float = 2.0,
                 plan: Plan | None = None):
        from mixfleet.xfaas.planner import make_plan

        self.workflow, self.prior, self.strategy, self.lam = workflow, prior, strategy, lam
        self.window_s, self.fresh_s, self.band, self.confirm, self.gain = window_s, fresh_s, band, confirm, gain
        self.dwell_s, self.min_samples, self.probe_every_s = dwell_s, min_samples, probe_every_s
        self.model = prior.derive()  # the same benchmark and planned load; beliefs start at 1.0
        self.plan: Plan = plan or make_plan(workflow, strategy, profile=self.model, lam=lam)
        self.initial = self.plan
        self.obs: deque = deque()  # (arrived, started, cloud, ratio), in arrival order
        self.pending: dict[str, int] = defaultdict(int)
        self.since: dict[str, float] = defaultdict(lambda: -math.inf)  # start time a belief last moved on
        self.dirty = False
        self.last_change = -1e18
        self.last_probe: dict[str, float] = {}
        self.changes: list[dict] = []
        self.probe_node = {c: min(workflow.nodes, key=lambda n, c=c: prior.base_exec_s(n, c))
                           for c in prior.clouds.general()}

    def _replan(self) -> Plan:
        from mixfleet.xfaas.fusion import _local_search
        from mixfleet.xfaas.placement import plan_for, unit_allowed

        best = None
        for base in (self.plan, self.initial):
            units = UnitGraph(self.workflow, base.groups, base.fusion)
            allowed = unit_allowed(self.workflow, units, self.model.clouds)
            starts = [[base.placement[g[0]] for g in units.members]]
            starts += [[c if c in a else a[0] for a in allowed] for c in self.model.clouds.general()]
            for start in starts:
                lat, cost, where = _local_search(units, list(start), allowed, self.model, self.lam)
                if best is None or lat + self.lam * cost < best[0]:
                    best = (lat + self.lam * cost, units, list(where))
        return plan_for("adaptive", best[1], best[2], self.model, status="local search")

    def update(self, t: float, rows: list[dict]) -> Plan | None:
        for r in rows:
            if "exec_s" in r:
                base = self.prior.base_exec_s(r["node"], r["cloud"])
                if base > 0:
                    self.obs.append((r["t"], r.get("started", r["t"]), r["cloud"], r["exec_s"] / base))
        while self.obs and self.obs[0][0] < t - self.window_s:
            self.obs.popleft()
        by_cloud: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for _, started, c, ratio in self.obs:
            if started >= self.since[c]:
                by_cloud[c].append((started, ratio))
        for c, seen in by_cloud.items():
            if len(seen) < self.min_samples:
                continue
            seen.sort(reverse=True)  # newest start first
            newest = seen[0][0]
            fresh = [x for k, (st, x) in enumerate(seen) if k < self.min_samples or st >= newest - self.fresh_s]
            est, belief = statistics.median(fresh), self.model.slowdown.get(c, 1.0)
            if belief / self.band <= est <= belief * self.band:
                self.pending[c] = 0
                continue
            self.pending[c] += 1
            if self.pending[c] >= self.confirm:
                self.model.slowdown[c] = 1.0 if 1 / self.band <= est <= self.band else est
                self.pending[c], self.dirty, self.since[c] = 0, True, newest
        if not self.dirty or t - self.last_change < self.dwell_s:
            return None
        self.dirty = False
        cand = self._replan()
        units = UnitGraph(self.workflow, self.plan.groups, self.plan.fusion)
        cur, *_ = assess(units, [self.plan.placement[g[0]] for g in units.members], self.model)
        if cur <= 0 or (cur - cand.effective_s) / cur <= self.gain:
            return None
        self.plan, self.last_change = cand, t
        self.changes.append({"t": t, "belief": dict(self.model.slowdown), "predicted_before_s": cur,
                             "predicted_after_s": cand.effective_s})
        return cand

    def probes(self, t: float) -> list[tuple[str, str]]:
        """(cloud, node) probes to send now: clouds the plan does not use, every ``probe_every_s``."""
        used = set(self.plan.placement.values())
        out = []
        for c, node in self.probe_node.items():
            if c not in used and t - self.last_probe.get(c, -1e18) >= self.probe_every_s:
                self.last_probe[c] = t
                out.append((c, node))
        return out
