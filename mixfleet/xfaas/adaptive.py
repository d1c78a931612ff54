"""Adaptive re-placement from telemetry: running medians per (function, cloud) and per hop.

After each run the placer takes the run's per-node exec times and per-hop
latencies (the same figures the executor pushes to the TelemetryHub) into
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
        self.history: list[dict] = []

    def observe(self, result) -> bool:
        """Take one finished run into the model; returns whether the plan changed."""
        for row in result.nodes:
            if not row.get("skipped") and row.get("attempts", 1) == 1 and "async_s" not in row:
                self.model.exec_obs[(row["node"], row["cloud"])].append(float(row["exec_s"]))
        for src, dst, kb, lat in getattr(result, "hops", []):
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
