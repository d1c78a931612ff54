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

import statistics
from collections import defaultdict, deque

from mixfleet.xfaas.model import Plan, Profile, UnitGraph, predict


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

        units = UnitGraph(self.workflow, self.plan.groups)
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
