"""The custom-metrics autoscaling policy: queue length and forced-exit rate drive the replica count."""

import pytest

from mixfleet.earlyexit.serve.autoscale import POLICY_PATH, EarlyExitAutoscaling, autoscaling_config
from mixfleet.errors import ConfigError


def _ctx(n, queue, forced, misses=None, lo=1, hi=8):
    """Serve's own AutoscalingContext, as the controller passes it, with per-replica custom metrics."""
    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve.config import AutoscalingContext

    dep = DeploymentID(name="EarlyExitServer", app_name="ee")
    reps = [ReplicaID(unique_id=f"r{i}", deployment_id=dep) for i in range(n)]
    metrics = {"queue_len": dict(zip(reps, queue, strict=True)), "forced_exit_rate": dict(zip(reps, forced, strict=True))}
    if misses is not None:
        metrics["sla_miss_rate"] = dict(zip(reps, misses, strict=True))
    return AutoscalingContext(
        deployment_id=dep, deployment_name="EarlyExitServer", app_name="ee", current_num_replicas=n,
        target_num_replicas=n, running_replicas=reps, total_num_requests=float(sum(queue)),
        total_queued_requests=0.0, aggregated_metrics=metrics, raw_metrics=None, capacity_adjusted_min_replicas=lo,
        capacity_adjusted_max_replicas=hi, policy_state={}, last_scale_up_time=None, last_scale_down_time=None,
        current_time=0.0, config=None)


def test_long_queues_scale_out_in_proportion():
    policy = EarlyExitAutoscaling(target_queue=10)
    assert policy(_ctx(2, [30, 30], [0.02, 0.02]))[0] == 6  # 60 in flight / 10 per replica


def test_forced_exits_add_a_replica_even_with_short_queues():
    policy = EarlyExitAutoscaling(target_queue=10, forced_high=0.05)
    n, state = policy(_ctx(2, [3, 3], [0.20, 0.10]))
    assert n == 3 and "forced" in state["reason"]
    assert policy(_ctx(2, [3, 3], [0.0, 0.0], misses=[0.01, 0.0]))[0] == 3  # SLA misses too


def test_calm_replicas_shrink_one_at_a_time_and_stay_in_bounds():
    policy = EarlyExitAutoscaling(target_queue=10)
    assert policy(_ctx(4, [0, 0, 1, 0], [0.0] * 4))[0] == 3
    assert policy(_ctx(1, [0], [0.0]))[0] == 1  # min_replicas
    assert policy(_ctx(3, [3, 3, 3], [0.03] * 3))[0] == 3  # inside the band: hold
    assert policy(_ctx(8, [100] * 8, [0.5] * 8))[0] == 8  # max_replicas


def test_no_reports_yet_holds_the_current_target():
    ctx = _ctx(2, [1, 1], [0.0, 0.0])
    ctx._aggregated_metrics_value = {}
    assert EarlyExitAutoscaling()(ctx)[0] == 2


def test_config_helper_checks_knobs_and_validates_as_serve_config():
    from ray.serve.config import AutoscalingConfig

    cfg = autoscaling_config(max_replicas=3, target_queue=8)
    parsed = AutoscalingConfig(**cfg)
    assert parsed.max_replicas == 3 and parsed.policy.policy_function == POLICY_PATH
    assert parsed.policy.policy_kwargs == {"target_queue": 8}
    with pytest.raises(ConfigError, match="forced_low"):
        autoscaling_config(forced_low=0.5, forced_high=0.1)
