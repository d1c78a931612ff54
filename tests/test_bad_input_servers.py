"""Malformed request bodies are 4xx, never 500: the routing OpenAI API and the early-exit KServe endpoint.

The request parsers are swept offline (no Ray): every body must end as an
InputError (what both servers answer 400 / INVALID_ARGUMENT) and never as
any other exception (a 500). The early-exit HTTP endpoint is swept live on
the session's Serve as well.
"""

from __future__ import annotations

import json

import httpx
import pytest

from mixfleet.errors import InputError

DEEP = b"[" * 5000 + b"]" * 5000
IMAGE = [[0.5] * 28] * 28
ROW_OF_27 = [0.5] * 27

# raw bodies every JSON endpoint must refuse, whatever fields it expects
PATHOLOGICAL = [
    b"", b"   ", b"{", b"nul", b"\xff\xfe\x00", b"[]", b"3", b'"text"', b"null", DEEP,
    b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
    b'{"a": 1e999}', b'{"a": -1e400}', b'{"a": ' + b"9" * 5000 + b"}", b'{"a": 1,}', b"{'a': 1}",
]

COMPLETION_BODIES = [
    {}, {"model": "m"}, {"prompt": "hi"}, {"model": None, "prompt": "hi"}, {"model": ["m"], "prompt": "hi"},
    {"model": {"m": 1}, "prompt": "hi"}, {"model": "m", "prompt": None}, {"model": "m", "prompt": 5},
    {"model": "m", "prompt": [1.5, 2]}, {"model": "m", "prompt": [-1]}, {"model": "m", "prompt": [True, False]},
    {"model": "m", "prompt": ["a", "b"]}, {"model": "m", "prompt": [[[[["deep"]]]]]}, {"model": "m", "prompt": {}},
    {"model": "m", "prompt": "hi", "max_tokens": "16"}, {"model": "m", "prompt": "hi", "max_tokens": 16.5},
    {"model": "m", "prompt": "hi", "max_tokens": True}, {"model": "m", "prompt": "hi", "max_tokens": -3},
    {"model": "m", "prompt": "hi", "max_tokens": 10 ** 30}, {"model": "m", "prompt": "hi", "max_tokens": [16]},
    {"model": "m", "prompt": "hi", "stream": "yes"}, {"model": "m", "prompt": "hi", "stream": 1},
    {"model": "m", "prompt": "hi", "n": 2}, {"model": "m", "prompt": "hi", "n": True},
    {"model": "m", "prompt": "hi", "n": "1"}, {"model": "m", "prompt": "hi", "stream_options": [1]},
    {"model": "m", "prompt": "hi", "stream_options": {"include_usage": "yes"}},
]

CHAT_BODIES = [
    {"model": "m"}, {"model": "m", "messages": "hi"}, {"model": "m", "messages": []}, {"model": "m", "messages": [1]},
    {"model": "m", "messages": [{"content": "x"}]}, {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
    {"model": "m", "messages": [{"role": ["user"], "content": "x"}]},
    {"model": "m", "messages": [{"role": {"a": 1}, "content": "x"}]},
    {"model": "m", "messages": [{"role": "user", "content": 5}]},
    {"model": "m", "messages": [{"role": "user", "content": None}]},
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": ["x"]}]}]},
    {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": "9"},
]

INSTANCE_BODIES = [
    {}, {"instances": None}, {"instances": "abc"}, {"instances": []}, {"instances": {}}, {"instances": [None]},
    {"instances": [{}]}, {"instances": [[["0.5"] * 28] * 28]}, {"instances": [[ROW_OF_27 + [True]] * 28]},
    {"instances": [[ROW_OF_27 + [None]] * 28]}, {"instances": [[ROW_OF_27 + ["x"]] * 28]},
    {"instances": [[ROW_OF_27] * 28]}, {"instances": [IMAGE, [[0.5] * 28] * 27]}, {"instances": [[0.5, [0.5]]]},
    {"instances": [IMAGE, 5]}, {"instances": [[[2.0] * 28] * 28]}, {"instances": [[[-0.5] * 28] * 28]},
    {"instances": [IMAGE] * 65}, {"instances": [[[[IMAGE]]]]}, {"instances": [True]}, {"instances": [[[[]]]]},
]


def _routing(body: bytes, kind: str):
    from mixfleet.routing.serve import openai_api as oa

    return oa.parse_request(oa.parse_body(body), kind, models=["m"], max_context=4096)


def _earlyexit(body: bytes):
    from mixfleet.earlyexit.inputs import parse_instances
    from mixfleet.platform.jsonbody import loads_body

    return parse_instances(loads_body(body), (1, 28, 28), 64)


def _encoded(bodies: list) -> list[bytes]:
    return [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bodies]


@pytest.mark.parametrize("body", PATHOLOGICAL + _encoded(COMPLETION_BODIES), ids=repr)
def test_routing_completion_bodies_are_input_errors(body):
    with pytest.raises(InputError):
        _routing(body, "completion")


@pytest.mark.parametrize("body", PATHOLOGICAL + _encoded(CHAT_BODIES), ids=repr)
def test_routing_chat_bodies_are_input_errors(body):
    with pytest.raises(InputError):
        _routing(body, "chat")


@pytest.mark.parametrize("body", PATHOLOGICAL + _encoded(INSTANCE_BODIES), ids=repr)
def test_earlyexit_bodies_are_input_errors(body):
    with pytest.raises(InputError):
        _earlyexit(body)


def test_good_bodies_still_parse():
    assert _routing(b'{"model": "m", "prompt": "hello there", "max_tokens": 4, "n": 1}', "completion").max_tokens == 4
    chat = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert _routing(json.dumps(chat).encode(), "chat").prompt_tokens > 0
    assert _earlyexit(json.dumps({"instances": [IMAGE, [[0, 1] * 14] * 28]}).encode()).shape == (2, 1, 28, 28)


@pytest.fixture(scope="module")
def ee_base(ray_local, wait_ready):
    """The early-exit app on the session's Serve (started here only if no test started it yet)."""
    from ray import serve

    from mixfleet.earlyexit.serve.app import deploy
    from mixfleet.platform.bootstrap import free_port
    from mixfleet.platform.serving import serve_ports, start_serve

    if serve_ports() is None:
        start_serve(http_port=free_port(), grpc_port=free_port())
    url = deploy(app_name="earlyexit-bad-bodies", route_prefix="/ee-bad", num_cpus=0.25, sla_ms=500)
    wait_ready(url + "/v1/models/mnist", 120)
    yield url
    serve.delete("earlyexit-bad-bodies")


def test_earlyexit_endpoint_answers_4xx_never_500(ee_base):
    statuses = {}
    with httpx.Client(timeout=60) as client:
        for body in PATHOLOGICAL + _encoded(INSTANCE_BODIES):
            r = client.post(ee_base + "/v1/models/mnist:predict", content=body,
                            headers={"content-type": "application/json"})
            statuses[body[:40]] = r.status_code
            assert "error" in r.json(), r.text
        ok = client.post(ee_base + "/v1/models/mnist:predict", json={"instances": [IMAGE]})
    bad = {k: v for k, v in statuses.items() if not 400 <= v < 500}
    assert not bad, bad
    assert ok.status_code == 200, ok.text


NOT_PROTOBUF = [b"\xff\xff\xff\xff", b"\x0a\xff", b"garbage bytes, not a protobuf message"]


@pytest.mark.parametrize("raw", NOT_PROTOBUF, ids=repr)
def test_routing_grpc_request_that_is_not_protobuf_is_an_input_error(raw):
    from types import SimpleNamespace

    from mixfleet.routing.serve.ingress import Ingress
    from mixfleet.routing.serve.proto import llm_pb2

    cls = getattr(Ingress, "func_or_class", Ingress)
    me = SimpleNamespace(model="m", max_context=4096, byte_tokens=False)  # an emulated fleet
    with pytest.raises(InputError, match="not a valid GenerateRequest"):
        cls._grpc_request(me, raw)
    good = llm_pb2.GenerateRequest(model="m", prompt="hello there", max_tokens=3).SerializeToString()
    assert cls._grpc_request(me, good).max_tokens == 3


def test_earlyexit_grpc_answers_invalid_argument_for_malformed_messages(ee_base):
    import grpc

    from mixfleet.earlyexit.serve.proto import earlyexit_pb2 as pb
    from mixfleet.earlyexit.serve.proto import earlyexit_pb2_grpc as pbg
    from mixfleet.earlyexit.serve.replica import GRPC_SERVICER
    from mixfleet.platform.serving import serve_ports

    port = serve_ports().grpc_port_for(GRPC_SERVICER)
    meta = (("application", "earlyexit-bad-bodies"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        raw = channel.unary_unary("/mixfleet.earlyexit.EarlyExitService/Predict",
                                  request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for body in [*NOT_PROTOBUF, b""]:
            with pytest.raises(grpc.RpcError) as err:
                raw(body, metadata=meta, timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (body, err.value.details())
        for instances in ([pb.Instance(pixels=[float("inf")] * 784)], [pb.Instance(pixels=[2.0] * 784)]):
            with pytest.raises(grpc.RpcError) as err:
                pbg.EarlyExitServiceStub(channel).Predict(pb.PredictRequest(model="mnist", instances=instances),
                                                          metadata=meta, timeout=60)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        ok = pbg.EarlyExitServiceStub(channel).Predict(
            pb.PredictRequest(model="mnist", instances=[pb.Instance(pixels=[0.5] * 784)]), metadata=meta, timeout=60)
        assert len(ok.predictions) == 1
