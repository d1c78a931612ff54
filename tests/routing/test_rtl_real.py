"""A mixed fleet behind the live router: one REAL engine replica (engine: torch; transformers continuous
batching over a seeded random tiny Llama: real compute, random weights) next to an EMULATED T4.

The openai client and gRPC get the real replica's tokens, which equal an offline ``generate`` of the
same prompt with the same weights seed; the emulated replica answers through the same API.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest

pytestmark = pytest.mark.multinode

MODEL = "tiny-llama"
BIND_CPU = max(os.sched_getaffinity(0))  # the real replica is bound to this core (cpu_bind)
FLEET = {"model": MODEL, "pools": [{"gpu": "CPU", "count": 1, "engine": "torch"}, {"gpu": "T4", "count": 1}],
         "max_batch": 8, "max_batched_tokens": 128}


@pytest.fixture(scope="module")
def live(ray_cluster, wait_ready):
    from mixfleet.platform.bootstrap import free_port
    from mixfleet.platform.serving import delete_app, serve_ports, start_serve, stop_serve
    from mixfleet.routing.fleet import fleet_from_dict
    from mixfleet.routing.serve import APP_NAME, ServeOptions, deploy
    from mixfleet.routing.serve.app import GRPC_SERVICER

    ports = serve_ports()
    if ports is None or ports.grpc_port_for(GRPC_SERVICER) is None:
        if ports is not None:
            stop_serve()
        start_serve(http_port=free_port(), grpc_port=free_port())
        ports = serve_ports()
    deploy(fleet_from_dict(FLEET), ServeOptions(policy="round_robin", device="cpu", telemetry_interval_s=1.0,
                                                cpu_bind=str(BIND_CPU)))
    base = f"http://127.0.0.1:{ports.http_port}"
    wait_ready(base + "/health")
    yield base, ports.grpc_port_for(GRPC_SERVICER)
    delete_app(APP_NAME)


def _offline(ids, n):
    from mixfleet.routing.torch_model import model_config, offline_generate

    return offline_generate(model_config(MODEL), ids, n)


def test_openai_client_gets_the_real_models_tokens_and_the_emulated_replica_answers_too(live):
    import openai

    from mixfleet.routing.torch_model import encode_chat, encode_text

    base, _ = live
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    engines = {}
    for _ in range(2):  # round robin: one request to each replica
        raw = client.completions.with_raw_response.create(model=MODEL, prompt="Hello, fleet!", max_tokens=10)
        resp = raw.parse()
        engines[raw.headers["x-mixfleet-engine"]] = resp
    assert set(engines) == {"torch", "emulated"}
    real = engines["torch"]
    assert real.system_fingerprint.startswith("mixfleet-torch") and "random weights" in real.system_fingerprint
    want = _offline(encode_text("Hello, fleet!"), 10)
    assert [ord(c) for c in real.choices[0].text] == want == real.model_extra["mixfleet"]["token_ids"]
    assert real.usage.prompt_tokens == len("Hello, fleet!")  # byte-level tokens
    assert engines["emulated"].system_fingerprint == "mixfleet-emulated"

    msgs = [{"role": "user", "content": "Which GPU?"}]
    for _ in range(2):  # chat streaming, on both replicas in turn
        with client.chat.completions.with_streaming_response.create(model=MODEL, messages=msgs, max_tokens=8,
                                                                      stream=True) as raw:
            engine = raw.headers["x-mixfleet-engine"]
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        if engine == "torch":
            assert [ord(c) for c in text] == _offline(encode_chat(msgs), 8)
        else:
            assert len(text.split()) == 8

    # the hidden true length (trace replay) stops the real model early: finish_reason "stop"
    stops = [client.completions.create(model=MODEL, prompt="Hello, fleet!", max_tokens=10,
                                       extra_body={"true_output_tokens": 4}) for _ in range(2)]
    assert sorted((s.choices[0].finish_reason, s.usage.completion_tokens) for s in stops) == [("stop", 4)] * 2


def test_grpc_streams_the_real_tokens_and_bad_input_is_400(live):
    import grpc

    from mixfleet.routing.serve.proto import llm_pb2, llm_pb2_grpc
    from mixfleet.routing.torch_model import encode_text

    base, grpc_port = live
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        got = {}
        for _ in range(2):
            chunks = list(stub.GenerateStream(llm_pb2.GenerateRequest(model=MODEL, prompt="grpc", max_tokens=6),
                                              metadata=(("application", "mixfleet-llm"),), timeout=60))
            got[chunks[0].accelerator] = "".join(c.text for c in chunks)
    assert [ord(c) for c in got["CPU"]] == _offline(encode_text("grpc"), 6)
    r = httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": [300, 1], "max_tokens": 4}, timeout=30)
    assert r.status_code == 400 and "bytes" in r.json()["error"]["message"]
    health = httpx.get(base + "/health", timeout=30).json()
    assert health["healthy_replicas"] == 2 and "torch" in health["engine"] and "emulated" in health["engine"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="binding to one core of one changes nothing")
def test_the_real_replica_runs_on_the_core_it_was_bound_to(live):
    """``cpu_bind``: every thread of the real replica's process (the engine's compute thread, Serve's and
    Ray's) may run only on the bound core; the emulated replica is not bound."""
    base, _ = live
    deadline = time.monotonic() + 60
    while True:
        placement = httpx.get(base + "/v1/mixfleet/stats", timeout=10).json()["placement"]
        if len(placement) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    real = next(p for p in placement.values() if p["engine"] == "torch")
    emulated = next(p for p in placement.values() if p["engine"] == "emulated")
    assert real["cpus"] == real["process_cpus"] == [BIND_CPU]
    assert emulated["cpus"] is None and len(emulated["process_cpus"]) > 1


def test_the_real_replica_times_its_own_iterations_under_traffic(live):
    """A served profile: the real replica times every iteration it runs for the requests it serves (in its
    own process, as served) and hands them back as fit points; the emulated replica has no such engine."""
    from ray import serve

    from mixfleet.routing import profiler
    from mixfleet.routing.serve import APP_NAME

    base, _ = live
    real = serve.get_deployment_handle("engine-CPU-0", app_name=APP_NAME)
    assert real.time_iterations.remote(True).result() is True
    try:
        for n in (40, 120):  # answered by either replica (round robin): two rounds reach the real one
            for _ in range(2):
                r = httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": [65] * n, "max_tokens": 24},
                               timeout=120)
                assert r.status_code == 200
    finally:
        points = real.time_iterations.remote(False).result()
    assert points and all(p["kind"] == "step" and p["phase"] == "served" and p["time_s"] > 0 for p in points)
    assert any(p["tokens"] == p["sequences"] == 1 for p in points)  # decode steps of the one request
    assert profiler.fit(points + [{"kind": "prefill", "tokens": 64, "kv": 0, "sq": 4096, "time_s": 0.01}])
    assert real.time_iterations.remote(False).result() == []  # stopped: nothing more is timed
    emulated = serve.get_deployment_handle("engine-T4-0", app_name=APP_NAME)
    with pytest.raises(Exception, match="engine: torch"):
        emulated.time_iterations.remote(True).result()


def test_a_served_profile_sends_the_burst_and_the_trickle_through_the_application(live):
    """``served_profile_points``: the profiler's burst and trickle (small here) go through the HTTP API while
    the real replica times its iterations; a fit on them plus an offline grid point gives a usable profile."""
    from mixfleet.routing import profiler
    from mixfleet.routing.serve.replay import served_profile_points

    base, _ = live
    grid = profiler.Grid(burst=4, trickle=6, trickle_rate=20.0)
    points = served_profile_points(base, MODEL, ["CPU-0"], FLEET["max_batched_tokens"], 256, 120, grid=grid)
    assert points and {p["phase"] for p in points} == {"served"}
    assert any(p["sq"] > 0 for p in points)  # a prompt chunk: the burst's prefills were timed, not only decodes
    coef = profiler.fit(points + [{"kind": "prefill", "tokens": 64, "kv": 0, "sq": 4096, "time_s": 0.01}])
    assert coef["overhead_ms"] + coef["per_token_ms"] > 0


def test_the_profile_command_profiles_a_running_router_as_served(live, cli, ray_cluster, tmp_path):
    """`mixfleet routing profile --served URL`: another process joins the router's cluster, sends the profiler's
    burst and trickle (quick grid) through the running application while its real replica times its own
    iterations, and writes a profile the simulator accepts. The emulated replica is left out, and asking for
    it alone is refused with a line naming it; the router keeps serving afterwards."""
    from mixfleet.routing.profiles import FittedIterationModel, load_profiles

    base, _ = live
    out = tmp_path / "served.yaml"
    r = cli("routing", "profile", "--served", base + "/v1", "--address", ray_cluster.address, "--quick",
            "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    got = r.json()
    assert got["served"] == {"url": base, "replicas": ["CPU-0"]} and got["gpu"] == "CPU" and got["device"] == "cpu"
    assert got["points"] and {p["phase"] for p in got["points"]} == {"served"}
    assert "served:" in out.read_text()  # the header sums the served iterations up
    perf = load_profiles(out).iteration_model("CPU", MODEL)
    assert isinstance(perf, FittedIterationModel) and perf.kv_tokens == got["entry"]["kv_tokens"]
    assert 0 < perf.decode_step(1, 64) < perf.decode_step(8, 2048)

    r = cli("routing", "profile", "--served", base, "--address", ray_cluster.address, "--replica", "T4-0",
            "--out", tmp_path / "t4.yaml")
    assert r.returncode != 0 and "no real-engine replica" in r.error_line and "emulated" in r.error_line
    assert not (tmp_path / "t4.yaml").exists()
    assert httpx.get(base + "/health", timeout=10).status_code == 200


def test_the_profile_command_says_when_no_router_answers_at_the_url(cli, tmp_path):
    from mixfleet.platform.bootstrap import free_port

    url = f"http://127.0.0.1:{free_port()}"
    r = cli("routing", "profile", "--served", url, "--out", tmp_path / "p.yaml")
    assert r.returncode != 0 and f"no mixfleet router answers at '{url}'" in r.error_line
    assert not (tmp_path / "p.yaml").exists()
