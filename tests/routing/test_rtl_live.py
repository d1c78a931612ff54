"""The live router on an emulated A100/V100/T4 cluster: placement, plan-following traffic,
the OpenAI client, gRPC, bad input, overload and a replica killed under load.

GPU nodes and engines are EMULATED (see mixfleet.routing.serve). One application
is deployed for the module and deleted at its end.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

pytestmark = pytest.mark.multinode

MODEL = "llama-3.2-3b"
FLEET = {"model": MODEL, "pools": [{"gpu": "A100-80GB", "count": 1}, {"gpu": "V100-32GB", "count": 1},
                                   {"gpu": "T4", "count": 2}]}
BOUND = 16




class Live:
    def __init__(self, fleet, http_port, grpc_port):
        self.fleet, self.http_port, self.grpc_port = fleet, http_port, grpc_port
        self.base = f"http://127.0.0.1:{http_port}"

    def stats(self) -> dict:
        return httpx.get(self.base + "/v1/mixfleet/stats", timeout=30).json()


@pytest.fixture(scope="module")
def live(ray_cluster):
    from mixfleet.platform.bootstrap import free_port
    from mixfleet.platform.serving import delete_app, serve_ports, start_serve, stop_serve
    from mixfleet.routing.fleet import fleet_from_dict
    from mixfleet.routing.serve import APP_NAME, ServeOptions, deploy
    from mixfleet.routing.serve.app import GRPC_SERVICER

    ports = serve_ports()
    if ports is None or ports.grpc_port_for(GRPC_SERVICER) is None:  # not up, or up without gRPC
        if ports is not None:
            stop_serve()
        start_serve(http_port=free_port(), grpc_port=free_port())
        ports = serve_ports()
    fleet = fleet_from_dict(FLEET)
    deploy(fleet, ServeOptions(max_outstanding=BOUND, max_waiting=8, telemetry_interval_s=1.0))
    lv = Live(fleet, ports.http_port, ports.grpc_port_for(GRPC_SERVICER))
    deadline = time.monotonic() + 60
    while len(lv.stats()["placement"]) < len(fleet.replicas) and time.monotonic() < deadline:
        time.sleep(0.5)
    yield lv
    delete_app(APP_NAME)


def _completion(live, prompt, max_tokens, **kw):
    return httpx.post(live.base + "/v1/completions", json={"model": MODEL, "prompt": prompt,
                                                           "max_tokens": max_tokens, **kw}, timeout=60)


def test_replicas_land_only_on_nodes_of_their_gpu_type(live):
    import ray

    acc_of = {}
    for n in ray.nodes():
        for key in n["Resources"]:
            if key.startswith("accelerator_type:"):
                acc_of[n["NodeID"]] = key.split(":", 1)[1]
    placement = live.stats()["placement"]
    assert set(placement) == {r.replica_id for r in live.fleet.replicas}
    for r in live.fleet.replicas:
        where = placement[r.replica_id]
        assert where["emulated"] is True and where["gpu_index"] is not None
        # A100-80G asks for Ray's "A100" family label, the only A100 label the emulated nodes carry
        assert acc_of[where["node_id"]] == r.accelerator.split("-")[0] if r.gpu == "A100-80GB" else r.accelerator


def _trace_rows(n, max_output):
    from mixfleet.routing.traces import open_trace

    return [r for r in open_trace("azure-conv").head(400) if r.output <= max_output and r.prompt <= 3000][:n]


def test_live_router_makes_the_same_choices_as_the_policy_offline(live):
    """One code path: the live ingress and an offline copy of the same policy pick the same replicas."""
    from mixfleet.routing.policy import Request, RouterState
    from mixfleet.routing.serve import ServeOptions
    from mixfleet.routing.serve.app import resolve_options
    from mixfleet.routing.serve.router import make_live_policy

    rows = _trace_rows(16, 40)
    solves0 = live.stats()["policy"]["solves"]
    live_choice = []
    with httpx.Client(timeout=60) as client:
        for r in rows:  # one at a time: each choice sees an idle fleet, as the offline replay does
            resp = client.post(live.base + "/v1/completions", json={"model": MODEL, "prompt": [7] * r.prompt,
                                                                    "max_tokens": r.output})
            assert resp.status_code == 200, resp.text
            live_choice.append(resp.headers["x-mixfleet-replica"])
    if live.stats()["policy"]["solves"] != solves0:
        pytest.skip("the live policy re-planned mid-test (a telemetry change); choices are not comparable")
    policy = make_live_policy(live.fleet, resolve_options(live.fleet, ServeOptions(max_outstanding=BOUND)))
    state = RouterState.from_fleet(live.fleet)
    offline = []
    for k, r in enumerate(rows):
        req = Request(k, r.prompt, r.output)
        i = policy.choose(req, state)
        state.on_dispatch(i, req)
        state.on_complete(i, req)
        offline.append(state.ids[i])
    assert live_choice == offline


def test_a100_gets_more_traffic_than_t4_under_load(live):
    rows = _trace_rows(40, 120)
    before = live.stats()

    async def drive():
        sem = asyncio.Semaphore(8)
        async with httpx.AsyncClient(timeout=120) as client:
            async def one(r):
                async with sem:
                    resp = await client.post(live.base + "/v1/completions", json={
                        "model": MODEL, "prompt": [7] * r.prompt, "max_tokens": r.output})
                    assert resp.status_code == 200, resp.text
                    assert resp.json()["usage"]["completion_tokens"] == r.output
                    return resp.headers["x-mixfleet-accelerator"]
            return await asyncio.gather(*(one(r) for r in rows))

    served = asyncio.run(drive())
    per_replica = {g: served.count(g) / sum(1 for r in live.fleet.replicas if r.gpu == g) for g in ("A100-80GB", "T4")}
    assert per_replica["A100-80GB"] > per_replica["T4"], served
    after = live.stats()
    delta = {g: after["counts"]["by_gpu"][g] - before["counts"]["by_gpu"][g] for g in after["counts"]["by_gpu"]}
    assert delta == {g: served.count(g) for g in delta}  # the router's own counts agree with the headers
    assert all(v == 0 for v in after["outstanding"].values())  # accounting drained


def test_official_openai_client_gets_completions_and_streams(live):
    import openai

    client = openai.OpenAI(base_url=live.base + "/v1", api_key="unused", max_retries=0)
    raw = client.completions.with_raw_response.create(model=MODEL, prompt="Say hello to the fleet", max_tokens=12)
    assert raw.headers["x-mixfleet-accelerator"] in {"A100-80GB", "V100-32GB", "T4"}
    c = raw.parse()
    assert c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 12 and c.choices[0].text.strip()
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi there"}],
                                          max_tokens=7)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 7
    pieces, reasons = [], []
    for chunk in client.completions.create(model=MODEL, prompt="stream please", max_tokens=30, stream=True):
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert len("".join(pieces).split()) == 30 and reasons[-1] == "length" and len(pieces) >= 3
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}], max_tokens=25,
                                            stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert len(text.split()) == 25 and usage.completion_tokens == 25
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_health_and_every_response_names_the_accelerator(live):
    r = httpx.get(live.base + "/health", timeout=30)
    assert r.status_code == 200 and r.json()["healthy_replicas"] == 4 and r.json()["emulated"] is True
    assert r.headers["x-mixfleet-accelerator"] == "none"
    assert httpx.get(live.base + "/v1/models", timeout=30).headers["x-mixfleet-accelerator"] == "none"


@pytest.mark.parametrize("path, body, needle", [
    ("/v1/completions", b"{\"model\": ", "invalid JSON"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 4}, "missing field 'model'"),
    ("/v1/completions", {"model": MODEL, "max_tokens": 4}, "missing field 'prompt'"),
    ("/v1/chat/completions", {"model": MODEL}, "missing field 'messages'"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 0}, "'max_tokens' 0"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": -3}, "'max_tokens' -3"),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 5_000_000}, "'max_tokens' 5000000"),
    ("/v1/completions", {"model": MODEL, "prompt": [1] * 16380, "max_tokens": 100}, "exceeds the context limit"),
    ("/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
     "unknown model 'gpt-4o'"),
])
def test_bad_input_is_a_400_naming_the_problem(live, path, body, needle):
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(live.base + path, timeout=30, headers={"content-type": "application/json"}, **kw)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"] == "invalid_request_error"
    assert r.headers["x-mixfleet-accelerator"] == "none"


def _stub(live):
    import grpc

    from mixfleet.routing.serve.proto import llm_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{live.grpc_port}")
    return channel, llm_pb2_grpc.LLMServiceStub(channel)


MD = (("application", "mixfleet-llm"),)


def test_grpc_generate_unary_streaming_and_bad_input(live):
    import grpc

    from mixfleet.routing.serve.proto import llm_pb2

    channel, stub = _stub(live)
    with channel:
        reply = stub.Generate(llm_pb2.GenerateRequest(model=MODEL, prompt="hello grpc", max_tokens=9),
                              metadata=MD, timeout=60)
        assert reply.completion_tokens == 9 and reply.prompt_tokens == 2 and reply.finish_reason == "length"
        assert reply.accelerator in {"A100-80GB", "V100-32GB", "T4"} and reply.replica_id
        chunks = list(stub.GenerateStream(llm_pb2.GenerateRequest(model=MODEL, prompt_token_ids=[3] * 50,
                                                                  max_tokens=40), metadata=MD, timeout=60))
        assert sum(c.completion_tokens for c in chunks) == 40 and chunks[-1].done and len(chunks) >= 2
        assert len({c.replica_id for c in chunks}) == 1
        with pytest.raises(grpc.RpcError) as info:
            stub.Generate(llm_pb2.GenerateRequest(model=MODEL, prompt="x", max_tokens=-1), metadata=MD, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in info.value.details()


def test_overload_gives_429_with_retry_after_and_grpc_resource_exhausted(live):
    import grpc

    from mixfleet.routing.serve.proto import llm_pb2

    grpc_result = {}

    async def flood():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
            async def one():
                return await client.post(live.base + "/v1/completions",
                                         json={"model": MODEL, "prompt": [5] * 100, "max_tokens": 600})

            tasks = [asyncio.create_task(one()) for _ in range(3 * BOUND)]
            for _ in range(100):  # wait until the bound is full: then gRPC must be refused too
                st = (await client.get(live.base + "/v1/mixfleet/stats")).json()
                if sum(st["outstanding"].values()) >= BOUND:
                    break
                await asyncio.sleep(0.05)

            def grpc_call():
                channel, stub = _stub(live)
                with channel:
                    try:
                        stub.Generate(llm_pb2.GenerateRequest(model=MODEL, prompt="x", max_tokens=5), metadata=MD,
                                      timeout=60)
                        grpc_result["code"] = grpc.StatusCode.OK
                    except grpc.RpcError as exc:
                        grpc_result["code"] = exc.code()
                        grpc_result["details"] = exc.details()

            await asyncio.to_thread(grpc_call)
            return await asyncio.wait_for(asyncio.gather(*tasks), timeout=90)  # nothing hangs

    t0 = time.monotonic()
    responses = asyncio.run(flood())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429} and codes.count(200) >= BOUND // 2 and codes.count(429) >= BOUND
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and "in flight" in refused.json()["error"]["message"]
    assert grpc_result["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert re.search(r"retry after \d+ s", grpc_result["details"]), grpc_result
    assert time.monotonic() - t0 < 90
    assert _completion(live, "after the storm", 3).status_code == 200  # it recovers


def _poll(fn, timeout_s: float, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def test_a_throttled_gpu_slows_its_engine_and_the_ilp_replans(live):
    """Telemetry path: hub condition -> the replica's engine runs slower -> router speed factor -> re-plan."""
    from ray import serve

    from mixfleet.platform.telemetry import clear_gpu_condition, set_gpu_condition, start_agents
    from mixfleet.routing.serve import APP_NAME

    start_agents()
    victim = "V100-32GB-0"
    st = live.stats()
    where, solves0 = st["placement"][victim], st["policy"]["solves"]
    engine = serve.get_deployment_handle(f"engine-{victim}", APP_NAME)
    set_gpu_condition(where["node_id"], where["gpu_index"], 0.4)
    try:
        assert _poll(lambda: engine.stats.remote().result()["speed"] == 0.4, 30), "the engine never slowed down"
        assert _poll(lambda: (lambda s: s["speed"][victim] < 0.5 and s["policy"]["solves"] > solves0)(live.stats()),
                     30), live.stats()["speed"]
    finally:
        clear_gpu_condition(where["node_id"], where["gpu_index"])
    assert _poll(lambda: engine.stats.remote().result()["speed"] == 1.0, 30)
    assert _poll(lambda: live.stats()["speed"][victim] > 0.9, 30)  # and the router sees it recover


def test_killing_a_replica_under_load_reroutes_or_fails_fast_and_the_plan_adapts(live):
    import ray

    before = live.stats()
    solves0 = before["policy"]["solves"]
    body = {"model": MODEL, "prompt": [9] * 400, "max_tokens": 60}
    victim = {}

    async def drive():
        async with httpx.AsyncClient(timeout=120) as client:
            async def one(k):
                await asyncio.sleep(0.1 * k)
                t = time.monotonic()
                r = await client.post(live.base + "/v1/completions", json=body)
                return k, r, time.monotonic() - t

            tasks = [asyncio.create_task(one(k)) for k in range(30)]
            await asyncio.sleep(1.0)
            out = (await client.get(live.base + "/v1/mixfleet/stats")).json()["outstanding"]
            victim["id"] = max(out, key=out.get)  # the busiest replica dies, with requests on it
            victim["t"] = time.monotonic()
            name = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                        if f"engine-{victim['id']}#" in a["name"])
            ray.kill(ray.get_actor(name["name"], namespace=name["namespace"]), no_restart=True)
            return await asyncio.wait_for(asyncio.gather(*tasks), timeout=100)  # nothing hangs

    results = asyncio.run(drive())
    codes = [r.status_code for _, r, _ in results]
    assert set(codes) <= {200, 429, 503} and codes.count(200) >= 24, codes
    for _, r, dt in results:
        if r.status_code != 200:  # failed fast, with a clear error and a hint when to come back
            assert dt < 35 and int(r.headers["retry-after"]) >= 1 and r.json()["error"]["message"]
    after = live.stats()
    assert after["retried"] > before["retried"]  # its in-flight requests were re-routed
    assert after["policy"]["solves"] > solves0  # the ILP re-planned around the lost replica
    # requests sent well after the kill went elsewhere while it was down
    late = [r.headers["x-mixfleet-replica"] for k, r, _ in results if 14 <= k < 24 and r.status_code == 200]
    assert late and victim["id"] not in late


def test_a_trace_replay_times_every_request_from_its_scheduled_arrival_and_splits_the_overhead(live):
    """The load generator the benchmarks use: each row is a streamed completion sent at its arrival time;
    latencies count from that time, and the engine's own stamps split client-seen time into its parts."""
    from mixfleet.routing.serve.replay import replay
    from mixfleet.routing.traces import TraceRow

    rows = [TraceRow(0.0, 20, 5), TraceRow(0.1, 40, 3), TraceRow(0.2, 10, 8), TraceRow(0.2, 30, 2)]
    out = asyncio.run(replay(live.base, MODEL, rows, 120))
    assert out["failed"] == [] and out["requests"] == 4 and sum(out["by_gpu"].values()) == 4
    assert set(out["by_gpu"]) <= {r.gpu for r in live.fleet.replicas}
    for k in range(len(rows)):
        got = out["per_request"][k]
        assert 0 < got["ttft"] <= got["e2e"] and got["engine_e2e"] is not None
        assert got["engine_e2e"] <= got["e2e"] and got["to_engine"] >= 0
        assert got["replica"] in {rep.replica_id for rep in live.fleet.replicas}
    assert out["p50_e2e_s"] <= out["p99_e2e_s"]
