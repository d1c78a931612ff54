"""The EMULATED clouds' ground truth ("the world"), kept apart from the planner.

EMULATION: no cloud is reached. The world is what the load bench and ``mixfleet xfaas profile``
run workflows against; its parameters live in ``world.yaml`` with their sources. The planner
modules (model, placement, fusion, baselines, planner, adaptive) never import this module (a
test checks it): they see the world only through benchmark runs and telemetry, as XFaaS does.

What the world decides, per invocation, from its own seeded RNG:
  cold start   lognormal around a per-cloud, per-memory median, when no idle instance of that
               function is warm (instances expire after the cloud's keep-alive);
  execution    a per-(workflow, function, cloud) median x lognormal noise x rare stragglers x the
               cloud's speed at that moment (slow sinusoidal drift and step events, e.g. a
               degradation from t1 to t2); a fused unit runs its members on floor(vCPUs) slots
               (the public rule in clouds.yaml), sequentially beyond;
  hops         lognormal body around the pair's median plus payload / bandwidth, a Pareto tail
               for a few percent of messages, a claim-check round trip past the payload limit;
               the slower endpoint's speed factor applies;
  capacity     per-cloud concurrency: instances x per-instance slots, scaled out one instance per
               ``scale_out_s`` while work queues (``on_limit: queue``) or rejected with 429 and
               retried by the orchestrator (``on_limit: reject``); see :mod:`mixfleet.xfaas.load`.
Prices and payload limits are the public ones of ``clouds.yaml``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from mixfleet.platform.config import StrictModel, load_model

DEFAULT_WORLD_FILE = Path(__file__).with_name("world.yaml")


class Capacity(StrictModel):
    per_instance: int = Field(ge=1)
    initial_instances: int = Field(ge=1)
    max_instances: int = Field(ge=1)
    scale_out_s: float = Field(ge=0)
    scale_in_s: float = Field(default=0.0, ge=0)


class CloudTruth(StrictModel):
    cold_start_ms: dict[int, float]
    cold_sigma: float = Field(ge=0)
    keep_alive_s: float = Field(gt=0)
    capacity: Capacity
    on_limit: Literal["queue", "reject"]
    retry_s: float = Field(ge=0)

    def cold_median_s(self, memory_mb: float) -> float:
        keys = sorted(self.cold_start_ms)
        k = max((k for k in keys if k <= memory_mb), default=keys[0])
        return self.cold_start_ms[k] / 1000.0


class ExecNoise(StrictModel):
    sigma: float = Field(ge=0)
    straggler_p: float = Field(ge=0, le=1)
    straggler_x: float = Field(ge=1)


class Drift(StrictModel):
    amplitude: float = Field(ge=0, lt=1)
    period_s: float = Field(gt=0)


class HopTruth(StrictModel):
    median_ms: float = Field(ge=0)
    mb_s: float = Field(gt=0)
    sigma: float = Field(ge=0)
    tail_p: float = Field(ge=0, le=1)
    tail_alpha: float = Field(gt=1)
    tail_cap: float = Field(default=20.0, ge=1)  # a message this many times late is redelivered instead


class Kind(StrictModel):
    ms: dict[str, float]
    output_kb: float = Field(ge=0)


class WorkflowTruth(StrictModel):
    kinds: dict[str, Kind]
    nodes: dict[str, str]
    aliases: list[str] = Field(default_factory=list)  # other names of the same workflow (e.g. the example's)


class WorldConfig(StrictModel):
    clouds: dict[str, CloudTruth]
    exec: ExecNoise
    drift: Drift
    hops: dict[str, HopTruth]
    claim_check_ms: float = Field(ge=0)
    workflows: dict[str, WorkflowTruth] = Field(default_factory=dict)
    default_exec_ms: float = Field(gt=0)
    default_speed: dict[str, float]


@dataclass
class Event:
    """A step change of one cloud's speed: every exec, hop and cold start there takes ``factor`` x
    as long from ``start_s`` to ``end_s`` (emulated seconds since the run began)."""

    cloud: str
    start_s: float
    end_s: float
    factor: float

    def to_json(self) -> dict:
        return {"cloud": self.cloud, "start_s": self.start_s, "end_s": self.end_s, "factor": self.factor}


@dataclass
class World:
    """The seeded ground truth of the emulated clouds (see the module docstring)."""

    config: WorldConfig
    clouds: object  # mixfleet.xfaas.clouds.Clouds: public prices, payload limits, vCPU rule
    seed: int = 0
    events: list[Event] = field(default_factory=list)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self._truth = {a: wt for name, wt in self.config.workflows.items() for a in (name, *wt.aliases)}
        # each cloud drifts with its own phase (deterministic from the seed)
        phase_rng = np.random.default_rng(self.seed + 7919)
        self._phase = {c: float(phase_rng.uniform(0, 2 * math.pi)) for c in sorted(self.config.clouds)}

    # -- speed ----------------------------------------------------------------------------------
    def speed(self, cloud: str, t: float) -> float:
        """How many times longer than its median things take on ``cloud`` at emulated time ``t``."""
        d = self.config.drift
        f = 1.0 + d.amplitude * math.sin(2 * math.pi * t / d.period_s + self._phase.get(cloud, 0.0))
        for e in self.events:
            if e.cloud == cloud and e.start_s <= t < e.end_s:
                f *= e.factor
        return f

    # -- functions ------------------------------------------------------------------------------
    def median_exec_s(self, workflow: str, node: str, cloud: str) -> float:
        wt = self._truth.get(workflow)
        if wt is not None and node in wt.nodes:
            kind = wt.kinds[wt.nodes[node]]
            if cloud in kind.ms:
                return kind.ms[cloud] / 1000.0
            ref = math.exp(sum(math.log(v) for v in kind.ms.values()) / len(kind.ms))
            return ref * self.config.default_speed.get(cloud, 1.0) / 1000.0
        return self.config.default_exec_ms * self.config.default_speed.get(cloud, 1.0) / 1000.0

    def output_kb(self, workflow: str, node: str, default: float) -> float:
        wt = self._truth.get(workflow)
        if wt is not None and node in wt.nodes:
            return wt.kinds[wt.nodes[node]].output_kb
        return default

    def exec_s(self, workflow: str, node: str, cloud: str, t: float) -> float:
        n = self.config.exec
        x = self.median_exec_s(workflow, node, cloud) * float(self.rng.lognormal(0.0, n.sigma))
        if n.straggler_p and self.rng.random() < n.straggler_p:
            x *= n.straggler_x
        return x * self.speed(cloud, t)

    def known(self, workflow: str, node: str) -> bool:
        wt = self._truth.get(workflow)
        return wt is not None and node in wt.nodes

    def exec_for(self, workflow: str, node: str, cloud: str, t: float, measured_s: float) -> float:
        """A function the world has medians for draws from them; any other is charged its measured
        time on this machine x the cloud's default speed x the world's noise and speed at ``t``."""
        if self.known(workflow, node):
            return self.exec_s(workflow, node, cloud, t)
        noise = float(self.rng.lognormal(0.0, self.config.exec.sigma))
        return measured_s * self.config.default_speed.get(cloud, 1.0) * noise * self.speed(cloud, t)

    def unit_exec(self, units, i: int, cloud: str, t: float) -> tuple[float, dict[str, float]]:
        """A unit's makespan on ``cloud`` (members on the slots its memory buys) and each member's time."""
        wf = units.workflow.spec.name
        times = {m: self.exec_s(wf, m, cloud, t) for m in units.members[i]}
        return units.schedule(i, cloud, times, self.clouds), times

    def cold_start_s(self, cloud: str, memory_mb: float, t: float) -> float:
        c = self.config.clouds[cloud]
        return c.cold_median_s(memory_mb) * float(self.rng.lognormal(0.0, c.cold_sigma)) * self.speed(cloud, t)

    # -- hops -----------------------------------------------------------------------------------
    def hop_truth(self, src: str, dst: str) -> HopTruth:
        return self.config.hops.get(f"{src}->{dst}", self.config.hops["default"])

    def hop_s(self, src: str, dst: str, kb: float, t: float) -> float:
        h = self.hop_truth(src, dst)
        s = h.median_ms / 1000.0 * float(self.rng.lognormal(0.0, h.sigma)) if h.sigma else h.median_ms / 1000.0
        if h.tail_p and self.rng.random() < h.tail_p:
            s *= min(float(self.rng.pareto(h.tail_alpha)) + 1.0, h.tail_cap)
        s += kb / 1024.0 / h.mb_s
        if kb > self.clouds.limit_kb(src, dst):
            s += self.config.claim_check_ms / 1000.0
        return s * max(self.speed(src, t), self.speed(dst, t))


def load_world(path: str | Path | None = None, *, clouds=None, seed: int = 0, events: list[Event] | None = None
               ) -> World:
    """The world from ``path`` (default: the documented ``world.yaml``) over ``clouds`` (default clouds.yaml)."""
    from mixfleet.xfaas.clouds import load_clouds

    cfg = load_model(Path(path) if path else DEFAULT_WORLD_FILE, WorldConfig, what="world file")
    return World(cfg, clouds or load_clouds(), seed, list(events or []))
