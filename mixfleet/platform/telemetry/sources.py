"""Where GPU readings come from: real NVML, or an emulation of a declared GPU type.

- :class:`NvmlSource` reads every GPU of the host through ``pynvml``
  (the ``nvidia-ml-py`` bindings). Each field is read on its own; a field
  the device or driver does not support (``NVMLError_NotSupported``, no
  permission, ...) comes back as ``None``. XID errors are counted from an
  NVML event set polled without blocking.
- :class:`EmulatedSource` is **emulation**: a node that declares
  ``accelerator_type:<T>`` but has no device behind it. Readings are
  computed from the type's datasheet figures (:mod:`mixfleet.platform.accelerators`)
  and the *drive* parts report: load (utilisation, memory fraction) and an
  injected condition (``speed_factor``, throttle reason). Every reading
  says ``"source": "emulated"``.

``sample(drive)`` takes ``{gpu_index: {"util", "mem_frac", "speed_factor",
"throttle"}}`` (missing entries mean idle, full speed); NVML ignores it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from mixfleet.errors import ClusterError
from mixfleet.platform.accelerators import ACCELERATORS
from mixfleet.platform.telemetry.readings import (
    accelerator_from_name,
    empty_reading,
    speed_factor,
    throttle_names,
)

MIB = 1024 * 1024
SOURCES = ("auto", "nvml", "emulated")


class EmulatedSource:
    """Readings for ``num_gpus`` GPUs of ``accelerator_type``, driven by reported load (emulation)."""

    name = "emulated"
    IDLE_CLOCK_MHZ = 210
    AMBIENT_C = 30.0

    def __init__(self, node_id: str, accelerator_type: str, num_gpus: int, clock: Callable[[], float]):
        if accelerator_type not in ACCELERATORS:
            raise ClusterError(f"cannot emulate unknown accelerator type '{accelerator_type}'",
                               f"known types: {', '.join(ACCELERATORS)}")
        self.node_id = node_id
        self.spec = ACCELERATORS[accelerator_type]
        self.num_gpus = num_gpus
        self.clock = clock

    def sample(self, drive: dict[int, dict] | None = None) -> list[dict[str, Any]]:
        now = self.clock()
        return [self._one(i, (drive or {}).get(i) or {}, now) for i in range(self.num_gpus)]

    def _one(self, index: int, d: dict, now: float) -> dict[str, Any]:
        spec = self.spec
        util = min(max(float(d.get("util", 0.0)), 0.0), 1.0)
        mem_frac = min(max(float(d.get("mem_frac", 0.0)), 0.0), 1.0)
        factor = min(max(float(d.get("speed_factor", 1.0)), 0.05), 1.0)
        throttle = d.get("throttle")
        total = int(spec.memory_gib * 1024)
        r = empty_reading(self.node_id, index, self.name, now)
        reasons = ["gpu_idle"] if util == 0 else []
        if factor < 1.0:
            reasons.append(throttle or "sw_thermal_slowdown")
        clock = self.IDLE_CLOCK_MHZ if util == 0 else int(spec.max_sm_clock_mhz * factor)
        temp = self.AMBIENT_C + 45.0 * util * factor
        if "thermal" in (throttle or "sw_thermal_slowdown") and factor < 1.0:
            temp = max(temp, 88.0)  # thermal slowdown starts near 87-90 C on datacenter parts
        r.update(
            accelerator_type=spec.name,
            name=f"emulated {spec.name}",
            uuid=f"EMU-{self.node_id[:8]}-{index}",
            util_pct=round(util * 100, 1),
            mem_util_pct=round(util * 60, 1),
            mem_used_mib=int(4 + mem_frac * (total - 4)),
            mem_total_mib=total,
            power_w=round(spec.idle_w + (spec.tdp_w - spec.idle_w) * util * factor, 1),
            power_limit_w=float(spec.tdp_w),
            sm_clock_mhz=clock,
            sm_clock_max_mhz=spec.max_sm_clock_mhz,
            temp_c=round(temp, 1),
            throttle_reasons=reasons,
            speed_factor=round(factor, 3),
            ecc_errors=0,
            xid_errors=0,
        )
        return r

    def close(self) -> None:
        pass


class NvmlSource:
    """Readings of every GPU on this host through NVML (``pynvml``); the real path."""

    name = "nvml"

    def __init__(self, node_id: str, clock: Callable[[], float], nvml: Any = None,
                 accelerator_type: str | None = None):
        self.nvml = nvml if nvml is not None else importlib.import_module("pynvml")
        self.node_id = node_id
        self.clock = clock
        self.declared_type = accelerator_type
        self.nvml.nvmlInit()
        self.handles = [self.nvml.nvmlDeviceGetHandleByIndex(i) for i in range(self.nvml.nvmlDeviceGetCount())]
        self.num_gpus = len(self.handles)
        self.xid_counts = [0] * self.num_gpus
        self.xid_supported = [False] * self.num_gpus
        self._events = self._open_xid_events()

    def _read(self, fn_name: str, *args: Any) -> Any:
        """One NVML call; ``None`` if this driver or device cannot answer it."""
        fn = getattr(self.nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except self.nvml.NVMLError:
            return None

    def _open_xid_events(self) -> Any:
        """An NVML event set for XID critical errors; ``None`` where unsupported."""
        nv = self.nvml
        events = self._read("nvmlEventSetCreate")
        if events is None:
            return None
        for i, h in enumerate(self.handles):
            try:
                nv.nvmlDeviceRegisterEvents(h, nv.nvmlEventTypeXidCriticalError, events)
                self.xid_supported[i] = True
            except nv.NVMLError:  # NotSupported on some boards and in containers
                pass
        if not any(self.xid_supported):
            self._read("nvmlEventSetFree", events)
            return None
        return events

    def _drain_xids(self) -> None:
        """Count XID events queued since the last sample (non-blocking wait)."""
        if self._events is None:
            return
        wait = getattr(self.nvml, "nvmlEventSetWait_v2", None) or getattr(self.nvml, "nvmlEventSetWait", None)
        for _ in range(64):  # bounded: never spin on a flood of events
            try:
                data = wait(self._events, 0)
            except self.nvml.NVMLError:  # NVMLError_Timeout: nothing queued
                return
            # Handles are ctypes pointers (no value equality): map the event to its GPU by index.
            index = self._read("nvmlDeviceGetIndex", data.device)
            if index is not None and 0 <= index < self.num_gpus:
                self.xid_counts[index] += 1

    def sample(self, drive: dict[int, dict] | None = None) -> list[dict[str, Any]]:
        self._drain_xids()
        now = self.clock()
        return [self._one(i, h, now) for i, h in enumerate(self.handles)]

    def _one(self, index: int, h: Any, now: float) -> dict[str, Any]:
        nv, read = self.nvml, self._read
        r = empty_reading(self.node_id, index, self.name, now)
        name = read("nvmlDeviceGetName", h)
        name = name.decode() if isinstance(name, bytes) else name
        uuid = read("nvmlDeviceGetUUID", h)
        util = read("nvmlDeviceGetUtilizationRates", h)
        mem = read("nvmlDeviceGetMemoryInfo", h)
        power = read("nvmlDeviceGetPowerUsage", h)  # mW
        limit = read("nvmlDeviceGetEnforcedPowerLimit", h)  # mW
        sm = read("nvmlDeviceGetClockInfo", h, nv.NVML_CLOCK_SM)
        sm_max = read("nvmlDeviceGetMaxClockInfo", h, nv.NVML_CLOCK_SM)
        mask = read("nvmlDeviceGetCurrentClocksEventReasons", h)
        if mask is None:
            mask = read("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        reasons = throttle_names(mask)
        ecc = read("nvmlDeviceGetTotalEccErrors", h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC)
        procs = read("nvmlDeviceGetComputeRunningProcesses", h)
        r.update(
            accelerator_type=self.declared_type or accelerator_from_name(name),
            name=name,
            uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
            util_pct=float(util.gpu) if util is not None else None,
            mem_util_pct=float(util.memory) if util is not None else None,
            mem_used_mib=int(mem.used // MIB) if mem is not None else None,
            mem_total_mib=int(mem.total // MIB) if mem is not None else None,
            power_w=round(power / 1000, 1) if power is not None else None,
            power_limit_w=round(limit / 1000, 1) if limit is not None else None,
            sm_clock_mhz=sm,
            sm_clock_max_mhz=sm_max,
            temp_c=read("nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU),
            throttle_reasons=reasons,
            speed_factor=speed_factor(reasons, sm, sm_max),
            ecc_errors=ecc,
            xid_errors=self.xid_counts[index] if self.xid_supported[index] else None,
            processes=[{"pid": p.pid,
                        "used_mib": int(p.usedGpuMemory // MIB) if getattr(p, "usedGpuMemory", None) else None}
                       for p in procs or []],
        )
        return r

    def close(self) -> None:
        if self._events is not None:
            self._read("nvmlEventSetFree", self._events)
        self._read("nvmlShutdown")


def nvml_available(nvml: Any = None) -> bool:
    """Whether NVML loads and sees at least one GPU here."""
    try:
        nv = nvml if nvml is not None else importlib.import_module("pynvml")
        nv.nvmlInit()
    except Exception:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded
        return False
    try:
        return nv.nvmlDeviceGetCount() > 0
    except Exception:
        return False
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass


def open_source(node_id: str, *, source: str = "auto", accelerator_type: str | None, num_gpus: int,
                emulated_node: bool, clock: Callable[[], float], nvml: Any = None):
    """Pick the source for one node; ``None`` when the node declares no GPU to Ray.

    ``auto``: a node labelled as having emulated GPUs is always emulated (its
    declared GPUs have no device behind them, even on a GPU host); otherwise
    NVML if it loads, else emulation of the declared type. The environment
    variable ``MIXFLEET_TELEMETRY_SOURCE`` overrides ``auto``.
    """
    source = os.environ.get("MIXFLEET_TELEMETRY_SOURCE", source) if source == "auto" else source
    if source not in SOURCES:
        raise ClusterError(f"unknown telemetry source '{source}'", f"valid sources: {', '.join(SOURCES)}")
    if num_gpus <= 0:
        return None  # telemetry covers the GPUs Ray schedules; a node declaring none reports none
    if source == "nvml" or (source == "auto" and not emulated_node and nvml_available(nvml)):
        try:
            return NvmlSource(node_id, clock, nvml=nvml, accelerator_type=accelerator_type)
        except Exception as exc:
            if source == "nvml":
                raise ClusterError(f"NVML is not usable on node {node_id[:12]}: {exc}",
                                   "install the NVIDIA driver, or use source='emulated'") from None
    if accelerator_type:
        return EmulatedSource(node_id, accelerator_type, num_gpus, clock)
    return None  # GPUs declared without a type and no NVML: nothing to read or emulate
