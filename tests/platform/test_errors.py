"""One exception hierarchy and one table from an error to what a server answers (no Ray)."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import grpc
import pytest

from mixfleet.errors import (
    InputError,
    MixfleetError,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
    grpc_error,
    http_error,
)
from mixfleet.routing.serve.emulated_engine import EngineOverloaded
from mixfleet.routing.serve.router import ReplicaDown

ROOT = Path(__file__).resolve().parents[2]


class FakeContext:
    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details

    def set_trailing_metadata(self, md):
        self.trailer = dict(md)


@pytest.mark.parametrize(("exc", "status", "code", "retry"), [
    (InputError("bad max_tokens"), 400, grpc.StatusCode.INVALID_ARGUMENT, None),
    (PayloadTooLarge("body too big"), 413, grpc.StatusCode.INVALID_ARGUMENT, None),
    (NotFound("no model 'x'"), 404, grpc.StatusCode.NOT_FOUND, None),
    (Overloaded("64 in flight", retry_after_s=2.2), 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "3"),
    (EngineOverloaded("T4-0", 9, 0.2), 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "1"),
    (Unavailable("all replicas down", retry_after_s=5), 503, grpc.StatusCode.UNAVAILABLE, "5"),
    (ReplicaDown("replica T4-0 died"), 503, grpc.StatusCode.UNAVAILABLE, "1"),
])
def test_one_table_gives_http_status_retry_after_and_grpc_code(exc, status, code, retry):
    got_status, headers = http_error(exc)
    assert got_status == status and headers.get("Retry-After") == retry
    ctx = FakeContext()
    grpc_error(ctx, exc)
    assert ctx.code == code and str(exc) in ctx.details
    assert getattr(ctx, "trailer", {}).get("retry-after") == retry


def test_errors_cross_process_boundaries_with_every_field():
    e = pickle.loads(pickle.dumps(EngineOverloaded("T4-0", 9, 2.5)))
    assert isinstance(e, Overloaded) and (e.replica_id, e.waiting, e.retry_after_s) == ("T4-0", 9, 2.5)
    e = pickle.loads(pickle.dumps(Unavailable("down", "try later", retry_after_s=4.0)))
    assert (e.message, e.hint, e.retry_after_s) == ("down", "try later", 4.0)


def test_every_exception_class_in_mixfleet_derives_from_mixfleet_error():
    import importlib

    found = []
    for path in (ROOT / "mixfleet").rglob("*.py"):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    (isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception", "Failed")))
                    or (isinstance(b, ast.Attribute) and b.attr.endswith(("Error", "Exception")))
                    for b in node.bases):
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                found.append((module, node.name))
    assert len(found) >= 10
    for module, name in found:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, MixfleetError), f"{module}.{name}"
