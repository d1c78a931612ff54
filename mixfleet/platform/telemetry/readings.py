"""The shape of one GPU reading and of a pushed stat, shared by sources, agent and hub.

A reading is a plain ``dict`` (it crosses Ray process boundaries and is the
JSON ``cluster status --json`` prints). Keys, all present in every reading:

``node_id, gpu_index, accelerator_type, name, uuid, source ("nvml" | "emulated"),
util_pct, mem_util_pct, mem_used_mib, mem_total_mib, power_w, power_limit_w,
sm_clock_mhz, sm_clock_max_mhz, temp_c, throttle_reasons (list[str]),
speed_factor, ecc_errors, xid_errors, processes ([{pid, used_mib}]), ts``

plus ``stale`` (added by the hub). A field the GPU does not support is
``None``, never a crash. ``speed_factor`` is the fraction of full speed
the GPU runs at: ``sm_clock / sm_clock_max`` while a slowdown reason
(power cap, thermal, hardware slowdown) is active, else 1.0.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from mixfleet.errors import InputError

READING_KEYS = (
    "node_id", "gpu_index", "accelerator_type", "name", "uuid", "source",
    "util_pct", "mem_util_pct", "mem_used_mib", "mem_total_mib", "power_w", "power_limit_w",
    "sm_clock_mhz", "sm_clock_max_mhz", "temp_c", "throttle_reasons", "speed_factor",
    "ecc_errors", "xid_errors", "processes", "ts",
)

# NVML clock-event (throttle) reason bits, named as nvidia-smi names them.
THROTTLE_BITS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean "running slower than it could while busy" (idle is not one).
SLOWDOWN_REASONS = frozenset({
    "sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown",
})


def throttle_names(mask: int | None) -> list[str] | None:
    """The reason names set in an NVML clock-event bitmask (``None`` stays ``None``)."""
    if mask is None:
        return None
    return [name for bit, name in THROTTLE_BITS.items() if mask & bit]


def speed_factor(reasons: list[str] | None, clock: float | None, max_clock: float | None) -> float | None:
    """Fraction of full speed: clock / max clock while a slowdown reason is active."""
    if reasons is None:
        return None
    if not SLOWDOWN_REASONS.intersection(reasons):
        return 1.0
    if not clock or not max_clock:
        return None
    return round(min(1.0, clock / max_clock), 3)


def throttling(reading: dict[str, Any]) -> list[str]:
    """The slowdown reasons of a reading (what a person calls "throttled")."""
    return [r for r in reading.get("throttle_reasons") or [] if r in SLOWDOWN_REASONS]


def empty_reading(node_id: str, gpu_index: int, source: str, ts: float) -> dict[str, Any]:
    """A reading with every field ``None`` (filled in by a source)."""
    r: dict[str, Any] = dict.fromkeys(READING_KEYS)
    r.update(node_id=node_id, gpu_index=gpu_index, source=source, ts=ts, processes=[])
    return r


def accelerator_from_name(device_name: str | None) -> str | None:
    """Ray's accelerator type for an NVML device name (``"NVIDIA A100-SXM4-80GB"`` -> ``"A100-80G"``)."""
    from mixfleet.platform.accelerators import ACCELERATORS

    if not device_name:
        return None
    upper = device_name.upper()
    if "A100" in upper:
        return "A100-80G" if "80G" in upper else "A100-40G" if "40G" in upper else "A100"
    for name in sorted(ACCELERATORS, key=len, reverse=True):
        if name.upper() in upper:
            return name
    return None


def validate_stat(scope: Any, key: Any, values: Any) -> dict[str, float]:
    """Check a pushed stat and return its values as ``{str: float}``.

    Raises :class:`InputError` naming the bad part: ``scope``/``key`` must
    be non-empty strings, ``values`` a non-empty dict of str -> finite
    number (``bool`` is not a number here).
    """
    where = f"stat {scope!r}/{key!r}"
    for label, v in (("scope", scope), ("key", key)):
        if not isinstance(v, str) or not v.strip():
            raise InputError(f"bad telemetry {label} {v!r} in {where}: expected a non-empty string",
                             'for example push_stats("routing.replica", "A100-0", {"queue_len": 3})')
    if not isinstance(values, dict) or not values:
        raise InputError(f"bad values {values!r} in {where}: expected a non-empty dict of name -> number",
                         'for example {"queue_len": 3, "tokens_per_s": 1200.0}')
    clean: dict[str, float] = {}
    for name, v in values.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"bad value name {name!r} in {where}: names must be non-empty strings",
                             "use names like 'queue_len'")
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise InputError(f"bad value {name}={v!r} in {where}: expected a finite int or float",
                             "push numbers only (no None, NaN, inf, strings or bools)")
        clean[name] = float(v)
    return clean
