"""One-call entry points over :class:`~mixfleet.routing.simulator.Simulation`.

:func:`prepare` resolves a trace spec, measures it in one streaming pass,
computes the fleet's capacity for it (see :mod:`mixfleet.routing.capacity`)
and scales its arrivals to the requested load. :func:`simulate` runs one
policy; :mod:`mixfleet.routing.compare` runs many.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mixfleet.routing.capacity import fleet_capacity, load_time_scale
from mixfleet.routing.fleet import Fleet, load_fleet
from mixfleet.routing.lengths import CapRule
from mixfleet.routing.policies import make_policy
from mixfleet.routing.simulator import SimResult, Simulation, SpeedChange
from mixfleet.routing.traces import Trace, TraceStats, open_trace, trace_stats


@dataclass(frozen=True)
class Workload:
    """A trace scaled to a load, with the figures behind the scaling."""

    trace: Trace
    stats: TraceStats
    capacity_req_s: float
    load: float | None
    time_scale: float

    @property
    def rate_req_s(self) -> float:
        return self.stats.rate / self.time_scale


def as_fleet(fleet: Fleet | str | Path) -> Fleet:
    return fleet if isinstance(fleet, Fleet) else load_fleet(fleet)


def prepare(fleet: Fleet, trace: str | Path | Trace, load: float | None = None,
            limit: int | None = None) -> Workload:
    """Open ``trace`` (first ``limit`` rows) and scale it to ``load`` x the fleet's capacity."""
    tr = trace if isinstance(trace, Trace) else open_trace(trace)
    if limit is not None:
        tr = tr.head(limit)
    stats = trace_stats(tr)
    cap = fleet_capacity(fleet, stats)
    scale = 1.0 if load is None else load_time_scale(stats, cap, load)
    return Workload(tr.scaled(scale) if scale != 1.0 else tr, stats, cap, load, scale)


def simulate(fleet: Fleet | str | Path, trace: str | Path | Trace, policy: str = "least_work_left", *,
             load: float | None = None, seed: int = 0, limit: int | None = None,
             faults: tuple[SpeedChange, ...] = (), telemetry_interval_s: float = 2.0,
             workload: Workload | None = None, cap_rule: str = "app", chunked: bool = True,
             reserve: str = "prompt", **policy_options) -> SimResult:
    """Simulate one policy on ``fleet`` over ``trace`` (optionally scaled to ``load``).

    ``cap_rule``, ``chunked`` and ``reserve``: the information and engine model of
    :class:`~mixfleet.routing.simulator.Simulation` (``cap_rule="oracle"`` = ``--oracle-lengths``).
    """
    fl = as_fleet(fleet)
    wl = workload or prepare(fl, trace, load, limit)
    pol = make_policy(policy, fl, seed=seed, workload=wl, cap_rule=cap_rule, **policy_options)
    result = Simulation(fl, pol, wl.trace, telemetry_interval_s=telemetry_interval_s, faults=faults,
                        cap_rule=CapRule.for_trace(cap_rule, wl.trace.name), chunked=chunked, reserve=reserve).run()
    result.extra.update(capacity_req_s=wl.capacity_req_s, load=load, rate_req_s=wl.rate_req_s, seed=seed)
    return result
