"""The one Ray bootstrap every part uses.

``connect()`` gives an embedded local Ray by default (dashboard off, CPUs
from the machine, quiet logs) or joins an existing cluster (``"auto"``,
``"HOST:PORT"``, ``"ray://HOST:PORT"``, or ``RAY_ADDRESS`` as set by
``ray job submit``). It is idempotent: a second call returns the running
session. Parts never call ``ray.init`` themselves.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from mixfleet.errors import ClusterError
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


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast with a clear message instead of Ray's long retry loop."""
    hp = _split_host_port(address)
    if hp is None:
        raise ClusterError(
            f"bad Ray address '{address}': expected HOST:PORT, ray://HOST:PORT or 'auto'",
            "pass the address printed by `ray start --head` or `mixfleet cluster local`",
        )
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(
            f"cannot reach Ray at '{address}': {exc.strerror or exc}",
            "start a cluster there (`ray start --head`, `mixfleet cluster local`) or fix --address",
        ) from None


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
    import ray

    if ray.is_initialized():
        if _current is None:  # initialised by someone else (a test harness, ray job)
            ctx = ray.get_runtime_context()
            _current = Connection(ctx.gcs_address, embedded=False, namespace=ctx.namespace)
        return _current

    address = address or os.environ.get("RAY_ADDRESS") or None
    logs.quiet_driver()
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
    elif address != "auto":
        _check_reachable(address)
        del kwargs["include_dashboard"]
    else:
        del kwargs["include_dashboard"]
    try:
        # "local": never join a cluster named in /tmp/ray/ray_current_cluster by someone else's `ray start`
        info = ray.init(address=address or "local", **{k: v for k, v in kwargs.items() if v is not None})
    except ConnectionError as exc:
        raise ClusterError(
            f"cannot connect to Ray at '{address}': {str(exc).splitlines()[0]}",
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


def __getattr__(name: str):
    """The Serve helpers moved to :mod:`mixfleet.platform.serving`; old imports keep working."""
    if name in ("GRPC_SERVICERS", "ServePorts", "serve_ports", "start_serve"):
        import importlib

        return getattr(importlib.import_module("mixfleet.platform.serving"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
