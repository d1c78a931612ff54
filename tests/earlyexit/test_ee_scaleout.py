"""Live scale-out of the early-exit deployment on Ray Serve (127.0.0.1, free ports).

The deployment runs :class:`~mixfleet.earlyexit.serve.autoscale.EarlyExitAutoscaling`
on the replica's own ``record_autoscaling_stats()``. Concurrent HTTP load
lifts the replica's queue above ``target_queue``; the controller must add a
replica, keep answering through the change, and drop back to one replica
once the load stops. Serve pushes replica metrics every ``metrics_interval_s``
(10 s by default in Ray 2.60); this deployment asks for 0.5 s, which only
changes this app's replicas, not Serve or any other test's deployment.
"""

import asyncio
import time

import httpx
import pytest

APP = "earlyexit-scaleout"
PREFIX = "/ee-scaleout"
SCALE_OUT_BOUND_S = 40.0  # replica start-up (torch import, model load) on 2 shared cores dominates
SCALE_IN_BOUND_S = 25.0
CLIENTS = 32  # concurrent requests held open: far above target_queue=4 on one replica


def _scaling() -> dict:
    from mixfleet.earlyexit.serve.autoscale import autoscaling_config

    return autoscaling_config(min_replicas=1, max_replicas=2, look_back_period_s=2.0, metrics_interval_s=0.5,
                              upscale_delay_s=1.0, downscale_delay_s=2.0, target_queue=4)


def _deployment():
    from ray import serve

    return serve.status().applications[APP].deployments["EarlyExitServer"]


def _running() -> int:
    return _deployment().replica_states.get("RUNNING", 0)


@pytest.fixture(scope="module")
def base(ray_local, wait_ready):
    from mixfleet.earlyexit.serve.app import deploy
    from mixfleet.platform.bootstrap import free_port
    from mixfleet.platform.serving import delete_app, serve_ports, start_serve

    if serve_ports() is None:  # mixfleet's Serve always carries every mixfleet gRPC servicer
        start_serve(http_port=free_port(), grpc_port=free_port())
    # the queue bound alone admits: 32 closed-loop clients overload one replica on purpose, and this test
    # checks that the change of replicas loses no answer; deadline admission's 429s are tested in test_ee_serving
    url = deploy(app_name=APP, route_prefix=PREFIX, num_cpus=0.25, sla_ms=500, admission="bound",
                 autoscaling=_scaling())
    wait_ready(url + "/v1/models/mnist", 60)
    yield url
    delete_app(APP)


@pytest.fixture(scope="module")
def batch():
    from mixfleet.earlyexit.data import load_dataset

    return load_dataset("mnist", seed=0).test.x[:4, 0].tolist()


async def _load(url: str, instances: list, stop: asyncio.Event) -> list[int]:
    """``CLIENTS`` closed-loop clients, each with one predict in flight until ``stop``."""
    codes: list[int] = []

    async def client(http: httpx.AsyncClient):
        while not stop.is_set():
            r = await http.post(url + "/v1/models/mnist:predict", json={"instances": instances})
            codes.append(r.status_code)

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
    return codes


async def _scale_out_under_load(url: str, instances: list) -> dict:
    """Drive load until a second replica runs (or the bound passes).

    Returns ``decided_s`` (the controller raised the target: a second replica
    exists in any state), ``running_s`` (it serves), the deployment's status
    trigger then, and every response code.
    """
    stop = asyncio.Event()
    t0 = time.monotonic()
    load = asyncio.create_task(_load(url, instances, stop))
    out: dict = {"decided_s": None, "running_s": None, "trigger": ""}
    try:
        while time.monotonic() - t0 < SCALE_OUT_BOUND_S and not load.done():
            dep = await asyncio.to_thread(_deployment)
            now = time.monotonic() - t0
            if out["decided_s"] is None and sum(dep.replica_states.values()) >= 2:
                out["decided_s"] = now
            if dep.replica_states.get("RUNNING", 0) >= 2:
                out["running_s"], out["trigger"] = now, str(getattr(dep.status_trigger, "value", dep.status_trigger))
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)  # a little load on two replicas: the new one must not break answers
    finally:
        stop.set()
        out["codes"] = await load
    return out


def test_load_scales_the_deployment_out_and_back_in(base, batch):
    # idle, with metrics flowing every 0.5 s, the policy holds the floor of one replica
    assert httpx.post(base + "/v1/models/mnist:predict", json={"instances": batch}, timeout=60).status_code == 200
    time.sleep(1.5)
    assert _running() == 1, _deployment()

    out = asyncio.run(_scale_out_under_load(base, batch))
    codes = out["codes"]
    assert out["running_s"] is not None, f"still {_deployment().replica_states} after {SCALE_OUT_BOUND_S:.0f} s of load"
    assert out["trigger"] in ("AUTOSCALING", "UPSCALE_COMPLETED"), out  # the autoscaler added it, not a redeploy
    assert codes and set(codes) == {200}, {c: codes.count(c) for c in set(codes)}  # no answer lost to the change
    print(f"scale-out: target 1->2 after {out['decided_s']:.1f} s of load, second replica running after "
          f"{out['running_s']:.1f} s ({len(codes)} requests, all 200)")

    t1 = time.monotonic()
    while time.monotonic() - t1 < SCALE_IN_BOUND_S and _running() != 1:
        time.sleep(0.25)
    back = time.monotonic() - t1
    assert _running() == 1, f"still {_deployment().replica_states} {SCALE_IN_BOUND_S:.0f} s after the load stopped"
    print(f"scale-in 2->1 replicas {back:.1f} s after the load stopped")
    r = httpx.post(base + "/v1/models/mnist:predict", json={"instances": batch}, timeout=60)
    assert r.status_code == 200 and len(r.json()["predictions"]) == len(batch)


def test_metrics_interval_must_fit_in_the_look_back_window():
    from mixfleet.earlyexit.serve.autoscale import autoscaling_config
    from mixfleet.errors import ConfigError

    assert autoscaling_config(look_back_period_s=2.0, metrics_interval_s=0.5)["metrics_interval_s"] == 0.5
    assert "metrics_interval_s" not in autoscaling_config()  # Serve's default unless asked
    with pytest.raises(ConfigError, match="metrics_interval_s=5.0"):
        autoscaling_config(look_back_period_s=2.0, metrics_interval_s=5.0)
    with pytest.raises(ConfigError, match="metrics_interval_s=0"):
        autoscaling_config(metrics_interval_s=0)
