"""Live router pieces without Ray: the emulated engine, OpenAI parsing, the router, placement, config."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from mixfleet.errors import ClusterError, InputError, Overloaded, Unavailable
from mixfleet.routing.fleet import fleet_from_dict
from mixfleet.routing.policies import make_policy
from mixfleet.routing.serve import openai_api as oa
from mixfleet.routing.serve.app import ServeOptions, placement_accelerator, placements, resolve_options
from mixfleet.routing.serve.emulated_engine import EmulatedEngine, EngineOverloaded
from mixfleet.routing.serve.router import LiveRouter, ReplicaDown

FLEET = {"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80GB", "count": 1}, {"gpu": "T4", "count": 2}]}
MODELS = ["llama-3.2-3b"]


def _fleet():
    return fleet_from_dict(FLEET)


# -- emulated engine ----------------------------------------------------------------------
def _engine(gpu="T4", **kw):
    r = next(x for x in _fleet().replicas if x.gpu == gpu)
    return r, EmulatedEngine(r.replica_id, r.perf, r.kv_tokens, r.max_batch, 8192, **kw)


async def _collect(engine, p, o):
    chunks = [c async for c in engine.generate(p, o)]
    return chunks


def test_emulated_engine_alone_takes_the_profiles_isolated_latency():
    r, eng = _engine("T4")
    chunks = asyncio.run(_collect(eng, 300, 40))
    ttft, e2e = r.perf.isolated_latency(300, 40)
    assert chunks[0].first and chunks[-1].done
    assert sum(len(c.tokens) for c in chunks) == 40
    assert chunks[-1].ttft_s == pytest.approx(ttft, rel=1e-6)
    assert chunks[-1].e2e_s == pytest.approx(e2e, rel=1e-6)


def test_emulated_engine_batches_and_every_request_gets_exactly_its_tokens():
    r, eng = _engine("A100-80GB")

    async def many():
        return await asyncio.gather(*(_collect(eng, 100 + 7 * k, 5 + k) for k in range(12)))

    out = asyncio.run(many())
    for k, chunks in enumerate(out):
        assert sum(len(c.tokens) for c in chunks) == 5 + k
        assert [c.done for c in chunks].count(True) == 1
    alone = r.perf.isolated_latency(177, 16)[1]
    # continuous batching: 12 requests together finish far sooner than 12 in a row
    assert max(c[-1].e2e_s for c in out) < 4 * alone
    assert eng.in_system() == 0


def test_emulated_engine_refuses_past_its_queue_bound_and_oversize_requests():
    r, eng = _engine("T4", max_waiting=1)

    async def flood():
        streams = [eng.submit(4000, 8) for _ in range(3)]  # KV-limited: one runs, one waits... then the bound
        return streams

    with pytest.raises(EngineOverloaded) as info:
        asyncio.run(flood())
    assert info.value.retry_after_s >= 1
    with pytest.raises(InputError, match="KV cache"):
        _engine("T4")[1].submit(r.kv_tokens, 10)


def test_engine_overloaded_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(EngineOverloaded("T4-0", 9, 2.5)))
    assert (e.replica_id, e.waiting, e.retry_after_s) == ("T4-0", 9, 2.5)


# -- OpenAI request parsing: every bad input is a clear InputError ---------------------------------
def _parse(body, kind="completion"):
    return oa.parse_request(body, kind, models=MODELS, max_context=16384)


@pytest.mark.parametrize("raw, match", [
    (b"{not json", "invalid JSON"),
    (b"", "empty request body"),
    (b"[1, 2]", "not an object"),
])
def test_bad_bodies(raw, match):
    with pytest.raises(InputError, match=match):
        oa.parse_body(raw)


@pytest.mark.parametrize("body, kind, match", [
    ({"prompt": "hi"}, "completion", "missing field 'model'"),
    ({"model": "llama-3.2-3b"}, "completion", "missing field 'prompt'"),
    ({"model": "llama-3.2-3b"}, "chat", "missing field 'messages'"),
    ({"model": "gpt-7", "prompt": "hi"}, "completion", "unknown model 'gpt-7'"),
    ({"model": "llama-3.2-3b", "prompt": "hi", "max_tokens": 0}, "completion", "must be at least 1"),
    ({"model": "llama-3.2-3b", "prompt": "hi", "max_tokens": -5}, "completion", "must be at least 1"),
    ({"model": "llama-3.2-3b", "prompt": "hi", "max_tokens": 10**9}, "completion", "exceeds the model's context"),
    ({"model": "llama-3.2-3b", "prompt": "hi", "max_tokens": "many"}, "completion", "expected an integer"),
    ({"model": "llama-3.2-3b", "prompt": list(range(16000)), "max_tokens": 1000}, "completion",
     "exceeds the context limit"),
    ({"model": "llama-3.2-3b", "prompt": ["a", "b"]}, "completion", "batched prompts"),
    ({"model": "llama-3.2-3b", "messages": []}, "chat", "non-empty list"),
    ({"model": "llama-3.2-3b", "messages": [{"role": "robot", "content": "x"}]}, "chat", "unknown role"),
    ({"model": "llama-3.2-3b", "prompt": "hi", "stream": "yes"}, "completion", "true or false"),
])
def test_bad_requests_name_the_field_and_value(body, kind, match):
    with pytest.raises(InputError, match=match):
        _parse(body, kind)


def test_good_requests_count_tokens():
    g = _parse({"model": "llama-3.2-3b", "prompt": [5, 6, 7], "max_tokens": 9, "stream": True})
    assert (g.prompt_tokens, g.max_tokens, g.stream) == (3, 9, True)
    g = _parse({"model": "llama-3.2-3b", "messages": [{"role": "user", "content": "Hello, world"}]}, "chat")
    assert g.prompt_tokens == 3 + oa.CHAT_OVERHEAD_TOKENS and g.max_tokens == 16
    chunk = oa.stream_chunk(g, "id1", " hi", first=True)
    assert chunk["choices"][0]["delta"] == {"content": " hi", "role": "assistant"}
    assert json.loads(oa.sse(chunk)[len(b"data: "):])["object"] == "chat.completion.chunk"


# -- the router, driven in-process with a fake transport -------------------------------------------
class FakeFleet:
    """Engines in this process: ``send`` streams from EmulatedEngines, and can be told to fail."""

    def __init__(self, fleet, max_waiting=64):
        self.engines = [EmulatedEngine(r.replica_id, r.perf, r.kv_tokens, r.max_batch, 8192, max_waiting=max_waiting)
                        for r in fleet.replicas]
        self.dead: set[int] = set()
        self.calls: list[int] = []

    async def send(self, i, req):
        self.calls.append(i)
        if i in self.dead:
            raise ReplicaDown(f"replica {i} is gone")
        async for c in self.engines[i].generate(req.prompt_tokens, req.max_tokens):
            yield c  # typed chunks, as from the engine deployment; a full queue raises EngineOverloaded


async def _run_one(router, req):
    routed = await router.route(req)
    n = len(routed.first.tokens)
    async for c in routed.rest:
        n += len(c.tokens)
    return routed, n


def test_router_accounting_returns_to_zero_and_follows_the_policy():
    from mixfleet.routing.policy import Request

    fleet = _fleet()
    fake = FakeFleet(fleet)
    router = LiveRouter(fleet, make_policy("least_work_left", fleet), fake.send, ServeOptions(max_outstanding=100))

    async def go():
        return await asyncio.gather(*(_run_one(router, Request(k, 200, 20)) for k in range(9)))

    out = asyncio.run(go())
    assert all(n == 20 for _, n in out)
    assert router.state.outstanding == [0, 0, 0] and router.state.work_s == [0.0, 0.0, 0.0]
    # the same policy object, driven as the simulator drives it, makes the same choices
    from mixfleet.routing.policy import RouterState

    state, pol, expected = RouterState.from_fleet(fleet), make_policy("least_work_left", fleet), [0, 0, 0]
    for k in range(9):
        req = Request(k, 200, 20)
        i = pol.choose(req, state)
        state.on_dispatch(i, req)
        expected[i] += 1
    assert router.served == expected and router.retried == 0


def test_router_sends_elsewhere_when_a_replica_queue_is_full():
    from mixfleet.routing.policy import Request

    fleet = _fleet()
    fake = FakeFleet(fleet, max_waiting=1)
    router = LiveRouter(fleet, make_policy("least_work_left", fleet), fake.send, ServeOptions(max_outstanding=100))

    async def go():
        return await asyncio.gather(*(_run_one(router, Request(k, 3000, 20)) for k in range(6)))

    out = asyncio.run(go())
    assert all(n == 20 for _, n in out)
    assert router.retried > 0 and all(n > 0 for n in router.served)
    assert router.state.outstanding == [0, 0, 0]


def test_router_reroutes_around_a_dead_replica_and_tells_the_policy():
    from mixfleet.routing.policy import Request

    fleet = _fleet()
    fake = FakeFleet(fleet)
    seen = []

    class Spy(type(make_policy("least_work_left", fleet))):
        def observe(self, telemetry, state):
            seen.append(list(state.healthy))

    router = LiveRouter(fleet, Spy(), fake.send, ServeOptions(max_outstanding=100))
    fake.dead.add(0)
    routed, n = asyncio.run(_run_one(router, Request(1, 100, 5)))
    assert n == 5 and routed.index != 0 and routed.attempts == 2
    assert router.state.healthy[0] is False and seen and seen[-1][0] is False
    assert router.state.outstanding == [0, 0, 0]
    router.mark_up(0)
    assert router.state.healthy[0] is True


def test_router_refuses_beyond_its_bound_and_when_nothing_is_left():
    from mixfleet.routing.policy import Request

    fleet = _fleet()
    fake = FakeFleet(fleet)
    router = LiveRouter(fleet, make_policy("round_robin", fleet), fake.send, ServeOptions(max_outstanding=2))

    async def go():
        a = await router.route(Request(1, 100, 50))
        b = await router.route(Request(2, 100, 50))
        with pytest.raises(Overloaded) as info:
            await router.route(Request(3, 100, 50))
        assert info.value.retry_after_s >= 1
        await a.rest.aclose()
        await b.rest.aclose()
        assert router.state.outstanding == [0, 0, 0]
        fake.dead.update({0, 1, 2})
        with pytest.raises(Unavailable):
            await router.route(Request(4, 100, 5))

    asyncio.run(go())


# -- placement and config ------------------------------------------------------------------------
def test_placement_prefers_the_exact_type_then_rays_family_name_else_fails_clearly():
    assert placement_accelerator("A100-80G", {"A100-80G": 2, "A100": 2}) == "A100-80G"
    assert placement_accelerator("A100-80G", {"A100": 2, "T4": 2}) == "A100"
    with pytest.raises(ClusterError, match="no node of the cluster has GPU type 'V100'.*A100, T4"):
        placement_accelerator("V100", {"A100": 2, "T4": 2})
    with pytest.raises(ClusterError, match="needs 2 GPUs of type T4"):
        placements(_fleet(), ServeOptions(), {"A100": 2, "T4": 1})


def test_resolved_options_bound_and_unknown_policy():
    opts = resolve_options(_fleet(), ServeOptions(max_waiting=10))
    assert isinstance(opts, ServeOptions) and opts.max_outstanding == 3 * 64 + 10 and opts.policy == "ilp"
    with pytest.raises(InputError, match="unknown policy 'fastest'"):
        resolve_options(_fleet(), ServeOptions(policy="fastest"))


def test_no_deployment_on_the_request_path_writes_an_access_log_line_per_request():
    from mixfleet.routing.serve.app import build_app

    ingress = build_app(_fleet())._bound_deployment  # Serve has no public way to list an unrun app's deployments
    engines = [a._bound_deployment for a in ingress.init_args[1].values()]
    assert sorted(d.name for d in engines) == ["engine-A100-80GB-0", "engine-T4-0", "engine-T4-1"]
    for dep in [ingress, *engines]:
        assert dep.logging_config["enable_access_log"] is False, dep.name


def test_serve_config_yaml_is_a_valid_serve_deploy_config(repo_root):
    from ray.serve.schema import ServeDeploySchema

    from mixfleet.routing.serve.app import BuilderArgs

    path = repo_root / "mixfleet/routing/serve/serve_config.yaml"
    cfg = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(cfg) if hasattr(ServeDeploySchema, "model_validate") else \
        ServeDeploySchema.parse_obj(cfg)
    app = schema.applications[0]
    assert app.import_path == "mixfleet.routing.serve.app:app_builder"
    args = BuilderArgs.model_validate(app.args)
    assert (repo_root / args.fleet).is_file()
    fleet_gpus = {p["gpu"] for p in yaml.safe_load((repo_root / args.fleet).read_text())["pools"]}
    assert fleet_gpus == {"A100-80GB", "V100-32GB", "T4"}
    from mixfleet.routing.serve.app import app_builder

    with pytest.raises(Exception, match="fleet"):
        app_builder({"fleet": "no/such/fleet.yaml"})


# -- the tiny torch engine (a real tiny model; CUDA in production, CPU here only to check the logic) -------
def _tiny_run(device):
    from mixfleet.routing.serve.tiny_engine import TinyTorchEngine

    eng = TinyTorchEngine("T4-0", device=device, window=32)

    async def go():
        return await asyncio.gather(_collect(eng, 20, 5), _collect(eng, 7, 3))

    a, b = asyncio.run(go())
    assert [len(x) for x in (a, b)] == [5, 3] and a[-1].done and b[-1].done and a[0].first
    assert all(0 <= t < eng.vocab for c in a + b for t in c.tokens)
    assert eng.stats()["tokens"] == 8 and eng.in_system() == 0


def test_tiny_torch_engine_streams_exactly_max_tokens_on_cpu():
    _tiny_run("cpu")


@pytest.mark.gpu
def test_tiny_torch_engine_on_cuda():
    _tiny_run("cuda")


def test_tiny_torch_engine_is_refused_without_cuda():
    import torch

    from mixfleet.routing.serve.tiny_engine import check_cuda

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ClusterError, match="needs a CUDA GPU"):
        check_cuda()
