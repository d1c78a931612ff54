"""The one Ray bootstrap every part uses.

``connect()`` gives an embedded local Ray by default (dashboard off, CPUs
from the machine, quiet logs) or joins an existing cluster (``"auto"``,
``"HOST:PORT"``, ``"ray://HOST:PORT"``, or ``RAY_ADDRESS`` as set by
``ray job submit``). It is idempotent: a second call returns the running
session. Parts never call ``ray.init`` themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass

from mixfleet.errors import ClusterError, first_line
from mixfleet.platform import logs

NAMESPACE = "mixfleet"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Connection:
    """What ``connect`` joined: the GCS address and whether Ray was started here."""

    address: str
    embedded: bool
    namespace: str


_current: Connection | None = None


def _split_host_port(address: str) -> tuple[str, int] | None:
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return (host or LOOPBACK), int(port)


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _what_answered(first: bytes | None) -> str:
    if first is None:
        return "it accepted the connection but sent nothing back"
    if not first:
        return "it closed the connection without answering"
    line = first.split(b"\n", 1)[0].strip().decode("latin-1")
    line = "".join(ch if ch.isprintable() else "?" for ch in line)[:60]
    if line.startswith("HTTP/") or b"<html" in first.lower():
        return f"an HTTP server answered '{line}'"
    return f"a service that is not Ray answered '{line}'"


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message instead of Ray's long retry loop.

    A Ray GCS (and the Ray Client server) speaks gRPC: it answers the HTTP/2
    preface with a SETTINGS frame. Anything else on the port (a web server,
    a database) is named in the error, within ``timeout_s`` or so, instead
    of Ray retrying "Failed to connect to GCS" for minutes.
    """
    hp = _split_host_port(address)
    if hp is None:
        raise ClusterError(
            f"bad Ray address '{address}': expected HOST:PORT, ray://HOST:PORT or 'auto'",
            "pass the address printed by `ray start --head` or `mixfleet cluster local`",
        )
    hint = "start a cluster there (`ray start --head`, `mixfleet cluster local`) or fix --address"
    first: bytes | None
    try:
        with socket.create_connection(hp, timeout=timeout_s) as sock:
            sock.sendall(_H2_PREFACE)
            try:
                first = sock.recv(256)
            except TimeoutError:
                first = None
            except ConnectionResetError:
                first = b""
    except OSError as exc:
        raise ClusterError(f"cannot reach Ray at '{address}': {exc.strerror or exc}", hint) from None
    if first is None or len(first) < 9 or first[3] != 0x04:  # not an HTTP/2 SETTINGS frame
        raise ClusterError(f"'{address}' is not a Ray cluster: {_what_answered(first)}",
                           "pass the GCS address printed by `ray start --head` (default port 6379) or fix --address")
    if "://" not in address:
        _check_gcs(address, timeout_s)


def _auto_address() -> str | None:
    """What Ray's ``"auto"`` resolves to (RAY_ADDRESS, else the last cluster started here), or ``None``."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # no cluster recorded: ray.init raises its own clear ConnectionError
        return None


def _check_gcs(address: str, timeout_s: float) -> None:
    """A gRPC server answered: make sure it is Ray's GCS (CheckAlive), not another gRPC service."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/CheckAlive",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            call(b"", timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise ClusterError(f"'{address}' is a gRPC server but not a Ray GCS",
                                   "for a Ray Client server use ray://HOST:PORT; else pass the GCS address") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ClusterError(f"Ray's GCS at '{address}' did not answer: {exc.details() or code.name}",
                                   "check that the cluster is up (`ray status`) or fix --address") from None
            # any other status (e.g. UNAUTHENTICATED with token auth) comes from a live GCS


@contextlib.contextmanager
def _keep_sigterm_handler():
    """Keep the CLI's SIGTERM handler through ``ray.init``.

    ``ray.init`` installs handlers that ``sys.exit(15)`` at once; the CLI's
    turns SIGTERM into the same orderly stop as Ctrl-C (exit 143). Ray's
    child processes are still stopped by its atexit hook.
    """
    import ray._private.utils as ray_utils

    on_main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if on_main else None
    if not callable(handler):
        yield
        return
    original = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda _handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original
        signal.signal(signal.SIGTERM, handler)


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    runtime_env: dict | None = None,
    dashboard: bool = False,
    namespace: str = NAMESPACE,
    quiet: bool = True,
    metrics_export_port: int | None = None,
) -> Connection:
    """Start or join Ray once per process and return the :class:`Connection`.

    ``address=None`` starts an embedded local Ray unless ``RAY_ADDRESS`` is
    set (as inside ``ray job submit``), in which case that cluster is joined.
    Resource arguments apply to an embedded Ray only, as does
    ``metrics_export_port`` (where Prometheus scrapes Ray's and mixfleet's
    metrics; by default Ray picks a free port, readable as
    ``ray.nodes()[i]["MetricsExportPort"]``).
    """
    global _current
    address = address or os.environ.get("RAY_ADDRESS") or None
    joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    if address not in (None, "auto") and not joined:
        _check_reachable(address)  # before `import ray` where possible: a wrong address fails at once
    import ray

    if ray.is_initialized():
        if _current is None:  # initialised by someone else (a test harness, ray job)
            ctx = ray.get_runtime_context()
            _current = Connection(ctx.gcs_address, embedded=False, namespace=ctx.namespace)
        return _current

    logs.quiet_driver()  # Ray's, Serve's and Ray Data's own output only with --verbose / MIXFLEET_LOG
    kwargs: dict = {
        "namespace": namespace,
        "include_dashboard": dashboard,
        **(logs.ray_init_kwargs() if quiet else {"logging_level": logging.INFO, "log_to_driver": True}),
        "runtime_env": runtime_env,
    }
    if address is None:
        kwargs.update(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, resources=resources,
                      _node_ip_address=LOOPBACK, _metrics_export_port=metrics_export_port)
        if object_store_memory:
            kwargs["object_store_memory"] = object_store_memory
    else:
        del kwargs["include_dashboard"]
        resolved = _auto_address() if address == "auto" else None
        if resolved:  # a stale /tmp/ray/ray_current_cluster must fail fast too
            _check_reachable(resolved)
    try:
        # "local": never join a cluster named in /tmp/ray/ray_current_cluster by someone else's `ray start`
        with _keep_sigterm_handler():
            info = ray.init(address=address or "local", **{k: v for k, v in kwargs.items() if v is not None})
    except ConnectionError as exc:
        raise ClusterError(
            f"cannot connect to Ray at '{address}': {first_line(exc)}",
            "start a cluster first (`ray start --head` or `mixfleet cluster local`) or fix --address",
        ) from None
    gcs = getattr(info, "address_info", {}).get("gcs_address") or ray.get_runtime_context().gcs_address
    _current = Connection(gcs, embedded=address is None, namespace=namespace)
    return _current


def shutdown() -> None:
    """Stop Serve gracefully (if running), then leave Ray; an embedded Ray is stopped."""
    global _current
    import ray

    if ray.is_initialized():
        from mixfleet.platform.serving import stop_serve

        try:
            stop_serve()  # graceful, before Ray goes: no force-killed replicas, no orphaned controller tasks
        except Exception:  # already gone: nothing to stop
            pass
        ray.shutdown()
    _current = None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (for tests, demos and benchmarks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(port: int, option: str = "--port", host: str = LOOPBACK) -> None:
    """Fail before Ray starts if ``host:port`` is taken (Serve would retry, then log tracebacks)."""
    from mixfleet.errors import InputError

    if not 1 <= port <= 65535:
        raise InputError(f"{option} {port} is out of range", "give a TCP port in 1..65535")
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"{option} {port} is already in use on {host} ({exc.strerror or exc})",
                             f"stop what listens there or pick another port, e.g. {option} {free_port(host)}") from None


def __getattr__(name: str):
    """The Serve helpers moved to :mod:`mixfleet.platform.serving`; old imports keep working."""
    if name in ("GRPC_SERVICERS", "ServePorts", "serve_ports", "start_serve"):
        import importlib

        return getattr(importlib.import_module("mixfleet.platform.serving"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def head_affinity():
    """A hard node affinity to the head node (``None`` where no head is recorded), for the
    zero-CPU service actors (telemetry hub, emulated QPU). Ray places an actor that asks for no
    resources on a random node unless its node affinity is hard (a soft one is ignored for such
    actors), and an actor on a worker node keeps that node busy, so the autoscaler never removes it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = next((n["NodeID"] for n in ray.nodes()
                 if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})), None)
    return NodeAffinitySchedulingStrategy(head, soft=False) if head is not None else None
