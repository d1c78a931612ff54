"""The load-adaptive control law, deadline planner and drift guard (pure, no Ray)."""

import pytest

from mixfleet.earlyexit.serve.policy import (
    AdaptiveThresholds,
    BusyShare,
    DeadlinePlanner,
    DrainTime,
    DriftGuard,
)


def test_thresholds_move_from_conservative_to_calibrated_under_load_and_back_slowly():
    pol = AdaptiveThresholds([0.5, 0.8], [0.95, 0.99], sla_s=0.05, queue_ref=10)
    assert pol.thresholds() == pytest.approx([0.95, 0.99])  # idle: as accurate as the full model
    for _ in range(5):
        pol.observe(queue_len=40, latencies_s=[0.01])
    burst = pol.thresholds()
    assert burst == pytest.approx([0.5, 0.8], abs=0.01)  # fast attack
    pol.observe(queue_len=0, latencies_s=[])
    after_one = pol.thresholds()
    assert burst[0] < after_one[0] < 0.6  # slow release: one quiet tick relaxes only a little
    for _ in range(200):
        pol.observe(queue_len=0)
    assert pol.thresholds()[0] > 0.9


def test_latency_near_the_sla_raises_pressure_even_with_a_short_queue():
    pol = AdaptiveThresholds([0.5], [0.9], sla_s=0.1, queue_ref=100, headroom=0.5)
    pol.observe(queue_len=0, latencies_s=[0.03] * 50)  # 30% of the SLA: below headroom
    assert pol.pressure == 0.0
    for _ in range(5):
        pol.observe(queue_len=0, latencies_s=[0.095] * 50)
    assert pol.pressure > 0.8 and pol.thresholds()[0] < 0.6


def test_a_busy_replica_raises_pressure_before_queues_or_latency_do():
    pol = AdaptiveThresholds([0.5], [0.9], sla_s=0.1, queue_ref=100, util_band=(0.3, 0.7))
    pol.observe(queue_len=0, latencies_s=[0.01] * 10, utilisation=0.25)  # below the band: no pressure
    assert pol.pressure == 0.0
    for _ in range(5):
        pol.observe(queue_len=0, latencies_s=[0.01] * 10, utilisation=0.9)
    assert pol.pressure > 0.9 and pol.thresholds()[0] < 0.55
    for _ in range(5):
        pol.observe(queue_len=0, latencies_s=[0.01] * 10, utilisation=0.5)  # mid-band: pressure settles near 0.5
    assert 0.5 < pol.pressure < 0.9  # ...slowly (release), not at once


def test_a_monitoring_batch_neither_raises_nor_lowers_the_load_pressure():
    """The guard's full passes are our work, not the load's: counted as utilisation they raised the pressure and
    relaxed the thresholds the guard was measuring."""
    pol = AdaptiveThresholds([0.5], [0.9], sla_s=0.1, queue_ref=100, util_band=(0.2, 0.5))
    for _ in range(10):
        pol.observe(queue_len=0, latencies_s=[0.01], utilisation=None)  # monitoring passes, replica 100% busy
    assert pol.pressure == 0.0 and pol.thresholds() == pytest.approx([0.9])
    for _ in range(5):
        pol.observe(queue_len=0, latencies_s=[0.01], utilisation=0.5)
    held = pol.pressure
    pol.observe(queue_len=0, latencies_s=[0.01], utilisation=None)
    assert pol.pressure == held  # nothing lowers it either
    pol.observe(queue_len=100, latencies_s=[0.01], utilisation=None)
    assert pol.pressure > held  # a real queue still raises it


def test_the_queue_reference_is_what_the_replica_serves_within_the_headroom():
    """Two requests in flight at 5 ms each are no pressure against a 200 ms SLA; 20 are (h * SLA / 5 ms)."""
    pol = AdaptiveThresholds([0.5], [0.9], sla_s=0.2, queue_ref=8, headroom=0.5)
    for _ in range(50):
        pol.observe_service(0.020, 4)  # 4 samples in 20 ms: 5 ms per request
    assert pol.queue_ref == pytest.approx(20.0, rel=0.01)
    pol.observe(queue_len=2)
    assert pol.pressure < 0.1
    for _ in range(5):
        pol.observe(queue_len=20)
    assert pol.pressure > 0.95


def test_busy_share_tracks_the_replica_and_gates_monitoring():
    busy = BusyShare(tau_s=2.0)
    for _ in range(300):  # 15 s at 90% busy: 45 ms of compute every 50 ms
        busy.update(0.045, 0.05)
    assert busy.value == pytest.approx(0.9, abs=0.01)
    assert not (busy.value < 0.7)  # the replica's default cap: no monitoring pass at this load
    for _ in range(100):  # 5 s at 20% busy
        busy.update(0.01, 0.05)
    assert busy.value < 0.3


def test_deadline_planner_forces_an_exit_only_when_the_rest_would_miss():
    plan = DeadlinePlanner(n_stages=3, exit_stage=[0, 1])
    for stage, s in enumerate([0.002, 0.004, 0.004]):
        plan.record(stage, s)
    assert plan.remaining_after_exit(0) == pytest.approx(0.008)
    assert not plan.must_exit(0, now=1.0, deadline=1.010)
    assert plan.must_exit(0, now=1.0, deadline=1.005)
    assert not plan.must_exit(1, now=1.0, deadline=1.005)  # only the last stage is left: 4 ms


def test_drift_guard_backs_off_when_agreement_drops_and_recovers():
    guard = DriftGuard(floor=0.95, sample_rate=0.1)
    assert guard.should_sample(True, 0.05) and not guard.should_sample(False, 0.05)
    assert not guard.should_sample(True, 0.5)
    for _ in range(5):
        guard.record(0.6, 32, now=1.0)
    assert guard.backoff_at(1.0) == 1.0
    pol = AdaptiveThresholds([0.5], [0.9], sla_s=0.05, queue_ref=1)
    pol.observe(queue_len=10)
    pol.backoff = guard.backoff_at(1.0)
    assert pol.thresholds() == pytest.approx([1.0])  # pulled back to the full model despite the load
    assert pol.load_thresholds()[0] < 0.7  # what the guard keeps measuring: the load-driven thresholds
    for _ in range(40):
        guard.record(1.0, 32, now=1.0)
    assert guard.backoff_at(1.0) == 0.0


def test_drift_guard_ignores_one_disagreeing_sample_but_not_a_real_drop():
    """Right after a burst the guard sampled a 3-sample batch with one disagreement; a per-batch EWMA fell
    below the 0.97 floor and pinned every threshold at 1.0 at the full request rate. The window of samples
    holds it: one miss in 63 is no evidence of agreement below 0.97; 10 misses in 30 is."""
    guard = DriftGuard(floor=0.97)
    for i in range(20):
        guard.record(1.0, 3, now=i * 0.5)
    guard.record(2 / 3, 3, now=10.0)
    assert guard.backoff_at(10.0) == 0.0 and guard.bounds()[1] > 0.97
    drifted = DriftGuard(floor=0.97)
    for i in range(10):
        drifted.record(2 / 3, 3, now=i * 0.5)
    assert drifted.backoff_at(4.5) == 1.0 and drifted.bounds()[1] < 0.97
    few = DriftGuard(floor=0.97, min_samples=12)
    few.record(0.0, 3, now=0.0)  # three disagreeing samples alone decide nothing
    assert few.backoff_at(0.0) == 0.0


def test_drift_guard_backoff_decays_when_no_sample_can_be_taken():
    """A back-off that saturates the replica stops the idle samples that could lift it: it halves every
    half_life_s seconds, so the thresholds fall, the replica idles and the guard can measure again."""
    guard = DriftGuard(floor=0.97, half_life_s=10.0)
    for _ in range(10):
        guard.record(0.5, 4, now=0.0)
    assert guard.backoff_at(0.0) == 1.0
    assert guard.backoff_at(10.0) == pytest.approx(0.5) and guard.backoff_at(40.0) < 0.07
    for _ in range(3):  # still drifted when it samples again (min_samples fresh ones): backs off again
        guard.record(0.5, 4, now=40.0)
    assert guard.backoff_at(40.0) > 0.5
    old = DriftGuard(floor=0.97, horizon_s=20.0)
    for _ in range(10):
        old.record(0.5, 4, now=0.0)
    for i in range(6):
        old.record(1.0, 4, now=30.0 + i)  # the drifted samples have aged out of the window
    assert old.agreement == 1.0 and old.backoff_at(35.0) < 0.1


def test_conservative_end_is_never_below_the_calibrated_thresholds():
    pol = AdaptiveThresholds([1.0, 1.0], [0.9, 0.95], sla_s=0.05)
    assert pol.thresholds() == [1.0, 1.0]  # pinned at 1.0: no natural exit at any load
    pol.observe(queue_len=100)
    assert pol.thresholds() == [1.0, 1.0]


def test_accuracy_tuner_follows_feedback_not_load():
    from mixfleet.earlyexit.serve.policy import AccuracyTuner

    tuner = AccuracyTuner([0.5, 0.8], eps=0.01)
    assert tuner.thresholds() == pytest.approx([0.5, 0.8])
    for _ in range(20):
        tuner.record(0.8)  # early answers disagree with the final exit: tighten
    assert tuner.thresholds() == pytest.approx([1.0, 1.0])
    for _ in range(200):
        tuner.record(1.0)
    assert tuner.thresholds() == pytest.approx([0.5, 0.8])


def test_drift_guard_samples_every_idle_batch_while_suspicious():
    """5% of idle batches is enough to watch healthy traffic, too few to conclude quickly once agreement
    dips: while the window is under the floor (or the guard is backed off) every idle batch is sampled."""
    guard = DriftGuard(floor=0.97, sample_rate=0.05)
    for i in range(20):
        guard.record(1.0, 3, now=i * 0.5)
    assert not guard.suspicious and not guard.should_sample(True, 0.5)
    guard.record(1 / 3, 3, now=10.0)  # a dip: no evidence yet of agreement under the floor...
    assert guard.backoff_at(10.0) == 0.0 and guard.suspicious
    assert guard.should_sample(True, 0.5) and not guard.should_sample(False, 0.5)  # ...so it gathers some
    for i in range(25):
        guard.record(1.0, 3, now=10.5 + i * 0.1)  # a fluke: the dip leaves the window and the rate drops back
    assert not guard.suspicious and not guard.should_sample(True, 0.5)


def test_drain_time_refuses_only_what_the_queue_would_make_late():
    d = DrainTime()
    assert d.late_wait_s(10, 0.2) is None  # not timed yet: the queue bound alone decides
    d.record(first_arrival=0.0, ended=0.1, n=10)  # 10 ms per request
    d.record(first_arrival=0.05, ended=0.2, n=10)  # queued behind the first batch: counted from its end
    assert abs(d.value - 0.01) < 1e-12
    assert d.late_wait_s(0, 0.0) is None  # an empty replica always admits
    assert d.late_wait_s(18, 0.2) is None  # 180 ms of queue + its own 10 ms fit in 200 ms
    assert abs(d.late_wait_s(20, 0.2) - 0.2) < 1e-12
    d.reset()
    assert d.value is None and d.late_wait_s(20, 0.2) is None
