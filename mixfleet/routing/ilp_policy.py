"""The ``ilp`` routing policy: an ILP plan (slow loop) followed per request (fast path).

Two time scales, one object, run unchanged by the simulator and the live
router (one code path):

- **Fast path** (:meth:`IlpPolicy.choose`, every request, microseconds, no
  solver call): classify the request (prompt bucket x cap bucket: the
  router never sees the true output length) and run the strategy's method,
  all of them on the shared :func:`~mixfleet.routing.policy.least_work`
  rule (least estimated finish time from router-side accounting at the
  shared predictor's output estimate, divided by the telemetry speed
  factor). ``penalty`` (default): a replica whose pool has plan weight
  ``w`` for the class (``w_max`` the class's largest) counts
  ``1 + beta (1 - w / w_max)`` times slower, and its decode time is
  stretched by ``1 + k rho / (1 - rho)``, ``rho`` the recent share of its
  time spent prefilling prompts the router sent it (:class:`PrefillLoad`,
  the interference chunked prefill causes); both shrink with the plan's
  predicted peak utilisation ``U`` (``x min(1, (1 - U) / headroom)``):
  placement by class pays while the fleet has headroom; near saturation
  every replica must absorb what arrives. When prompts dominate the
  predicted work, a *decode reserve* keeps long-prompt classes off one
  fastest replica (:meth:`IlpPolicy._reserve`). ``masked`` (only the plan's
  pools) and ``wrr`` (the plan's weights exactly) are ablations. A class
  with no healthy replica in the plan is routed by least work left over
  the whole fleet.
- **Slow loop** (:meth:`IlpPolicy.observe`, every telemetry sample): re-solve
  the plan persistently when a replica's speed factor moved by more than
  ``speed_tolerance`` (thermal throttling, a lost replica) or, every
  ``resolve_interval_s``, when the observed class rates drifted by more than
  ``rate_tolerance``, or when the shared predictor's output estimate of a
  class moved by more than 25% (the plan is re-costed: it plans on predicted
  outputs, the cap itself with oracle lengths). ``feedback=False`` freezes
  the first plan and ignores telemetry (the "frozen plan" of the feedback
  experiment).

A solver failure never crashes routing: the policy logs why and routes by
``least_work_left`` until a later solve succeeds. A missing solver is a
:class:`~mixfleet.errors.SolverError` with an install hint at construction.

Live use: call :meth:`observe` off the request path (a solve takes
milliseconds); :meth:`choose` only reads the current plan, which a solve
replaces in one reference swap.
"""

from __future__ import annotations

import logging
import math

from mixfleet.errors import SolverError
from mixfleet.routing.lengths import CapRule, OutputPredictor
from mixfleet.routing.plan import ClassGrid, ClassMix, Plan, build_problem, full_mix
from mixfleet.routing.policy import (
    Policy,
    PolicyContext,
    Request,
    RouterState,
    Telemetry,
    least_work,
    replica_infos,
)

log = logging.getLogger("mixfleet.routing.ilp")

# "penalty" (default): least speed-weighted work left over the fleet, replicas the plan
#     does not prefer for the class looking (1 + beta (1 - w / w_max)) times slower;
# "masked": least work left among the groups the plan gives the class >= weight_floor;
# "wrr": the plan's weights exactly (smooth weighted round robin over groups), then
#     least work left inside the chosen group.
FAST_PATHS = ("penalty", "masked", "wrr")


class PrefillLoad:
    """Per replica, the recent fraction of time its prefills stall decoding (router-side, no engine signal).

    Every routed prompt adds its prefill seconds at profiled speed; the sum
    decays with time constant ``tau_s``; ``rho[i] = sum / tau_s`` estimates the
    share of replica ``i``'s time spent on prompt tokens. With chunked prefill
    every such iteration also carries the running batch's decode step, so a
    request decoding there sees its per-token time stretched by about
    ``1 / (1 - rho)``: the interference term of the fast path.
    """

    def __init__(self, n: int, tau_s: float = 30.0) -> None:
        self.tau_s = tau_s
        self.load = [0.0] * n
        self.last = None

    def factors(self, now: float, strength: float) -> list[float]:
        if self.last is not None and now > self.last:
            decay = math.exp(-(now - self.last) / self.tau_s)
            self.load = [x * decay for x in self.load]
        self.last = now
        out = []
        for x in self.load:
            rho = min(0.9, x / self.tau_s)
            out.append(1.0 + strength * rho / (1.0 - rho))
        return out

    def add(self, i: int, seconds: float) -> None:
        self.load[i] += seconds


class IlpPolicy(Policy):
    """See the module doc."""

    name = "ilp"

    def __init__(self, fleet, mix: ClassMix | None = None, *, feedback: bool = True,
                 resolve_interval_s: float = 30.0, speed_tolerance: float = 0.15, rate_tolerance: float = 0.25,
                 weight_floor: float = 0.05, total_rate: float | None = None, fast_path: str = "penalty",
                 util_weight: float = 10.0, queue_weight: float = 1.0, latency_power: float = 2.0,
                 group_by: str = "gpu", beta: float = 0.5, stall_limit_s: float | None = None,
                 adaptive: bool = True, interference: float = 1.0, interference_tau_s: float = 30.0,
                 headroom: float = 0.5, oracle_lengths: bool = False,
                 reserve_prefill_share: float | None = 0.9, reserve_fill: float = 0.8) -> None:
        if fast_path not in FAST_PATHS:
            from mixfleet.errors import unknown_name

            raise unknown_name("ilp fast path", fast_path, FAST_PATHS)
        from mixfleet.routing.ilp import PlanSolver

        self.grid = mix.grid if mix else ClassGrid()
        self.feedback = feedback
        self.resolve_interval_s = resolve_interval_s
        self.speed_tolerance = speed_tolerance
        self.rate_tolerance = rate_tolerance
        self.weight_floor = weight_floor
        rate = total_rate if total_rate is not None else (mix.total_rate() if mix else 1.0)
        self.mix = full_mix(self.grid, mix, rate)
        self.fast_path = fast_path
        self._choose = {"penalty": self._choose_penalty, "masked": self._choose_masked,
                        "wrr": self._choose_wrr}[fast_path]
        self.beta = beta
        self.adaptive = adaptive
        self.headroom = headroom
        self.beta_effective = beta
        self.interference = interference
        self.interference_effective = interference
        self._prefill = PrefillLoad(len(fleet.replicas), interference_tau_s)
        infos = replica_infos(fleet)
        self._inv_prefill = [1.0 / r.prefill_tok_s for r in infos]
        self._inv_thr = [1.0 / r.throughput_tok_s for r in infos]
        self._step = [r.decode_step_s for r in infos]
        self._speeds = [1.0] * len(infos)
        self.reserve_prefill_share = reserve_prefill_share
        self.reserve_fill = reserve_fill
        self.reserved: int | None = None
        self.reserve_below: int | None = None
        # honest information: the mix's "outputs" are the client caps; plan on the shared predictor's
        # estimate (its prior until completions teach it; the cap itself in oracle mode)
        self._caps = list(self.mix.output)
        self.oracle_lengths = oracle_lengths
        if not oracle_lengths:
            prior = OutputPredictor().prior
            self.mix = ClassMix(self.grid, self.mix.classes, self.mix.rate, self.mix.prompt,
                                tuple(min(c, prior) for c in self._caps))
        self._fleet, self._group_by, self._stall = fleet, group_by, stall_limit_s
        problem = build_problem(fleet, self.mix, group_by, stall_limit_s)
        problem.util_weight, problem.queue_weight, problem.latency_power = util_weight, queue_weight, latency_power
        self._solver = PlanSolver(problem)
        self._counts = [0] * self.grid.size
        self._window_start: float | None = None
        self._last_solve = 0.0
        self._planned_speed = [1.0] * len(fleet.replicas)
        self._planned_up = [True] * len(fleet.replicas)
        self._planned_outputs: list[float] | None = None
        self.solves = 0
        self.fallbacks = 0
        self.last_error: str | None = None
        self.plan: Plan | None = None
        self._rows: list[tuple[list[int], list[float], list[float]]] | None = None
        self._members: tuple = ()
        self._install(self._solve(lambda: self._solver.solve()))

    # -- slow loop --------------------------------------------------------------
    def _solve(self, fn) -> Plan | None:
        try:
            plan = fn()
        except SolverError as exc:
            self.fallbacks += 1
            self.last_error = exc.one_line()
            log.warning("ilp: solve failed, routing by least_work_left until the next solve: %s", self.last_error)
            return None
        self.solves += 1
        return plan

    def _install(self, plan: Plan | None) -> None:
        if plan is None:
            self._rows = None
            return
        rows: list = [None] * self.grid.size
        for row_c, weights in zip(plan.classes, plan.weights, strict=True):
            groups = [g for g, w in enumerate(weights) if w >= self.weight_floor]
            total = sum(weights[g] for g in groups) or 1.0
            rows[row_c] = (groups, [weights[g] / total for g in groups], [0.0] * len(groups))
        n_rep = sum(len(m) for m in plan.members)
        # steer (plan penalties, interference) while the plan predicts headroom; near saturation
        # every replica must absorb what arrives, so the accounting (least work left) takes over
        scale = min(1.0, max(0.0, (1.0 - plan.max_utilisation) / self.headroom)) if self.adaptive else 1.0
        beta = self.beta * scale
        self.beta_effective = beta
        self.interference_effective = self.interference * scale
        pen = [[1.0 + beta] * n_rep for _ in range(self.grid.size)]
        for row_c, weights in zip(plan.classes, plan.weights, strict=True):
            wmax = max(weights) or 1.0
            for g, w in enumerate(weights):
                for i in plan.members[g]:
                    pen[row_c][i] = 1.0 + beta * (1.0 - w / wmax)
        self._penalty = pen
        self._reserve()
        self.plan = plan
        self._members = plan.members
        self._rows = rows  # one reference swap: choose() never sees a half-built plan

    def _learned_outputs(self, state: RouterState) -> list[float] | None:
        """Per class of the plan, the shared predictor's output estimate (None until it has history)."""
        pred = state.predictor
        if pred.oracle or pred.seen < 200:
            return None
        mix = self._solver.problem.mix
        return [pred.predict(max(1, round(p)), max(1, round(c))) for p, c in zip(mix.prompt, self._caps, strict=True)]

    def observe(self, telemetry: Telemetry, state: RouterState) -> None:
        if not self.feedback:
            return
        now = telemetry.time_s
        if self._window_start is None:
            self._window_start = now
        speed, up = list(state.speed), list(state.healthy)
        moved = any(abs(s - p) > self.speed_tolerance * max(p, 1e-9) for s, p in zip(speed, self._planned_speed,
                                                                                       strict=True))
        changed_up = up != self._planned_up
        rates = outputs = None
        if now - self._last_solve >= self.resolve_interval_s and now > self._window_start:
            span = now - self._window_start
            observed = [n / span for n in self._counts]
            cur = self.mix.rate
            diff = sum(abs(a - b) for a, b in zip(observed, cur, strict=True)) / max(sum(cur), 1e-9)
            if diff > self.rate_tolerance and sum(self._counts) >= 50:
                floor = 1e-4 * max(sum(observed), 1e-3)
                rates = [max(x, floor) for x in observed]
            self._counts = [0] * self.grid.size
            self._window_start = now
            learned = self._learned_outputs(state)
            old = self._planned_outputs or self._solver.problem.mix.output
            if learned is not None and any(abs(a - b) > 0.25 * max(b, 1.0) for a, b in zip(learned, old, strict=True)):
                outputs = learned
        if not (moved or changed_up or rates or outputs):
            return
        self._last_solve = now
        costs = None
        if outputs is not None:
            cur = self._solver.problem.mix
            new_mix = ClassMix(cur.grid, cur.classes, cur.rate, cur.prompt, tuple(outputs))
            try:
                costs = build_problem(self._fleet, new_mix, self._group_by, self._stall)
            except SolverError as exc:  # e.g. the new estimates make the SLO infeasible: keep the old costs
                self.last_error = exc.one_line()
        plan = self._solve(lambda: self._solver.resolve(rates=rates, speed=speed, up=up, costs=costs))
        if rates is not None or outputs is not None:
            self.mix = self._solver.problem.mix
        if outputs is not None:
            self._planned_outputs = outputs
        self._planned_speed, self._planned_up = speed, up
        self._speeds = [s if u else 0.0 for s, u in zip(speed, up, strict=True)]
        self._install(plan)

    # -- fast path: one method per strategy, all on the shared least_work rule ----------
    def choose(self, request: Request, state: RouterState) -> int:
        c = self.grid.classify(request.prompt_tokens, request.max_tokens)
        self._counts[c] += 1
        rows = self._rows
        row = rows[c] if rows is not None else None
        speed_aware = self.feedback
        if row is None:  # no plan (a failed solve): least work left over the fleet
            best = least_work(state, request)
        else:
            best = self._choose(c, row, request, state, speed_aware)
            if best < 0:  # nothing healthy in the plan's support: least work left over the fleet
                best = least_work(state, request)
        if best < 0:
            best = state.healthy_indices()[0]
        self._prefill.add(best, request.prompt_tokens * self._inv_prefill[best])
        return best

    def _choose_penalty(self, c: int, row, request: Request, state: RouterState, speed_aware: bool) -> int:
        """Least work left over the fleet; replicas the plan does not prefer for the class look slower,
        a replica busy prefilling looks slower to decode on (the interference term), and a long-prompt
        class never lands on the decode-reserved replica."""
        factors = self._prefill.factors(state.now, self.interference_effective) if self.interference_effective else None
        among = self._not_reserved if self._long[c] else None
        return least_work(state, request, penalty=self._penalty[c], speed_aware=speed_aware, decode_factor=factors,
                          among=among)

    def _reserve(self) -> None:
        """Decide the decode reserve: one replica of the fastest pool kept free of long prompts.

        With chunked prefill a replica busy with prompt chunks decodes at the chunk iterations' pace,
        so when prompts dominate the work (predicted prefill share of the mix on the fastest GPU >=
        ``reserve_prefill_share``), one fastest replica takes only prompts below a threshold and keeps
        fast decode steps for the long outputs no router can foresee. The threshold is the smallest
        prompt-bucket edge whose shorter classes carry at least 1.2x that replica's share of the fleet's
        capacity (so the reserve does not idle capacity); no such edge, no reserve.
        """
        n_o = len(self.grid.output_edges) + 1
        self._long = [False] * self.grid.size
        self._not_reserved = None
        self.reserved = None
        if self.reserve_prefill_share is None or len(self._speeds) < 2:
            return
        mix = self.mix
        fast = min(range(len(self._speeds)), key=lambda i: self._step[i] / max(self._speeds[i], 1e-9))
        inv_p, inv_t = self._inv_prefill[fast], self._inv_thr[fast]
        work = [r * (p * inv_p + o * inv_t) for r, p, o in zip(mix.rate, mix.prompt, mix.output, strict=True)]
        total = sum(work) or 1.0
        prefill = sum(r * p * inv_p for r, p in zip(mix.rate, mix.prompt, strict=True)) / total
        if prefill < self.reserve_prefill_share:
            return
        mean_p = sum(r * p for r, p in zip(mix.rate, mix.prompt, strict=True)) / (sum(mix.rate) or 1.0)
        mean_o = sum(r * o for r, o in zip(mix.rate, mix.output, strict=True)) / (sum(mix.rate) or 1.0)
        cap = [s / (mean_p * ip + mean_o * it) for s, ip, it in zip(self._speeds, self._inv_prefill, self._inv_thr,
                                                                  strict=True)]
        share = cap[fast] / (sum(cap) or 1.0)
        for b in range(1, len(self.grid.prompt_edges) + 1):
            short = sum(w for c, w in zip(mix.classes, work, strict=True) if c // n_o < b) / total
            if short >= self.reserve_fill * share:
                self.reserved = fast
                self.reserve_below = self.grid.prompt_edges[b - 1]
                self._long = [c // n_o >= b for c in range(self.grid.size)]
                self._not_reserved = [i for i in range(len(self._speeds)) if i != fast]
                return

    def _choose_masked(self, c: int, row, request: Request, state: RouterState, speed_aware: bool) -> int:
        """Least work left among the groups the plan gives the class at least ``weight_floor``."""
        groups = row[0]
        return least_work(state, request, speed_aware=speed_aware,
                          among=[i for g in groups for i in self._members[g]])

    def _choose_wrr(self, c: int, row, request: Request, state: RouterState, speed_aware: bool) -> int:
        """The plan's weights exactly (smooth weighted round robin over groups), then least work inside."""
        groups, weights, credit = row
        healthy = state.healthy
        pick, pick_v = -1, -float("inf")
        for j in range(len(groups)):
            credit[j] += weights[j]
            if credit[j] > pick_v and any(healthy[i] for i in self._members[groups[j]]):
                pick, pick_v = j, credit[j]
        if pick < 0:
            return -1
        credit[pick] -= 1.0
        return least_work(state, request, speed_aware=speed_aware, among=self._members[groups[pick]])

    def describe(self) -> dict:
        return {"name": self.name, "feedback": self.feedback, "solves": self.solves, "fallbacks": self.fallbacks,
                "last_solve_time_s": self.plan.solve_time_s if self.plan else None,
                "max_utilisation": self.plan.max_utilisation if self.plan else None,
                "beta_effective": self.beta_effective, "interference_effective": self.interference_effective,
                "decode_reserve": None if self.reserved is None else {"replica": self.reserved,
                                                                      "prompts_below": self.reserve_below}}


def mix_from_workload(workload, grid: ClassGrid | None = None, cap_rule: CapRule | str = "oracle") -> ClassMix:
    """The class mix of a prepared workload (one streaming pass over its trace).

    Classes are (prompt bucket x cap bucket) and a class's ``output`` is its
    mean cap: what a router knows from traffic history without seeing answers
    (with ``cap_rule="oracle"`` the cap is the true length: the old mode).
    """
    rule = cap_rule if isinstance(cap_rule, CapRule) else CapRule.for_trace(cap_rule, workload.trace.name)
    duration = workload.stats.duration_s * workload.time_scale
    return ClassMix.from_rows(((r.prompt, rule.apply(r.output)[0]) for r in workload.trace), grid, duration)


def make_ilp_policy(ctx: PolicyContext) -> IlpPolicy:
    opts = dict(ctx.options)
    workload = opts.pop("workload", None)
    mix = opts.pop("mix", None)
    cap_rule = opts.pop("cap_rule", "app")
    if mix is None and workload is not None:
        mix = mix_from_workload(workload, cap_rule=cap_rule)
    oracle = cap_rule.oracle if isinstance(cap_rule, CapRule) else cap_rule == "oracle"
    return IlpPolicy(ctx.fleet, mix, oracle_lengths=oracle, **opts)
