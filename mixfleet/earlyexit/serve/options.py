"""The early-exit replica's run-time knobs (Serve's ``user_config``), validated as one model."""

from typing import Literal

from mixfleet.earlyexit.serve.device import EmulatedDevice
from mixfleet.platform.config import StrictModel


class ServeOptions(StrictModel):
    """The run-time knobs (``user_config``); every change applies without a restart."""

    # plain: the backbone alone, no heads; apparate: the accuracy-feedback baseline (policy.AccuracyTuner)
    mode: Literal["adaptive", "static", "full", "plain", "apparate"] = "adaptive"
    sla_ms: float = 50.0
    path_ms: float = 5.0  # time a request spends outside the replica (proxy, network): kept out of its deadline
    thresholds: list[float] | None = None  # calibrated thresholds (default: the model's)
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.002
    queue_bound: int = 256
    # deadline: also refuse (429) a request that the requests ahead of it would hold past its SLA, at the replica's
    # measured drain time per request; bound: the queue bound alone (requests admitted may be answered late)
    admission: Literal["deadline", "bound"] = "deadline"
    max_instances: int = 64
    max_body_bytes: int = 4 * 1024 * 1024
    drift_sample_rate: float = 0.05
    drift_floor: float = 0.97
    monitor_busy_cap: float = 0.7  # the drift guard samples only while the replica is busy less than this share of time
    seed: int = 0
    device: EmulatedDevice | None = None  # EMULATED accelerator time per stage (mixfleet.earlyexit.serve.device)
