"""Baseline routing policies and the policy registry.

Baselines, weakest to strongest:

- ``round_robin``: healthy replicas in turn.
- ``pow2``: Ray Serve's default semantics: sample two distinct replicas,
  take the one with fewer requests in flight (a T4 and an A100 with equal
  queues look identical to it).
- ``least_outstanding``: the replica with the fewest requests in flight.
- ``kv_aware``: a production-style score, as vLLM's router and llm-d's
  scorers use: the replica's queued + running tokens (prompt + predicted
  output of everything outstanding, plus this request) over its profiled
  saturated throughput x the live speed factor, times ``1 + KV-cache use``
  (the engine's reported KV fraction): the least loaded in seconds of
  work, pushed away from replicas whose KV cache is filling up.
- ``least_work_left``: speed-weighted estimated finish time: outstanding
  work to drain plus the request's own isolated service time at profiled
  speed, divided by the live telemetry speed factor (the strongest
  baseline; a production router reads the same telemetry).
- ``least_work_left_blind``: the same without the speed factor (an
  ablation: what telemetry alone is worth).
- ``ilp`` (ours): see :mod:`mixfleet.routing.ilp_policy`; loaded lazily so
  that the registry does not import Pyomo.

Output lengths come from :meth:`RouterState.expected_output`, the one
shared online predictor (:mod:`mixfleet.routing.lengths`); no policy sees a
true output length.

The registry maps lowercase names to factories ``(PolicyContext) -> Policy``;
an unknown name lists the valid ones. Policies take their RNG from the seed
they are built with; there is no global random state.
"""

from __future__ import annotations

import importlib

import numpy as np

from mixfleet.errors import unknown_name
from mixfleet.routing.policy import Policy, PolicyContext, Request, RouterState, least_work


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request: Request, state: RouterState) -> int:
        n = len(state.ids)
        for _ in range(n):
            i = self._next % n
            self._next = i + 1
            if state.healthy[i]:
                return i
        return state.healthy_indices()[0]  # raises: none healthy


class PowerOfTwo(Policy):
    name = "pow2"

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._buf: list[int] = []

    def _draw(self, n: int) -> int:
        if not self._buf:  # draw in blocks: one numpy call per 1024 picks
            self._buf = self._rng.integers(0, n, size=1024).tolist()
        return self._buf.pop()

    def choose(self, request: Request, state: RouterState) -> int:
        n = len(state.ids)
        healthy = state.healthy
        a = self._draw(n)
        b = self._draw(n)
        tries = 0
        while (b == a or not healthy[a] or not healthy[b]) and tries < 4 * n:
            if not healthy[a]:
                a = self._draw(n)
            else:
                b = self._draw(n)
            tries += 1
        if not healthy[a] or not healthy[b] or a == b:
            ok = state.healthy_indices()
            if len(ok) == 1:
                return ok[0]
            a, b = ok[0], ok[1]
        out = state.outstanding
        return a if out[a] <= out[b] else b


class LeastOutstanding(Policy):
    name = "least_outstanding"

    def __init__(self) -> None:
        self._start = 0

    def choose(self, request: Request, state: RouterState) -> int:
        n = len(state.ids)
        out, healthy = state.outstanding, state.healthy
        best, best_v = -1, 1 << 62
        self._start = (self._start + 1) % n  # rotate the tie-break
        for k in range(n):
            i = (self._start + k) % n
            if healthy[i] and out[i] < best_v:
                best, best_v = i, out[i]
        return best if best >= 0 else state.healthy_indices()[0]


class LeastWorkLeft(Policy):
    name = "least_work_left"
    speed_aware = True

    def choose(self, request: Request, state: RouterState) -> int:
        best = least_work(state, request, speed_aware=self.speed_aware)
        return best if best >= 0 else state.healthy_indices()[0]


class LeastWorkLeftBlind(LeastWorkLeft):
    name = "least_work_left_blind"
    speed_aware = False


class KvAware(Policy):
    name = "kv_aware"

    def choose(self, request: Request, state: RouterState) -> int:
        own = request.prompt_tokens + state.expected_output(request)
        tokens, inv_thr, speed, kv, healthy = state.tokens, state.inv_thr, state.speed, state.kv_frac, state.healthy
        best, best_v = -1, float("inf")
        for i in range(len(tokens)):
            if healthy[i]:
                v = (tokens[i] + own) * inv_thr[i] / speed[i] * (1.0 + kv[i])
                if v < best_v:
                    best, best_v = i, v
        return best if best >= 0 else state.healthy_indices()[0]


POLICIES: dict[str, object] = {
    "round_robin": lambda ctx: RoundRobin(),
    "pow2": lambda ctx: PowerOfTwo(np.random.default_rng(ctx.seed)),
    "least_outstanding": lambda ctx: LeastOutstanding(),
    "least_work_left": lambda ctx: LeastWorkLeft(),
    "least_work_left_blind": lambda ctx: LeastWorkLeftBlind(),
    "kv_aware": lambda ctx: KvAware(),
    "ilp": "mixfleet.routing.ilp_policy:make_ilp_policy",
}

BASELINES = ["round_robin", "pow2", "least_outstanding", "least_work_left_blind", "kv_aware", "least_work_left"]


def policy_names() -> list[str]:
    return list(POLICIES)


def check_policy_name(name: str) -> str:
    key = name.strip().lower()
    if key not in POLICIES:
        raise unknown_name("policy", name, POLICIES)
    return key


def make_policy(name: str, fleet, *, seed: int = 0, **options) -> Policy:
    """Build the policy registered under ``name`` for ``fleet``."""
    factory = POLICIES[check_policy_name(name)]
    if isinstance(factory, str):
        module, attr = factory.split(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(PolicyContext(fleet=fleet, seed=seed, options=options))
