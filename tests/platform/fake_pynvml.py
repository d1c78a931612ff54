"""A faithful stand-in for the ``pynvml`` module (nvidia-ml-py) on machines without a GPU.

Same function names, argument orders, units (bytes, mW, MHz) and error
classes as the real bindings: ``NVMLError(value)`` maps to its subclass
(``NVMLError_NotSupported``, ``NVMLError_Timeout``, ...) as
``pynvml._extractNVMLErrorsAsClasses`` does. Like gpustat's tests, each
fake device can refuse some calls with ``NVMLError_NotSupported`` (a T4
without power readings, a consumer board without throttle reasons or
process lists). Configure with :func:`install`; the source under test gets
this module as its ``nvml``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
nvmlEventTypeXidCriticalError = 8
nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksEventReasonHwThermalSlowdown = 0x40


class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self):
        return {3: "Not Supported", 10: "Timeout", 12: "NVML Shared Library Not Found",
                1: "Uninitialized"}.get(self.value, f"NVML error {self.value}")


def _error_class(name: str, value: int) -> type:
    cls = type(name, (NVMLError,), {"__new__": lambda typ, *a: NVMLError.__new__(typ, value)})
    NVMLError._valClassMapping[value] = cls
    return cls


NVMLError_Uninitialized = _error_class("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_NotSupported = _error_class("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_Timeout = _error_class("NVMLError_Timeout", NVML_ERROR_TIMEOUT)
NVMLError_LibraryNotFound = _error_class("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)

GIB = 1024**3


@dataclass
class FakeDevice:
    name: str | bytes
    uuid: str
    memory_total: int
    memory_used: int
    util_gpu: int
    util_memory: int
    power_mw: int
    power_limit_mw: int
    sm_clock: int
    sm_clock_max: int
    temp_c: int
    throttle_mask: int = 0
    ecc_uncorrected: int = 0
    processes: list = field(default_factory=list)
    unsupported: set = field(default_factory=set)  # names of nvml functions that raise NotSupported


def default_devices() -> list[FakeDevice]:
    """Three boards as seen in the wild: a busy A100, a thermally slowed T4, a consumer card."""
    return [
        FakeDevice("NVIDIA A100-SXM4-80GB", "GPU-a100-0001", 80 * GIB, 60 * GIB, 87, 41, 312_500, 400_000,
                   1410, 1410, 64, processes=[SimpleNamespace(pid=4242, usedGpuMemory=58 * GIB)]),
        # old bindings return bytes names; no power sensor or ECC query on this board
        FakeDevice(b"Tesla T4", "GPU-t4-0002", 16 * GIB, 3 * GIB, 99, 30, 0, 70_000, 795, 1590, 89,
                   throttle_mask=nvmlClocksEventReasonSwThermalSlowdown,
                   processes=[SimpleNamespace(pid=77, usedGpuMemory=None)],  # hidden inside a container
                   unsupported={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEccErrors"}),
        FakeDevice("NVIDIA GeForce RTX 2080 Ti", "GPU-2080-0003", 11 * GIB, 0, 0, 0, 21_000, 250_000, 300, 2100, 35,
                   unsupported={"nvmlDeviceGetUtilizationRates", "nvmlDeviceGetCurrentClocksEventReasons",
                                "nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetTotalEccErrors",
                                "nvmlDeviceRegisterEvents"}),
    ]


_state = SimpleNamespace(devices=default_devices(), initialized=False, fail_init=False,
                         events=collections.deque(), init_calls=0)


def install(devices: list[FakeDevice] | None = None, *, fail_init: bool = False) -> None:
    """Reset the fake: these devices (default: :func:`default_devices`), or no driver at all."""
    _state.devices = default_devices() if devices is None else devices
    _state.initialized = False
    _state.fail_init = fail_init
    _state.events.clear()
    _state.init_calls = 0


def inject_xid(index: int, xid: int = 79) -> None:
    """Queue an XID critical error event for device ``index`` (79: GPU fell off the bus)."""
    _state.events.append(SimpleNamespace(device=index, eventType=nvmlEventTypeXidCriticalError, eventData=xid))


def _dev(handle) -> FakeDevice:
    if not _state.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return _state.devices[handle]


def _call(name: str, handle) -> FakeDevice:
    d = _dev(handle)
    if name in d.unsupported:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return d


def nvmlInit():
    _state.init_calls += 1
    if _state.fail_init:
        raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
    _state.initialized = True


def nvmlShutdown():
    _state.initialized = False


def nvmlDeviceGetCount():
    if not _state.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return len(_state.devices)


def nvmlDeviceGetHandleByIndex(index):
    _dev(index)
    return index  # real handles are opaque c pointers; an int compares the same way


def nvmlDeviceGetIndex(h):
    _dev(h)
    return h


def nvmlDeviceGetName(h):
    return _call("nvmlDeviceGetName", h).name


def nvmlDeviceGetUUID(h):
    return _call("nvmlDeviceGetUUID", h).uuid


def nvmlDeviceGetUtilizationRates(h):
    d = _call("nvmlDeviceGetUtilizationRates", h)
    return SimpleNamespace(gpu=d.util_gpu, memory=d.util_memory)


def nvmlDeviceGetMemoryInfo(h):
    d = _call("nvmlDeviceGetMemoryInfo", h)
    return SimpleNamespace(total=d.memory_total, used=d.memory_used, free=d.memory_total - d.memory_used)


def nvmlDeviceGetPowerUsage(h):
    return _call("nvmlDeviceGetPowerUsage", h).power_mw


def nvmlDeviceGetEnforcedPowerLimit(h):
    return _call("nvmlDeviceGetEnforcedPowerLimit", h).power_limit_mw


def nvmlDeviceGetClockInfo(h, clock_type):
    assert clock_type == NVML_CLOCK_SM
    return _call("nvmlDeviceGetClockInfo", h).sm_clock


def nvmlDeviceGetMaxClockInfo(h, clock_type):
    assert clock_type == NVML_CLOCK_SM
    return _call("nvmlDeviceGetMaxClockInfo", h).sm_clock_max


def nvmlDeviceGetTemperature(h, sensor):
    assert sensor == NVML_TEMPERATURE_GPU
    return _call("nvmlDeviceGetTemperature", h).temp_c


def nvmlDeviceGetCurrentClocksEventReasons(h):
    return _call("nvmlDeviceGetCurrentClocksEventReasons", h).throttle_mask


def nvmlDeviceGetCurrentClocksThrottleReasons(h):  # the pre-12.535 name, same answer
    return _call("nvmlDeviceGetCurrentClocksEventReasons", h).throttle_mask


def nvmlDeviceGetTotalEccErrors(h, error_type, counter_type):
    assert (error_type, counter_type) == (NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC)
    return _call("nvmlDeviceGetTotalEccErrors", h).ecc_uncorrected


def nvmlDeviceGetComputeRunningProcesses(h):
    return list(_call("nvmlDeviceGetComputeRunningProcesses", h).processes)


def nvmlEventSetCreate():
    if not _state.initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    return SimpleNamespace(registered=set())


def nvmlDeviceRegisterEvents(h, event_types, event_set):
    _call("nvmlDeviceRegisterEvents", h)
    event_set.registered.add(h)


def nvmlEventSetWait_v2(event_set, timeout_ms):
    while _state.events:
        ev = _state.events.popleft()
        if ev.device in event_set.registered:
            return ev
    raise NVMLError(NVML_ERROR_TIMEOUT)


def nvmlEventSetFree(event_set):
    event_set.registered.clear()
