"""Telemetry without Ray: the NVML reader on a fake pynvml, the emulated source, the hub core."""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from pathlib import Path

import pytest

from mixfleet.errors import ClusterError, InputError
from mixfleet.platform.accelerators import ACCELERATORS
from mixfleet.platform.telemetry.readings import (
    READING_KEYS,
    accelerator_from_name,
    throttle_names,
    validate_stat,
)
from mixfleet.platform.telemetry.sources import EmulatedSource, NvmlSource, open_source
from mixfleet.platform.telemetry.state import NO_AGENT_REASON, HubState

_spec = importlib.util.spec_from_file_location("fake_pynvml", Path(__file__).with_name("fake_pynvml.py"))
fake_pynvml = sys.modules.setdefault("fake_pynvml", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(fake_pynvml)
MIB = 1024 * 1024


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def nvml():
    fake_pynvml.install()
    return fake_pynvml


def test_nvml_reader_reads_every_field_and_returns_none_for_unsupported(nvml):
    a100, t4, rtx = NvmlSource("n1", Clock(), nvml=nvml).sample()
    assert all(set(r) == set(READING_KEYS) for r in (a100, t4, rtx))
    assert a100 | {"ts": None} == a100 | {
        "node_id": "n1", "gpu_index": 0, "accelerator_type": "A100-80G", "name": "NVIDIA A100-SXM4-80GB",
        "uuid": "GPU-a100-0001", "source": "nvml", "util_pct": 87.0, "mem_util_pct": 41.0,
        "mem_used_mib": 60 * 1024, "mem_total_mib": 80 * 1024, "power_w": 312.5, "power_limit_w": 400.0,
        "sm_clock_mhz": 1410, "sm_clock_max_mhz": 1410, "temp_c": 64, "throttle_reasons": [],
        "speed_factor": 1.0, "ecc_errors": 0, "xid_errors": 0,
        "processes": [{"pid": 4242, "used_mib": 58 * 1024}], "ts": None}
    # T4: bytes name decoded, no power sensor / ECC query -> None, thermal slowdown at half clock
    assert (t4["name"], t4["accelerator_type"]) == ("Tesla T4", "T4")
    assert t4["power_w"] is None and t4["ecc_errors"] is None and t4["power_limit_w"] == 70.0
    assert t4["throttle_reasons"] == ["sw_thermal_slowdown"] and t4["speed_factor"] == 0.5
    assert t4["processes"] == [{"pid": 77, "used_mib": None}]
    # consumer board: no utilisation, throttle reasons, process list or XID events
    assert rtx["accelerator_type"] is None and rtx["temp_c"] == 35 and rtx["mem_total_mib"] == 11 * 1024
    for key in ("util_pct", "mem_util_pct", "throttle_reasons", "speed_factor", "ecc_errors", "xid_errors"):
        assert rtx[key] is None, key
    assert rtx["processes"] == []


def test_nvml_reader_counts_xid_errors_per_gpu(nvml):
    src = NvmlSource("n1", Clock(), nvml=nvml)
    nvml.inject_xid(1)
    nvml.inject_xid(1, xid=48)
    first = src.sample()
    assert [r["xid_errors"] for r in first] == [0, 2, None]
    assert [r["xid_errors"] for r in src.sample()] == [0, 2, None]  # counts persist, no double count
    src.close()
    assert not nvml._state.initialized


def test_source_choice(nvml):
    clock = Clock()
    kw = dict(accelerator_type="T4", num_gpus=2, clock=clock, nvml=nvml)
    assert isinstance(open_source("n", emulated_node=False, **kw), NvmlSource)
    # declared-but-emulated GPUs stay emulated even where NVML works (it would report the host's boards)
    assert isinstance(open_source("n", emulated_node=True, **kw), EmulatedSource)
    nvml.install(fail_init=True)
    src = open_source("n", emulated_node=False, **kw)
    assert isinstance(src, EmulatedSource) and {r["source"] for r in src.sample()} == {"emulated"}
    with pytest.raises(ClusterError, match="NVML is not usable"):
        open_source("n", source="nvml", emulated_node=False, **kw)
    with pytest.raises(ClusterError, match="unknown telemetry source 'nvm'"):
        open_source("n", source="nvm", emulated_node=False, **kw)
    nvml.install()  # NVML works, but a node that declares no GPU to Ray (an emulated cluster's head) reports none
    assert open_source("n", emulated_node=False, accelerator_type=None, num_gpus=0, clock=clock, nvml=nvml) is None


@pytest.mark.parametrize("name", sorted(ACCELERATORS))
def test_emulated_idle_readings_are_plausible_for_the_type(name):
    spec = ACCELERATORS[name]
    readings = EmulatedSource("n", name, 2, Clock()).sample()
    assert [r["gpu_index"] for r in readings] == [0, 1]
    for r in readings:
        assert set(r) == set(READING_KEYS) and r["source"] == "emulated" and r["accelerator_type"] == name
        assert r["mem_total_mib"] == spec.memory_gib * 1024 and r["mem_used_mib"] < 100
        assert r["power_w"] == spec.idle_w and r["power_limit_w"] == spec.tdp_w
        assert r["util_pct"] == 0 and r["throttle_reasons"] == ["gpu_idle"] and r["speed_factor"] == 1.0
        assert r["sm_clock_mhz"] < r["sm_clock_max_mhz"] == spec.max_sm_clock_mhz


def test_emulated_readings_follow_reported_load_and_injected_slowdown():
    src = EmulatedSource("n", "A100", 3, Clock())
    idle, busy, slowed = src.sample({1: {"util": 0.8, "mem_frac": 0.5},
                                     2: {"util": 0.8, "mem_frac": 0.5, "speed_factor": 0.5,
                                         "throttle": "hw_thermal_slowdown"}})
    assert busy["util_pct"] == 80 and busy["mem_used_mib"] == pytest.approx(20 * 1024, rel=0.01)
    assert idle["power_w"] < busy["power_w"] < 400 and busy["sm_clock_mhz"] == 1410
    assert busy["throttle_reasons"] == [] and busy["speed_factor"] == 1.0
    assert slowed["sm_clock_mhz"] == 705 and slowed["speed_factor"] == 0.5
    assert slowed["throttle_reasons"] == ["hw_thermal_slowdown"] and slowed["temp_c"] >= 88
    assert slowed["power_w"] < busy["power_w"]


def test_names_and_masks():
    assert throttle_names(0x1 | 0x40) == ["gpu_idle", "hw_thermal_slowdown"]
    assert throttle_names(None) is None
    assert accelerator_from_name("NVIDIA H100 80GB HBM3") == "H100"
    assert accelerator_from_name("NVIDIA A100-SXM4-40GB") == "A100-40G"
    assert accelerator_from_name("NVIDIA H200") == "H200" and accelerator_from_name("Tesla V100-SXM2-32GB") == "V100"


def test_stat_validation_accepts_numbers_and_names_what_is_wrong():
    np = pytest.importorskip("numpy")
    assert validate_stat("routing.replica", "A100-0", {"queue_len": 3, "kv": np.float32(0.5), "n": np.int64(2)}) \
        == {"queue_len": 3.0, "kv": 0.5, "n": 2.0}
    for args, needle in [
        (("", "k", {"a": 1}), "bad telemetry scope ''"),
        (("s", 7, {"a": 1}), "bad telemetry key 7"),
        (("s", "k", {}), "expected a non-empty dict"),
        (("s", "k", [("a", 1)]), "expected a non-empty dict"),
        (("s", "k", {"a": float("nan")}), "bad value a=nan"),
        (("s", "k", {"a": float("inf")}), "bad value a=inf"),
        (("s", "k", {"a": None}), "bad value a=None"),
        (("s", "k", {"a": "3"}), "bad value a='3'"),
        (("s", "k", {"a": True}), "bad value a=True"),
        (("s", "k", {3: 1.0}), "bad value name 3"),
    ]:
        with pytest.raises(InputError, match=needle.replace("(", r"\(")):
            validate_stat(*args)


def _emulated(node: str, n: int = 2, t: str = "V100"):
    return EmulatedSource(node, t, n, Clock()).sample()


def test_empty_hub_says_why():
    snap = HubState(Clock()).snapshot()
    assert snap["gpus"] == [] and snap["nodes"] == {} and snap["stats"] == {}
    assert snap["reason"] == NO_AGENT_REASON


def test_hub_marks_silent_agents_stale_and_counts_gaps_and_restarts():
    clock = Clock()
    hub = HubState(clock, stale_after_s=2.0)
    hub.report("a", {"source": "emulated", "period_s": 0.5, "pid": 1}, _emulated("a"))
    hub.report("b", {"source": "emulated", "period_s": 0.5, "pid": 2}, _emulated("b", 1, "T4"))
    snap = hub.snapshot()
    assert snap["reason"] is None and len(snap["gpus"]) == 3 and not any(g["stale"] for g in snap["gpus"])
    clock.t += 1.0
    hub.report("b", {"period_s": 0.5, "pid": 2}, _emulated("b", 1, "T4"))
    clock.t += 1.5  # a: 2.5 s silent > 2 s; b: 1.5 s
    snap = hub.snapshot()
    assert {(g["node_id"], g["stale"]) for g in snap["gpus"]} == {("a", True), ("b", False)}
    assert snap["nodes"]["a"]["stale"] and snap["nodes"]["a"]["age_s"] == 2.5
    clock.t += 10  # everyone silent
    assert "every telemetry agent is stale" in hub.snapshot()["reason"]
    hub.report("a", {"period_s": 0.5, "pid": 9, "restarted": True}, _emulated("a"))
    node = hub.snapshot()["nodes"]["a"]
    assert not node["stale"] and node["restarts"] == 1 and node["stale_gaps"] == 1 and node["last_gap_s"] == 12.5
    hub.report("a", {"period_s": 0.5, "pid": 9, "restarted": True}, _emulated("a"))
    assert hub.snapshot()["nodes"]["a"]["restarts"] == 1  # same incarnation reporting again
    hub.mark_down("a", "agent died (ActorUnavailableError)")  # Ray says the process is gone: stale at once
    snap = hub.snapshot()
    assert snap["nodes"]["a"]["stale"] and snap["nodes"]["a"]["age_s"] == 0 and all(g["stale"] for g in snap["gpus"])
    hub.report("a", {"period_s": 0.5, "pid": 10, "restarted": True}, _emulated("a"))
    node = hub.snapshot()["nodes"]["a"]
    assert not node["stale"] and node["down"] is None and node["restarts"] == 2 and node["stale_gaps"] == 2


def test_hub_history_is_bounded_and_versions_grow():
    clock = Clock()
    hub = HubState(clock, history=5)
    versions = []
    for i in range(12):
        clock.t += 0.5
        hub.report("a", {"period_s": 0.5}, EmulatedSource("a", "T4", 2, clock).sample({0: {"util": i / 12,
                                                                                           "mem_frac": 0}}))
        versions.append(hub.version)
    assert versions == sorted(set(versions))
    gpu0 = hub.history("a", 0)
    assert len(gpu0) == 5 and gpu0[-1]["util_pct"] == round(11 / 12 * 100, 1)
    assert [r["ts"] for r in gpu0] == sorted(r["ts"] for r in gpu0)
    nodes = hub.history("a", last=2)
    assert len(nodes) == 2 and nodes[-1]["gpus"] == 2 and nodes[-1]["mem_total_mib"] == 2 * 16 * 1024


def test_hub_drives_emulated_gpus_with_expiring_load_and_sticky_conditions():
    clock = Clock()
    hub = HubState(clock, load_ttl_s=10)
    hub.report_load("a", 0, 0.7, 0.25)
    hub.set_condition("a", 1, 0.5)
    reply = hub.report("a", {"period_s": 0.5}, [])
    assert reply["drive"] == {0: {"util": 0.7, "mem_frac": 0.25},
                              1: {"speed_factor": 0.5, "throttle": "sw_thermal_slowdown"}}
    assert hub.drive_for("b") == {}
    clock.t += 11
    assert hub.drive_for("a") == {1: {"speed_factor": 0.5, "throttle": "sw_thermal_slowdown"}}
    hub.set_condition("a", 1, None)
    assert hub.drive_for("a") == {}
    for bad in (1.5, -0.1, float("nan"), "0.5"):
        with pytest.raises(InputError, match="bad util"):
            hub.report_load("a", 0, bad, 0.1)
    with pytest.raises(InputError, match=r"bad speed_factor 0: expected a number in \(0.0, 1\]"):
        hub.set_condition("a", 0, 0)
    hub.configure(period_s=0.2)
    assert hub.report("a", {}, [])["period_s"] == 0.2
    with pytest.raises(InputError, match="bad stale_after_s -1"):
        hub.configure(stale_after_s=-1)


def test_pushed_stats_are_kept_latest_per_key_and_go_stale():
    clock = Clock()
    hub = HubState(clock, stats_stale_after_s=5)
    hub.push_stats("routing.replica", "A100-0", {"queue_len": 3})
    hub.push_stats("routing.replica", "A100-0", {"queue_len": 4})
    hub.push_stats("xfaas.invocation", "smart_grid/aws", {"latency_s": 0.12})
    snap = hub.snapshot()
    assert snap["stats"]["routing.replica"]["A100-0"] == {"values": {"queue_len": 4.0}, "ts": 1000.0,
                                                          "stale": False}
    assert snap["reason"] == NO_AGENT_REASON  # stats alone do not make GPU telemetry
    clock.t += 6
    assert hub.snapshot()["stats"]["xfaas.invocation"]["smart_grid/aws"]["stale"]
    with pytest.raises(InputError, match="bad value q=None"):
        hub.push_stats("routing.replica", "A100-0", {"q": None})


def test_snapshot_is_fast_on_a_large_fleet():
    """The hub answers from memory: a 64-GPU fleet with 200 stats snapshots in well under 5 ms."""
    clock = Clock()
    hub = HubState(clock)
    for n in range(8):
        hub.report(f"node{n}", {"period_s": 0.5}, _emulated(f"node{n}", 8, "H100"))
    for k in range(200):
        hub.push_stats("routing.replica", f"r{k}", {"queue_len": k, "tokens_per_s": 100.0 * k})
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        snap = hub.snapshot()
        times.append(time.perf_counter() - t0)
    assert len(snap["gpus"]) == 64
    assert statistics.median(times) < 0.005, f"median snapshot {statistics.median(times) * 1e3:.2f} ms"
