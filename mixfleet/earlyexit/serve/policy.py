"""Load-adaptive exit thresholds, deadline-forced exits and the drift guard (pure, no Ray).

The serving replica feeds these objects what it observes (queue length,
request latencies, stage timings, agreement samples) with an explicit
clock value ``now`` (seconds); they never read a clock or global RNG.

Control law (``AdaptiveThresholds``)
------------------------------------
Notation:
    tau_cal[k]   calibrated accuracy-safe threshold of exit k (within eps of the full model)
    tau_con[k]   most conservative threshold (the eps = 0 point of the calibration curve, or 1.0)
    q(t)         requests queued or in flight at the replica
    q_ref        queue length at which the replica is considered saturated: the requests it serves in
                 h * SLA at its measured per-request service time (``observe_service``; a fixed 8, a quarter
                 of the batch size, read two Poisson arrivals in flight at 10 % busy as a quarter of full load)
    l(t)         p95 of the latencies of the last ``window`` answered requests
    u(t)         utilisation: the share of wall time the replica spent serving the load, an EWMA over ~1 s
                 (``BusyShare``; the share since the previous batch alone jumped to 1 whenever two Poisson
                 arrivals fell close together: at 10 % busy the pressure sat at 0.3-0.9)
    u_lo, u_hi   utilisation band over which pressure rises from 0 to 1 (0.2, 0.5)
    SLA          latency objective; ``headroom`` h in (0, 1) is the share of it we aim to use
    p(t)         load pressure in [0, 1]
    b(t)         drift back-off in [0, 1] (see DriftGuard)

    raw(t) = clip(max(q(t) / q_ref, (u(t) - u_lo) / (u_hi - u_lo), (l(t) / SLA - h) / (1 - h)), 0, 1)
    p(t)   = p(t-) + a * (raw(t) - p(t-)),  a = attack (0.6) if raw > p else release (0.05)
    load[k] = tau_cal[k] + (1 - p(t)) * (tau_con[k] - tau_cal[k])
    tau[k]  = load[k] + b(t) * (1 - load[k])

tau_con is raised to at least tau_cal (the conservative end is never less
strict than the calibrated one), so pinning the calibrated thresholds at
1.0 pins every threshold at 1.0: no natural exit, only deadline-forced ones.

Utilisation is the leading signal (it rises with the arrival rate before
queues or latencies do); queue and latency catch what it misses. A batch the
drift guard sampled (a full pass for monitoring) gives no utilisation reading
(``utilisation=None``): its extra compute is ours, not the load's, and counting
it made monitoring raise the pressure, which relaxed the very thresholds the
guard was measuring (on the drifting stream, with the replica ~10 % busy, the
pressure sat at 0.3-0.9 and adaptive lost 2.6 points against the full model in
the rising window).
So at low load tau = tau_con (as accurate as the full model), under a burst
tau falls to tau_cal within a couple of batches (fast attack), and relaxes
slowly when the burst ends (slow release, no oscillation). The drift guard
pulls tau towards 1.0 (the full model) when the measured agreement of the
load-only thresholds ``load[k]`` with the final exit is below its floor with
~95 % confidence; it measures ``load`` (not ``tau``), so backing off does not
hide the drift it reacts to, and its back-off decays with time (see DriftGuard).
Thresholds never leave [tau_cal, 1].

Apparate-style baseline (``AccuracyTuner``)
-------------------------------------------
Every sample runs to the final exit (early answers are released at once),
so every batch is accuracy feedback; thresholds move between tau_cal and 1
to keep agreement with the final exit at >= 1 - eps, whatever the load.

Deadline-forced exit (``DeadlinePlanner``)
------------------------------------------
Per-stage times are EWMAs. At exit k of a batch whose earliest deadline is
``d``: if ``now + sum(time of the stages after exit k) > d``, every sample
left leaves at exit k (the deepest exit already computed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np


class AdaptiveThresholds:
    """Thresholds driven by queue length and observed latency against the SLA (see module doc)."""

    def __init__(self, calibrated: Sequence[float], conservative: Sequence[float] | None, sla_s: float,
                 queue_ref: float = 32.0, headroom: float = 0.5, attack: float = 0.6, release: float = 0.05,
                 window: int = 200, util_band: tuple[float, float] = (0.2, 0.5)):
        self.cal = np.asarray(calibrated, dtype=float)
        con = np.ones_like(self.cal) if conservative is None else np.asarray(conservative, dtype=float)
        self.con = np.maximum(con, self.cal)
        self.sla_s, self.queue_ref, self.headroom = float(sla_s), float(queue_ref), float(headroom)
        self.attack, self.release = float(attack), float(release)
        self.u_lo, self.u_hi = map(float, util_band)
        self.latencies: deque[float] = deque(maxlen=window)
        self.pressure = 0.0
        self.backoff = 0.0
        self.service_s: float | None = None

    def observe(self, queue_len: int, latencies_s: Sequence[float] = (), utilisation: float | None = 0.0) -> None:
        """One batch's readings. ``utilisation=None`` (a monitoring batch): queue and latency may raise the
        pressure, nothing lowers it."""
        self.latencies.extend(latencies_s)
        lat = float(np.percentile(self.latencies, 95)) if self.latencies else 0.0
        u = 0.0 if utilisation is None else utilisation
        raw = max(queue_len / self.queue_ref, (u - self.u_lo) / (self.u_hi - self.u_lo),
                  (lat / self.sla_s - self.headroom) / (1 - self.headroom))
        raw = min(max(raw, 0.0), 1.0)
        if utilisation is None:
            raw = max(raw, self.pressure)
        a = self.attack if raw > self.pressure else self.release
        self.pressure += a * (raw - self.pressure)

    def observe_service(self, batch_s: float, n: int, alpha: float = 0.1) -> None:
        """A batch of the load's ``n`` samples took ``batch_s``: q_ref follows the per-request service time."""
        if n <= 0 or batch_s <= 0:
            return
        per = batch_s / n
        self.service_s = per if self.service_s is None else self.service_s + alpha * (per - self.service_s)
        self.queue_ref = max(2.0, self.headroom * self.sla_s / self.service_s)

    def load_thresholds(self) -> np.ndarray:
        """The thresholds the load alone asks for (what the drift guard measures)."""
        return self.cal + (1.0 - self.pressure) * (self.con - self.cal)

    def thresholds(self) -> list[float]:
        load = self.load_thresholds()
        return (load + self.backoff * (1.0 - load)).tolist()


class AccuracyTuner:
    """Apparate-style: thresholds tuned from accuracy feedback on every batch, load ignored (see module doc)."""

    def __init__(self, calibrated: Sequence[float], eps: float = 0.01, step: float = 0.05, alpha: float = 0.1):
        self.cal = np.asarray(calibrated, dtype=float)
        self.target, self.step, self.alpha = 1.0 - float(eps), float(step), float(alpha)
        self.agreement = 1.0
        self.level = 0.0  # 0: calibrated thresholds; 1: every threshold at 1.0

    def record(self, agreement: float | None) -> None:
        if agreement is None:
            return
        self.agreement += self.alpha * (agreement - self.agreement)
        move = self.step if self.agreement < self.target else -self.step / 4
        self.level = min(1.0, max(0.0, self.level + move))

    def thresholds(self) -> list[float]:
        return (self.cal + self.level * (1.0 - self.cal)).tolist()


class DeadlinePlanner:
    """Predicts the time of the stages still to run and decides deadline-forced exits."""

    def __init__(self, n_stages: int, exit_stage: Sequence[int], alpha: float = 0.2):
        self.stage_s = np.zeros(n_stages)
        self.seen = np.zeros(n_stages, dtype=bool)
        self.exit_stage = list(exit_stage)
        self.alpha = alpha

    def record(self, stage: int, seconds: float) -> None:
        if not self.seen[stage]:
            self.stage_s[stage], self.seen[stage] = seconds, True
        else:
            self.stage_s[stage] += self.alpha * (seconds - self.stage_s[stage])

    def remaining_after_exit(self, k: int) -> float:
        return float(self.stage_s[self.exit_stage[k] + 1:].sum())

    def must_exit(self, k: int, now: float, deadline: float) -> bool:
        return now + self.remaining_after_exit(k) > deadline


class DrainTime:
    """Wall time per request the replica takes to clear, an EWMA over batches: what deadline admission
    works from. A batch's time runs from when it could start (the previous batch ended, or its first
    request arrived, whichever is later) to its end, so batch wait, request parsing and monitoring
    passes count."""

    def __init__(self, alpha: float = 0.1):
        self.alpha, self.value, self._last_end = float(alpha), None, 0.0

    def record(self, first_arrival: float, ended: float, n: int) -> None:
        per = (ended - max(self._last_end, first_arrival)) / max(n, 1)
        self.value = per if self.value is None else self.value + self.alpha * (per - self.value)
        self._last_end = ended

    def reset(self) -> None:
        """Forget the estimate (new options may change the speed); the next batch measures afresh."""
        self.value = None

    def late_wait_s(self, inflight: int, budget_s: float) -> float | None:
        """The wait behind ``inflight`` requests when it (plus the newcomer's own turn) passes ``budget_s``,
        else None. An empty replica, or one not yet timed, never refuses."""
        if not inflight or self.value is None:
            return None
        wait = inflight * self.value
        return wait if wait + self.value > budget_s else None


class BusyShare:
    """The replica's share of wall time spent computing, an EWMA with time constant ``tau_s``.

    The drift guard samples only while this is below a cap (``monitor_busy_cap``), so monitoring uses
    spare capacity: a replica near its capacity does not take full passes that would start a backlog.
    """

    def __init__(self, tau_s: float = 2.0):
        self.tau_s, self.value = float(tau_s), 0.0

    def update(self, busy_s: float, wall_s: float) -> float:
        """A batch that computed for ``busy_s`` of the ``wall_s`` seconds since the previous one ended."""
        if wall_s > 0:
            a = 1.0 - float(np.exp(-wall_s / self.tau_s))
            self.value += a * (min(busy_s / wall_s, 1.0) - self.value)
        return self.value


class DriftGuard:
    """Agreement of the load thresholds' early answers with the final exit, from sampled full passes.

    The caller samples a batch only when the replica is idle and the full pass fits before the batch's
    earliest deadline, so monitoring never costs an SLA miss.

    The evidence is the last ``window`` sampled samples no older than ``horizon_s``. The guard backs off
    (by ``step``; thresholds pulled towards the full model) only when the one-sided Wilson upper bound
    (``z``) of their agreement is below ``floor``, i.e. when the agreement is below the floor with ~95 %
    confidence, and never on fewer than ``min_samples``; while the evidence is suspicious (see
    :meth:`should_sample`) it samples every idle batch. An EWMA per batch went below a 0.97 floor on one
    disagreeing sample of a three-sample batch: right after a burst that pinned every threshold at 1.0
    at the full rate, with the replica too busy to sample again. It relaxes (by ``step / 4``) when the
    window's agreement is proved at or above the floor, and the back-off halves every ``half_life_s`` seconds
    whatever is sampled: a back-off that saturates the replica stops the idle samples that could lift
    it, and decaying lets the thresholds fall, the replica idle and the guard measure again.
    Relaxing also needs proof (the lower bound at or above the floor): on the point estimate, every idle
    batch sampled while suspicious took ``step / 4`` off, and a full back-off was gone within a second
    while the stream was still drifted. With the defaults (floor 0.97, 64 samples) the lower bound cannot
    reach the floor, so it is the decay that relaxes.
    """

    def __init__(self, floor: float = 0.97, sample_rate: float = 0.05, step: float = 0.5, z: float = 1.645,
                 min_samples: int = 12, window: int = 64, horizon_s: float = 20.0, half_life_s: float = 10.0):
        self.floor, self.sample_rate, self.step, self.z = floor, sample_rate, step, z
        self.min_samples, self.window, self.horizon_s, self.half_life_s = min_samples, window, horizon_s, half_life_s
        self.samples = 0
        self._evidence: deque[tuple[float, int, int]] = deque()  # (time, agreeing samples, sampled samples)
        self._backoff, self._since = 0.0, 0.0

    @property
    def suspicious(self) -> bool:
        """The window's agreement is under the floor but not yet proved to be, or the guard has backed off."""
        return self.agreement < self.floor or self._backoff > 0.0

    def should_sample(self, idle: bool, u: float) -> bool:
        """``u`` is a uniform draw from the caller's RNG. While suspicious every idle batch is sampled, so the
        test concludes (or clears) within a few batches instead of waiting ``1 / sample_rate`` batches per
        sample: at the drift stream's rate, 5% of idle batches gave the window ~2 samples/s, and the bound
        crossed the floor only when the 20 s window's agreement had fallen to about 0.9."""
        return idle and (u < self.sample_rate or self.suspicious)

    def _counts(self) -> tuple[int, int]:
        return sum(a for _, a, _ in self._evidence), sum(n for _, _, n in self._evidence)

    @property
    def agreement(self) -> float:
        """The window's share of sampled samples whose early answer equals the final exit's (1.0 if none)."""
        agree, n = self._counts()
        return agree / n if n else 1.0

    def bounds(self) -> tuple[float, float]:
        """One-sided Wilson score bounds of the window's agreement."""
        agree, n = self._counts()
        if not n:
            return 0.0, 1.0
        p, z2 = agree / n, self.z * self.z
        mid, half = (p + z2 / (2 * n)) / (1 + z2 / n), self.z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, mid - half), min(1.0, mid + half)

    def backoff_at(self, now: float) -> float:
        """The back-off at ``now`` (seconds), after its decay since the last sample."""
        return self._backoff * 0.5 ** (max(now - self._since, 0.0) / self.half_life_s)

    def record(self, agreement: float, n: int, now: float) -> None:
        """A sampled batch of ``n`` samples, ``agreement`` of them (a share) answered as the final exit."""
        self.samples += n
        self._evidence.append((now, round(agreement * n), n))
        while len(self._evidence) > 1 and (now - self._evidence[0][0] > self.horizon_s
                                           or self._counts()[1] - self._evidence[0][2] >= self.window):
            self._evidence.popleft()
        b = self.backoff_at(now)
        if self._counts()[1] >= self.min_samples:
            if self.bounds()[1] < self.floor:
                b = min(1.0, b + self.step)
            elif self.bounds()[0] >= self.floor:
                b = max(0.0, b - self.step / 4)
        self._backoff, self._since = b, now
