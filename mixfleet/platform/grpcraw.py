"""gRPC servicers registered on Serve with raw request bytes.

A generated servicer makes grpc decode each request in Serve's proxy; a
message that is not valid protobuf then fails inside grpc with ``UNKNOWN``
before any mixfleet code runs. Registered through :func:`raw_requests`, the
handler gets the bytes and decodes them itself, so a malformed message is
its own ``INVALID_ARGUMENT`` (the gRPC 4xx).
"""

from __future__ import annotations

from typing import Any


class _RawRequests:
    """A server wrapper that drops each method's request deserializer as handlers are added."""

    def __init__(self, server: Any):
        self._server = server

    @staticmethod
    def _raw(handlers: dict) -> dict:
        return {name: h._replace(request_deserializer=None) for name, h in handlers.items()}

    def add_generic_rpc_handlers(self, generic_handlers) -> None:
        for handler in generic_handlers:
            handler._method_handlers = self._raw(handler._method_handlers)
        self._server.add_generic_rpc_handlers(generic_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        self._server.add_registered_method_handlers(service_name, self._raw(method_handlers))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def add_earlyexit_servicer(servicer: Any, server: Any) -> None:
    """``EarlyExitService`` with raw request bytes (``EarlyExitServer.Predict`` decodes them)."""
    from mixfleet.earlyexit.serve.proto.earlyexit_pb2_grpc import add_EarlyExitServiceServicer_to_server

    add_EarlyExitServiceServicer_to_server(servicer, _RawRequests(server))


def add_llm_servicer(servicer: Any, server: Any) -> None:
    """``LLMService`` with raw request bytes (the routing ingress decodes them)."""
    from mixfleet.routing.serve.proto.llm_pb2_grpc import add_LLMServiceServicer_to_server

    add_LLMServiceServicer_to_server(servicer, _RawRequests(server))
