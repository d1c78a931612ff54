"""Request classes, the plan problem, and the plain :class:`Plan` the ILP produces.

A request class is a bucket of prompt length x output length (one model
per fleet). :class:`PlanProblem` holds everything the ILP needs as plain
numbers, computed from the fleet's (EMULATED, calibrated) profiles:

- ``rate[c]``: arrivals per second of class ``c``;
- ``service[c][r]``: replica seconds one class-``c`` request occupies on
  replica ``r`` when ``r`` is saturated (prefill at the compute roofline,
  decode at the largest batch the KV cache admits);
- ``latency[c][r]``: the class's isolated end-to-end latency on ``r``;
- ``allowed[c][r]``: the SLO-feasibility mask (isolated latency within the
  slowdown SLO of the fastest GPU and within the absolute SLO, if any);
- ``speed[r]`` (telemetry correction, 1 = as profiled) and ``up[r]``.

:class:`Plan` is what both the simulator's and the live router's ``ilp``
policy read: per-class weights over replicas, predicted utilisation and how
the solve went. It is a frozen dataclass with no solver objects inside.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from mixfleet.errors import SolverError

PROMPT_EDGES = (128, 512, 1024, 2048, 4096)
OUTPUT_EDGES = (32, 128, 256, 512)


@dataclass(frozen=True)
class ClassGrid:
    """Bucket edges: class = prompt bucket x output bucket (upper edges exclusive)."""

    prompt_edges: tuple[int, ...] = PROMPT_EDGES
    output_edges: tuple[int, ...] = OUTPUT_EDGES

    @property
    def size(self) -> int:
        return (len(self.prompt_edges) + 1) * (len(self.output_edges) + 1)

    def classify(self, prompt: int, output: int) -> int:
        return (bisect.bisect_right(self.prompt_edges, prompt) * (len(self.output_edges) + 1)
                + bisect.bisect_right(self.output_edges, output))

    def label(self, c: int) -> str:
        n_o = len(self.output_edges) + 1
        pi, oi = divmod(c, n_o)
        return f"p{_span(self.prompt_edges, pi)}xo{_span(self.output_edges, oi)}"


def _span(edges: tuple[int, ...], i: int) -> str:
    lo = 0 if i == 0 else edges[i - 1]
    return f"[{lo},{edges[i]})" if i < len(edges) else f"[{lo},inf)"


@dataclass(frozen=True)
class ClassMix:
    """Observed classes: rate (req/s) and mean prompt/output per non-empty class."""

    grid: ClassGrid
    classes: tuple[int, ...]
    rate: tuple[float, ...]
    prompt: tuple[float, ...]
    output: tuple[float, ...]

    @classmethod
    def from_rows(cls, rows, grid: ClassGrid | None = None, duration_s: float | None = None) -> ClassMix:
        """Bucket ``(prompt, output)`` pairs (one streaming pass); rates over ``duration_s``."""
        grid = grid or ClassGrid()
        n = [0] * grid.size
        sp = [0.0] * grid.size
        so = [0.0] * grid.size
        total = 0
        for prompt, output in rows:
            c = grid.classify(prompt, output)
            n[c] += 1
            sp[c] += prompt
            so[c] += output
            total += 1
        dur = duration_s if duration_s and duration_s > 0 else max(1, total)
        keep = [c for c in range(grid.size) if n[c] > 0]
        return cls(grid, tuple(keep), tuple(n[c] / dur for c in keep), tuple(sp[c] / n[c] for c in keep),
                   tuple(so[c] / n[c] for c in keep))

    def total_rate(self) -> float:
        return sum(self.rate)


def full_mix(grid: ClassGrid, hint: ClassMix | None, total_rate: float) -> ClassMix:
    """A mix over every grid class: the hint's rates and sizes where known, bucket midpoints elsewhere."""
    known = {c: k for k, c in enumerate(hint.classes)} if hint else {}
    n_o = len(grid.output_edges) + 1
    rates, prompts, outputs = [], [], []
    floor = 1e-4 * max(total_rate, 1e-3)
    for c in range(grid.size):
        if c in known:
            k = known[c]
            rates.append(max(hint.rate[k], floor))
            prompts.append(hint.prompt[k])
            outputs.append(hint.output[k])
        else:
            pi, oi = divmod(c, n_o)
            rates.append(floor if hint else total_rate / grid.size)
            prompts.append(_mid(grid.prompt_edges, pi))
            outputs.append(_mid(grid.output_edges, oi))
    return ClassMix(grid, tuple(range(grid.size)), tuple(rates), tuple(prompts), tuple(outputs))


def _mid(edges: tuple[int, ...], i: int) -> float:
    lo = 0 if i == 0 else edges[i - 1]
    return (lo + edges[i]) / 2.0 if i < len(edges) else 1.5 * lo


@dataclass
class PlanProblem:
    """Columns are *groups* of interchangeable replicas (one GPU type), or single replicas.

    ``service``/``latency``/``allowed`` are per (class, group); ``members[g]``
    lists the replica indices of group ``g``; ``speed``/``up`` are per replica.
    """

    mix: ClassMix
    group_names: list[str]
    members: list[list[int]]
    service: list[list[float]]
    latency: list[list[float]]
    allowed: list[list[bool]]
    n_replicas: int
    speed: list[float] = field(default_factory=list)
    up: list[bool] = field(default_factory=list)
    util_weight: float = 0.1     # weight of U, the maximum utilisation
    queue_weight: float = 1.0    # weight of the piecewise-linear queueing proxy
    latency_power: float = 1.0   # 2 = mean squared isolated latency (tail-sensitive)

    def __post_init__(self) -> None:
        self.speed = self.speed or [1.0] * self.n_replicas
        self.up = self.up or [True] * self.n_replicas

    def group_capacity(self, g: int) -> float:
        """Effective replicas in group ``g``: the sum of its live replicas' speed factors."""
        return sum(self.speed[r] for r in self.members[g] if self.up[r] and self.speed[r] > 0)


def class_service_s(replica, prompt: float, output: float) -> float:
    """Saturated replica-seconds per request (same method as capacity.py, per class)."""
    perf = replica.perf
    prefill = (2.0 * perf.params * prompt) / perf.flops + perf._att_prefill * prompt * prompt
    batch = max(1, min(replica.max_batch, int(replica.kv_tokens // max(1.0, prompt + output))))
    return prefill + output * perf.decode_step(batch, batch * (prompt + output / 2.0)) / batch


def build_problem(fleet, mix: ClassMix, group_by: str = "gpu", stall_limit_s: float | None = None) -> PlanProblem:
    """Costs, latencies and the SLO mask of every (class, group); raises on an infeasible SLO.

    ``group_by="gpu"`` plans per GPU pool (replicas of one type are
    interchangeable, and the fast path balances inside a pool);
    ``"replica"`` plans every replica separately.
    """
    slo = fleet.config.slo
    names: list[str] = []
    members: list[list[int]] = []
    for i, r in enumerate(fleet.replicas):
        key = r.gpu if group_by == "gpu" else r.replica_id
        if key not in names:
            names.append(key)
            members.append([])
        members[names.index(key)].append(i)
    reps = [fleet.replicas[m[0]] for m in members]
    service, latency, allowed = [], [], []
    for k, _c in enumerate(mix.classes):
        p, o = max(1, round(mix.prompt[k])), max(1, round(mix.output[k]))
        lat = [r.perf.isolated_latency(p, o)[1] for r in reps]
        best = min(lat)
        bound = slo.e2e_slowdown * best
        if slo.e2e_s is not None:
            bound = min(bound, slo.e2e_s)
        mask = [x <= bound + 1e-12 for x in lat]
        if not any(mask):
            fastest = reps[lat.index(best)]
            raise SolverError(
                f"infeasible SLO for class {mix.grid.label(mix.classes[k])}: the e2e SLO is {bound:.3f} s but "
                f"even the fastest GPU ({fastest.gpu}) takes {best:.3f} s for it alone",
                "relax slo.e2e_s in the fleet file or add faster GPUs")
        if stall_limit_s is not None:
            # a prefill stalls every sequence decoding on that replica (prefill-first engines):
            # keep long prompts off GPUs where one prefill exceeds the stall limit
            stall = [r.perf.prefill_time(p) for r in reps]
            limited = [ok and st <= stall_limit_s for ok, st in zip(mask, stall, strict=True)]
            mask = limited if any(limited) else [ok and st == min(stall) for ok, st in zip(mask, stall, strict=True)]
        if not any(mask):
            fastest = reps[lat.index(best)]
            raise SolverError(
                f"infeasible SLO for class {mix.grid.label(mix.classes[k])}: the e2e SLO is {bound:.3f} s but "
                f"even the fastest GPU ({fastest.gpu}) takes {best:.3f} s for it alone",
                "relax slo.e2e_s in the fleet file or add faster GPUs")
        service.append([class_service_s(r, p, o) for r in reps])
        latency.append(lat)
        allowed.append(mask)
    return PlanProblem(mix, names, members, service, latency, allowed, len(fleet.replicas))


@dataclass(frozen=True)
class Plan:
    """Per-class routing weights over groups (rows sum to 1) and what the solver predicted.

    ``groups[g]`` names a GPU pool (or a replica) and ``members[g]`` its replica indices.
    """

    classes: tuple[int, ...]
    class_labels: tuple[str, ...]
    groups: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]
    weights: tuple[tuple[float, ...], ...]
    utilisation: tuple[float, ...]
    max_utilisation: float
    objective: float
    status: str
    solve_time_s: float
    build_time_s: float = 0.0

    def to_dict(self) -> dict:
        return {
            "classes": [{"class": lab, "weights": {g: round(w, 4) for g, w in zip(self.groups, row, strict=True)
                                                   if w > 1e-6}}
                        for lab, row in zip(self.class_labels, self.weights, strict=True)],
            "utilisation": dict(zip(self.groups, self.utilisation, strict=True)),
            "max_utilisation": self.max_utilisation,
            "objective": self.objective,
            "status": self.status,
            "solve_time_s": self.solve_time_s,
            "build_time_s": self.build_time_s,
        }
