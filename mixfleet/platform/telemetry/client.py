"""What parts call: push stats, read snapshots, drive the emulated GPUs.

Every function validates its input locally and raises
:class:`~mixfleet.errors.InputError` *before* anything is sent, so a
malformed stat never reaches the hub. Writes are fire-and-forget (no
``ray.get``), so a serving hot path does not wait on the hub.
"""

from __future__ import annotations

import math
from typing import Any

from mixfleet.errors import InputError
from mixfleet.platform.telemetry.hub import POLL_GROUP, forget_hub, get_hub
from mixfleet.platform.telemetry.readings import validate_stat
from mixfleet.platform.telemetry.state import check_fraction


def push_stats(scope: str, key: str, values: dict[str, float]) -> None:
    """Record engine/replica stats, e.g. ``push_stats("routing.replica", "A100-0", {"queue_len": 3})``.

    The hub keeps the latest ``values`` per ``(scope, key)`` with a
    timestamp; they show in :func:`hub_snapshot` under ``stats``.
    """
    clean = validate_stat(scope, key, values)
    get_hub().push_stats.remote(scope, key, clean)


def _ask(method: str, *args: Any, timeout_s: float, group: str | None = None) -> Any:
    """Call a hub method and wait; if the hub died for good, get (or create) it again once."""
    import ray

    for attempt in (0, 1):
        fn = getattr(get_hub(), method)
        ref = (fn.options(concurrency_group=group) if group else fn).remote(*args)
        try:
            return ray.get(ref, timeout=timeout_s)
        except ray.exceptions.ActorDiedError:
            if attempt:
                raise
            forget_hub()


def hub_snapshot(timeout_s: float = 10.0) -> dict[str, Any]:
    """The hub's latest snapshot: ``{ts, version, reason, gpus, nodes, stats}``."""
    return _ask("snapshot", timeout_s=timeout_s)


def wait_for_update(since_version: int, timeout_s: float = 5.0) -> dict[str, Any]:
    """Block until the hub's ``version`` exceeds ``since_version`` (or ``timeout_s``); the snapshot."""
    if not isinstance(since_version, int) or isinstance(since_version, bool):
        raise InputError(f"bad since_version {since_version!r}: expected an int",
                         "pass the 'version' of the last snapshot you saw (or -1)")
    return _ask("wait_for_update", since_version, timeout_s, timeout_s=timeout_s + 30, group=POLL_GROUP)


def _check_gpu(node_id: Any, gpu_index: Any) -> None:
    if not isinstance(node_id, str) or not node_id:
        raise InputError(f"bad node_id {node_id!r}: expected a Ray node id (hex string)",
                         "use ray.get_runtime_context().get_node_id()")
    if not isinstance(gpu_index, int) or isinstance(gpu_index, bool) or gpu_index < 0:
        raise InputError(f"bad gpu_index {gpu_index!r}: expected an int >= 0", "use the GPU's index on its node")


def report_gpu_load(node_id: str, gpu_index: int, util: float, mem_frac: float,
                    ttl_s: float | None = None) -> None:
    """Drive an *emulated* GPU: utilisation and memory fraction in [0, 1].

    The load holds for ``ttl_s`` (the hub's default, 10 s) and then the GPU
    idles again; report again to keep it. Ignored by real (NVML) GPUs.
    """
    _check_gpu(node_id, gpu_index)
    check_fraction("util", util)
    check_fraction("mem_frac", mem_frac)
    if ttl_s is not None and (not isinstance(ttl_s, (int, float)) or not math.isfinite(ttl_s) or ttl_s <= 0):
        raise InputError(f"bad ttl_s {ttl_s!r}: expected a positive number of seconds", "e.g. 10")
    get_hub().report_load.remote(node_id, gpu_index, float(util), float(mem_frac), ttl_s)


def set_gpu_condition(node_id: str, gpu_index: int, speed_factor: float,
                      throttle: str = "sw_thermal_slowdown") -> None:
    """Inject a slowdown on an *emulated* GPU: it runs at ``speed_factor`` of full speed.

    Its readings show the lower SM clock, ``throttle`` in ``throttle_reasons``
    and ``speed_factor`` until :func:`clear_gpu_condition`.
    """
    from mixfleet.platform.telemetry.readings import SLOWDOWN_REASONS

    _check_gpu(node_id, gpu_index)
    check_fraction("speed_factor", speed_factor, low_open=True)
    if throttle not in SLOWDOWN_REASONS:
        raise InputError(f"unknown throttle reason '{throttle}'", f"valid reasons: {', '.join(sorted(SLOWDOWN_REASONS))}")
    get_hub().set_condition.remote(node_id, gpu_index, float(speed_factor), throttle)


def clear_gpu_condition(node_id: str, gpu_index: int) -> None:
    """Undo :func:`set_gpu_condition`: the emulated GPU runs at full speed again."""
    _check_gpu(node_id, gpu_index)
    get_hub().set_condition.remote(node_id, gpu_index, None)


def gpu_history(node_id: str, gpu_index: int | None = None, last: int | None = None) -> list[dict]:
    """Bounded history: one GPU's readings, or the node's summaries when ``gpu_index`` is None."""
    return _ask("history", node_id, gpu_index, last, timeout_s=10)
