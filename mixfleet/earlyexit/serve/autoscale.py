"""Autoscaling the early-exit deployment on its own metrics (Serve's custom-metrics hooks).

Each replica reports, through ``record_autoscaling_stats()`` (Serve calls it
and pushes the values to the controller), three numbers for the interval
since its last report:

- ``queue_len``: requests in flight at the replica;
- ``forced_exit_rate``: the fraction of answers forced out early by the
  deadline (the replica is giving up accuracy to hold the SLA);
- ``sla_miss_rate``: the fraction of answers sent after the SLA.

:class:`EarlyExitAutoscaling` is the ``autoscaling_config.policy`` class
(Serve instantiates it once with ``policy_kwargs`` and calls it every tick
with an ``AutoscalingContext``). Control law, with ``n`` running replicas
and ``Q`` the summed queue over replicas (Serve averages each metric over
``look_back_period_s``)::

    by_queue = ceil(Q / target_queue)
    if mean(forced_exit_rate) > forced_high or mean(sla_miss_rate) > miss_high:
        desired = max(by_queue, n + 1)        # buy capacity back before accuracy suffers
    elif mean(forced_exit_rate) < forced_low:
        desired = max(by_queue, n - 1)        # shrink one replica at a time
    else:
        desired = max(by_queue, n)            # in the band: hold
    desired = clamp(desired, min_replicas, max_replicas)

Without reports yet the policy holds ``n``. Serve's ``upscale_delay_s`` /
``downscale_delay_s`` still apply on top.

How fast the controller sees the metrics (Ray 2.60, ``serve/_private/replica.py``):
a replica calls ``record_autoscaling_stats()`` every
``min(look_back_period_s * RAY_SERVE_AUTOSCALING_METRIC_RECORD_INTERVAL_FACTOR (0.2),
metrics_interval_s)`` seconds and pushes the series to the controller every
``metrics_interval_s`` (default 10 s). The ``RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S``
variables that the field's deprecation note names are defined but not read
in 2.60, so ``metrics_interval_s`` is the knob (per deployment, no restart of
Serve; Serve warns that it is deprecated). Time to scale out is then about
``metrics_interval_s + upscale_delay_s`` plus a replica's start-up.
"""

from __future__ import annotations

import math

POLICY_PATH = "mixfleet.earlyexit.serve.autoscale:EarlyExitAutoscaling"
METRICS = ("queue_len", "forced_exit_rate", "sla_miss_rate")


class EarlyExitAutoscaling:
    """Serve autoscaling policy on queue length and forced-exit rate (control law: module doc)."""

    def __init__(self, target_queue: float = 16.0, forced_high: float = 0.05, forced_low: float = 0.01,
                 miss_high: float = 0.001):
        from mixfleet.errors import ConfigError

        if target_queue <= 0 or not 0 <= forced_low <= forced_high <= 1 or not 0 <= miss_high <= 1:
            raise ConfigError(f"bad autoscaling knobs: target_queue={target_queue}, forced_low={forced_low}, "
                              f"forced_high={forced_high}, miss_high={miss_high}",
                              "need target_queue > 0 and 0 <= forced_low <= forced_high <= 1, miss_high in [0, 1]")
        self.target_queue, self.forced_high, self.forced_low, self.miss_high = (
            target_queue, forced_high, forced_low, miss_high)

    def __call__(self, ctx) -> tuple[int, dict]:
        n = ctx.current_num_replicas
        metrics = ctx.aggregated_metrics or {}
        if n == 0 or not metrics.get("queue_len"):
            return ctx.target_num_replicas, {"reason": "no reports yet"}
        queue = sum(metrics["queue_len"].values())
        forced = _mean(metrics.get("forced_exit_rate"))
        misses = _mean(metrics.get("sla_miss_rate"))
        by_queue = math.ceil(queue / self.target_queue)
        if forced > self.forced_high or misses > self.miss_high:
            desired, reason = max(by_queue, n + 1), "forced exits or SLA misses above the band"
        elif forced < self.forced_low:
            desired, reason = max(by_queue, n - 1), "forced exits below the band"
        else:
            desired, reason = max(by_queue, n), "in the band"
        desired = min(max(desired, ctx.capacity_adjusted_min_replicas), ctx.capacity_adjusted_max_replicas)
        return desired, {"reason": reason, "queue": queue, "forced_exit_rate": forced, "sla_miss_rate": misses}


def _mean(per_replica: dict | None) -> float:
    return sum(per_replica.values()) / len(per_replica) if per_replica else 0.0


def autoscaling_config(min_replicas: int = 1, max_replicas: int = 4, look_back_period_s: float = 30.0,
                       upscale_delay_s: float = 5.0, downscale_delay_s: float = 60.0,
                       metrics_interval_s: float | None = None, **policy_kwargs) -> dict:
    """A deployment ``autoscaling_config`` that scales on the early-exit metrics (for ``serve deploy`` too).

    ``metrics_interval_s`` (Serve's default, 10 s, when ``None``) is how often
    replicas push their metrics; it must be shorter than ``look_back_period_s``.
    """
    from mixfleet.errors import ConfigError

    EarlyExitAutoscaling(**policy_kwargs)  # knobs are checked here, not on the controller
    cfg = {"min_replicas": min_replicas, "max_replicas": max_replicas, "look_back_period_s": look_back_period_s,
           "upscale_delay_s": upscale_delay_s, "downscale_delay_s": downscale_delay_s,
           "policy": {"policy_function": POLICY_PATH, "policy_kwargs": policy_kwargs}}
    if metrics_interval_s is not None:
        if not 0 < metrics_interval_s < look_back_period_s:
            raise ConfigError(f"metrics_interval_s={metrics_interval_s} must be > 0 and shorter than "
                              f"look_back_period_s={look_back_period_s}",
                              "push metrics several times per look-back window (e.g. a quarter of it)")
        cfg["metrics_interval_s"] = metrics_interval_s
    return cfg
