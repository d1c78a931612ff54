"""Deploying the early-exit server: ``build_app`` for ``serve.run``, ``app_builder`` for ``serve deploy``, ``deploy()``.

The replica itself lives in :mod:`mixfleet.earlyexit.serve.replica`; this module
only binds it into a Serve application. ``deploy()`` goes through Serve's
declarative API (as ``serve deploy`` does), so redeploying with other
options only pushes a new ``user_config`` and replicas reconfigure in place.
"""

from mixfleet.earlyexit.serve.replica import EarlyExitServer, ServeOptions
from mixfleet.platform.config import parse_model

MAX_ONGOING = 1024  # Serve's own cap; the replica's queue_bound (a run-time knob) admits fewer
IMPORT_PATH = "mixfleet.earlyexit.serve.app:app_builder"


def build_app(model_path=None, name: str = "mnist", num_cpus: float = 1.0, num_gpus: float = 0.0,
              accelerator_type: str | None = None, **options):
    """A bound Serve application for ``serve.run`` (options: :class:`ServeOptions` fields).

    ``accelerator_type`` (a Ray name such as ``"A100"``) pins replicas to GPUs of that type when the
    cluster has them; on CPU-only machines leave it unset.
    """
    from pathlib import Path

    from mixfleet.earlyexit.persist import default_model_path, read
    from mixfleet.platform.logs import serve_logging_config

    path = Path(model_path or default_model_path())
    read(path)  # a clear error for a bad file before any replica starts
    opts = parse_model(options, ServeOptions, source="serve options")
    return EarlyExitServer.options(
        user_config=opts.model_dump(exclude_none=True), max_ongoing_requests=MAX_ONGOING,
        max_queued_requests=4 * MAX_ONGOING,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus,
                           **({"accelerator_type": accelerator_type} if accelerator_type else {})},
        logging_config=serve_logging_config(access_log=False),  # a log line per request costs more than an exit saves
    ).bind(path.read_bytes(), name)


def app_builder(args: dict):
    """Entry point for ``serve deploy`` / ``serve run`` (args: ``model``, ``name``, ``num_cpus``).

    Run-time options belong in the deployment's ``user_config`` so that
    changing them reconfigures replicas in place instead of restarting them.
    """
    args = dict(args or {})
    return build_app(args.pop("model", None), args.pop("name", "mnist"), float(args.pop("num_cpus", 1.0)),
                     float(args.pop("num_gpus", 0.0)), args.pop("accelerator_type", None), **args)


def deploy(model_path=None, *, app_name: str = "earlyexit", route_prefix: str = "/", name: str = "mnist",
           num_cpus: float = 1.0, autoscaling: dict | None = None, **options) -> str:
    """Deploy (declaratively, as ``serve deploy`` does) on the running Serve; returns the V1 base URL.

    Calling it again with the same model, name and ``num_cpus`` but other
    options only pushes a new ``user_config``: replicas run ``reconfigure()``
    and keep their state (no restart). ``autoscaling`` is a deployment
    ``autoscaling_config`` (see :func:`mixfleet.earlyexit.serve.autoscale.autoscaling_config`).
    """
    from mixfleet.earlyexit.persist import read
    from mixfleet.errors import ClusterError
    from mixfleet.platform.serving import LOOPBACK, deploy_config, serve_ports

    ports = serve_ports()
    if ports is None:
        raise ClusterError("Ray Serve is not running on the connected cluster",
                           "start it first (mixfleet.platform.serving.serving or start_serve)")
    if model_path is not None:
        read(model_path)
    opts = parse_model(options, ServeOptions, source="serve options")
    app = {"name": app_name, "route_prefix": route_prefix, "import_path": IMPORT_PATH,
           "args": {"model": None if model_path is None else str(model_path), "name": name, "num_cpus": num_cpus},
           "deployments": [{"name": "EarlyExitServer", "user_config": opts.model_dump(exclude_none=True),
                            **({"autoscaling_config": autoscaling} if autoscaling else {})}]}
    deploy_config(app)
    prefix = "" if route_prefix == "/" else route_prefix
    return f"http://{LOOPBACK}:{ports.http_port}{prefix}"

