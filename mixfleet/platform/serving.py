"""The one Ray Serve lifecycle every CLI, demo, benchmark and test helper uses.

    with serving(http_port=8000, grpc_port=9000) as srv:   # starts Serve only if it is not running
        srv.run(app, name="llm")                            # or srv.deploy_config({...}) (as `serve deploy`)
        wait_for_signal()                                   # a server command: until Ctrl-C / SIGTERM
    # leaving: the apps deployed here are deleted; Serve is stopped only if it was started here

Serve binds 127.0.0.1, its proxy runs on the head node only, every mixfleet
gRPC servicer is registered whenever mixfleet starts Serve (so the routing
and early-exit apps can share one Serve), and its controller, proxies and
deployments log at the level :mod:`mixfleet.platform.logs` chooses (quiet
unless ``--verbose``). Serve's private API is used here and nowhere else.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"

# Serve fixes its gRPC servicers when it starts; the proxy imports these lazily, by name.
# They take raw request bytes (mixfleet.platform.grpcraw), so a malformed message is INVALID_ARGUMENT.
GRPC_SERVICERS: tuple[str, ...] = (
    "mixfleet.platform.grpcraw.add_llm_servicer",
    "mixfleet.platform.grpcraw.add_earlyexit_servicer",
)


@dataclass(frozen=True)
class ServePorts:
    """Where a running Serve listens, and which gRPC servicers its proxy has."""

    http_port: int
    grpc_port: int | None
    grpc_servicers: tuple[str, ...]

    def grpc_port_for(self, servicer: str) -> int | None:
        """The gRPC port if the proxy serves ``servicer``, else ``None``."""
        return self.grpc_port if servicer in self.grpc_servicers else None


def _serve():
    """``ray.serve``, imported with the driver's loggers set again (its import resets ``ray.serve`` to INFO)."""
    from ray import serve

    from mixfleet.platform import logs

    logs.quiet_driver()
    return serve


def _client():
    _serve()
    from ray.serve.context import _get_global_client

    return _get_global_client()


def serve_ports() -> ServePorts | None:
    """The running Serve's ports on the connected cluster, or ``None`` if Serve is not running."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        client = _client()
        http = ray.get(client._controller.get_http_config.remote(), timeout=30)
        grpc = ray.get(client._controller.get_grpc_config.remote(), timeout=30)
    except Exception:  # no Serve controller on this cluster, or it is going away
        return None
    port = getattr(grpc, "port", None)
    return ServePorts(int(http.port), int(port) if port else None,
                      tuple(getattr(grpc, "grpc_servicer_functions", None) or ()))


def start_serve(
    *,
    http_host: str = LOOPBACK,
    http_port: int = 8000,
    grpc_port: int | None = None,
    grpc_servicer_functions: list[str] | None = None,
    access_log: bool = False,
) -> None:
    """Start Ray Serve's proxies, bound to loopback unless asked otherwise.

    Serve's per-request access log is off unless ``access_log``: on a small
    host one log line per request costs a sizeable share of the proxy's CPU
    per request. Serve's request metrics on Prometheus are unaffected.
    """
    from mixfleet.platform import logs
    from mixfleet.platform.bootstrap import connect

    serve = _serve()
    connect()
    kwargs: dict = {"http_options": {"host": http_host, "port": http_port, "location": "HeadOnly"},
                    "logging_config": logs.serve_logging_config(access_log=access_log)}
    if grpc_port is not None:
        servicers = list(dict.fromkeys([*GRPC_SERVICERS, *(grpc_servicer_functions or [])]))
        kwargs["grpc_options"] = {"port": grpc_port, "grpc_servicer_functions": servicers}
    serve.start(**kwargs)


def stop_serve(timeout_s: float = 60.0) -> None:
    """Stop Serve gracefully (apps, replicas, proxies, controller) if it runs; Ray stays up.

    ``serve.shutdown()`` blocks on a controller call that only ends when the controller kills
    itself, and Ray reports that call on the driver as a failed task to retry. Here the
    controller is asked to shut down without a pending call, and its exit is awaited by name
    (killed after ``timeout_s`` if it has not exited by then).
    """
    import ray

    if serve_ports() is None:
        return
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve.context import _disconnect

    client = _client()
    client.shutdown_cached_handles()
    ray.get(client._controller.graceful_shutdown.remote(wait=False), timeout=30)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:  # the controller has deleted every app, replica and proxy, then exited
            break
        if time.monotonic() > deadline:
            ray.kill(controller, no_restart=True)
            break
        time.sleep(0.1)
    client._shutdown = True
    _disconnect()


def run_app(app, *, name: str, route_prefix: str | None = "/"):
    """``serve.run`` without blocking, with mixfleet's logging config for every deployment; the handle."""
    from mixfleet.platform import logs

    return _serve().run(app, name=name, route_prefix=route_prefix, blocking=False,
                     logging_config=logs.serve_logging_config())


def deploy_config(app: dict) -> None:
    """Deploy one application from its config dict, as ``serve deploy`` does, and wait until it runs.

    Redeploying with only a new ``user_config`` reconfigures replicas in place. Other applications
    deployed from configs stay as they are (a bare ``serve deploy`` of one application would delete them).
    """
    from ray.serve.schema import ServeDeploySchema

    from mixfleet.platform import logs

    app = {"logging_config": logs.serve_logging_config(), **app}
    # a config lists every application Serve keeps: one left out is deleted, so the others go in unchanged
    others = [cfg for name, cfg in deployed_configs().items() if name != app["name"]]
    _client().deploy_apps(ServeDeploySchema.model_validate({"applications": [*others, app]}), _blocking=True)


def deployed_configs() -> dict[str, dict]:
    """The applications deployed from a config (``serve deploy``, :func:`deploy_config`), by name, as submitted."""
    details = _client().get_serve_details()
    return {name: a["deployed_app_config"] for name, a in (details.get("applications") or {}).items()
            if a.get("deployed_app_config")}


def delete_app(name: str) -> None:
    """Delete one application if Serve runs (nothing to do otherwise)."""
    if serve_ports() is not None:
        _serve().delete(name)


@dataclass
class ServeSession:
    """A running Serve as :func:`serving` found or started it."""

    ports: ServePorts
    started: bool
    apps: list[str] = field(default_factory=list)

    def run(self, app, *, name: str, route_prefix: str | None = "/"):
        """Deploy a bound application (deleted when the session ends); its handle."""
        self.own(name)
        return run_app(app, name=name, route_prefix=route_prefix)

    def deploy_config(self, app: dict) -> None:
        """Deploy an application config dict (deleted when the session ends)."""
        self.own(app["name"])
        deploy_config(app)

    def url(self, route_prefix: str = "/") -> str:
        prefix = "" if route_prefix == "/" else route_prefix
        return f"http://{LOOPBACK}:{self.ports.http_port}{prefix}"

    def own(self, name: str) -> None:
        """Delete application ``name`` when the session ends (for apps deployed by other helpers)."""
        if name not in self.apps:
            self.apps.append(name)


@contextmanager
def serving(*, http_port: int | None = None, grpc_port: int | None = None,
            grpc_servicer_functions: list[str] | None = None, access_log: bool = False) -> Iterator[ServeSession]:
    """Serve for the duration of a ``with`` block: started if not running, stopped only if started here.

    ``http_port=None`` picks a free port when Serve has to be started. The
    applications deployed through the session are deleted on the way out
    (a Serve that was already running keeps its other applications).
    """
    from mixfleet.platform.bootstrap import connect, free_port

    connect()
    ports = serve_ports()
    started = ports is None
    if started:
        start_serve(http_port=http_port or free_port(), grpc_port=grpc_port,
                    grpc_servicer_functions=grpc_servicer_functions, access_log=access_log)
        ports = serve_ports()
    session = ServeSession(ports=ports, started=started)
    try:
        yield session
    finally:
        if started:
            stop_serve()
        else:
            for name in reversed(session.apps):
                try:
                    delete_app(name)
                except Exception:  # already gone: nothing left to clean up
                    pass


@contextmanager
def stop_on_signal(stop: threading.Event | None = None,
                   signals=(signal.SIGINT, signal.SIGTERM)) -> Iterator[threading.Event]:
    """An event that SIGINT/SIGTERM set while the block runs: an orderly stop instead of an interrupt.

    Handlers go in only on the main thread (elsewhere the event is just returned) and the
    previous ones are restored after the block.
    """
    stop = stop or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for_signal(stop: threading.Event | None = None) -> None:
    """Block until ``stop`` is set, or (without one) until SIGINT/SIGTERM."""
    if stop is None:
        with stop_on_signal() as stop:
            wait_for_signal(stop)
        return
    while not stop.wait(0.5):
        pass
