"""Build and deploy the live router as a Ray Serve application.

The application is one ingress deployment (:mod:`~mixfleet.routing.serve.ingress`)
bound to one single-replica engine deployment per fleet replica
(``engine-<replica id>``), grouped by GPU type: each asks for
``num_gpus=gpus_per_replica`` and ``accelerator_type=<type>`` so Ray places it
only on a node of that GPU type. On these machines those nodes are EMULATED
(:class:`~mixfleet.platform.local_cluster.EmulatedCluster`) and the engines
are emulated too.

Accelerator names: a fleet GPU names its exact Ray type (``A100-80G``); Ray
itself labels every A100 node ``A100`` and the sized names are optional
extra labels. So a replica asks for the exact name when some node
advertises it, else for the family name (``A100``); when neither exists
the build fails at once with the types the cluster has (Serve would
otherwise wait forever for resources that never come). The same happens
when a GPU type has too few GPUs for its replicas.

``app_builder(args)`` is the entry for ``serve deploy`` /
``serve run mixfleet.routing.serve.app:app_builder fleet=...`` (see
``serve_config.yaml`` next to this file).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field

from mixfleet.errors import ClusterError, InputError
from mixfleet.platform.accelerators import RESOURCE_PREFIX
from mixfleet.platform.config import StrictModel, parse_model

APP_NAME = "mixfleet-llm"
GRPC_SERVICER = "mixfleet.platform.grpcraw.add_llm_servicer"  # requests arrive as bytes (Ingress decodes them)


class ServeOptions(StrictModel):
    """How the live router runs (every field has a default; unknown keys are rejected)."""

    policy: str = "ilp"
    seed: int = 0
    engine: Literal["emulated", "tiny-torch", "torch"] = "emulated"  # a fleet pool's `engine:` overrides it
    device: Literal["auto", "cpu", "cuda"] = "auto"  # real engine (torch): where its model runs
    torch_model: str | None = None  # real engine: built-in model name or model YAML (default: the fleet's model)
    torch_threads: int = Field(default=1, ge=1, le=256)  # real engine on CPU: torch threads per replica
    cpu_bind: str | None = None  # real engine on CPU: bind replica k to the k-th '|'-separated CPU set ("1", "0-1|2-3")
    gpus_per_replica: float = Field(default=1.0, gt=0, le=8)
    cpus_per_replica: float = Field(default=0.0, ge=0, le=64)
    max_outstanding: int | None = Field(default=None, ge=1, le=1_000_000)
    max_waiting: int = Field(default=64, ge=1, le=100_000)
    telemetry_interval_s: float = Field(default=2.0, gt=0, le=600)
    first_chunk_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    plan_trace: str = "azure-conv"
    plan_load: float = Field(default=0.6, gt=0, le=2.0)
    plan_limit: int = Field(default=2000, ge=10, le=1_000_000)
    flush_s: float = Field(default=0.02, gt=0, le=5.0)
    time_dilation: float = Field(default=1.0, ge=1.0, le=100.0)  # EMULATION only: engines run D x slower
    policy_options: dict = Field(default_factory=dict)

    def outstanding_bound(self, fleet) -> int:
        """Requests in flight before a 429: ``max_outstanding``, else every batch slot plus the waiting bound."""
        return self.max_outstanding or sum(r.max_batch for r in fleet.replicas) + self.max_waiting


def engine_deployment(replica_id: str) -> str:
    """The Serve deployment name of one fleet replica's engine."""
    return f"engine-{replica_id}"


def engine_handle(replica_id: str, app_name: str | None = None):
    """A handle to one fleet replica's engine deployment in the deployed application (Ray connected)."""
    from ray import serve

    return serve.get_deployment_handle(engine_deployment(replica_id), app_name=app_name or APP_NAME)


def engine_of(replica, opts: ServeOptions) -> str:
    """The engine a replica runs: its pool's ``engine:``, else the serve options' engine."""
    return replica.engine or opts.engine


def real_device(opts: ServeOptions) -> str:
    """Where real-engine replicas run (``auto`` resolved on this machine)."""
    from mixfleet.routing.torch_model import pick_device

    return pick_device(opts.device)


def placed_by_gpu_type(fleet, opts: ServeOptions) -> list:
    """Replicas Ray places by ``accelerator_type`` (every replica except the real engine's)."""
    return [r for r in fleet.replicas if engine_of(r, opts) != "torch"]


def resolve_options(fleet, opts: ServeOptions) -> ServeOptions:
    """``opts`` checked against ``fleet`` (a known policy) with the admission bound filled in."""
    from mixfleet.routing.policies import check_policy_name

    return opts.model_copy(update={"policy": check_policy_name(opts.policy),
                                   "max_outstanding": opts.outstanding_bound(fleet)})


def advertised_gpus() -> dict[str, float]:
    """GPUs per accelerator type over the alive nodes of the connected cluster.

    On an autoscaling cluster started by ``mixfleet cluster up``, a GPU type
    counts with all the GPUs its node type may reach (``max_workers``), alive
    or not yet launched: the autoscaler launches nodes for the replicas.
    """
    import ray

    from mixfleet.platform.launcher import launchable_gpus

    out: dict[str, float] = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources", {})
        for key in res:
            if key.startswith(RESOURCE_PREFIX):
                name = key[len(RESOURCE_PREFIX):]
                out[name] = out.get(name, 0.0) + res.get("GPU", 0.0)
    for name, gpus in launchable_gpus().items():
        out[name] = max(out.get(name, 0.0), gpus)
    return out


def placement_accelerator(accelerator: str, advertised: dict[str, float], gpu: str | None = None) -> str:
    """The accelerator_type to ask Ray for (exact name, else its family); see module doc.

    ``gpu`` is the fleet file's name for it (``A100-80GB``), which errors show first."""
    if accelerator in advertised:
        return accelerator
    family = accelerator.split("-")[0]
    if family in advertised:
        return family
    have = ", ".join(sorted(advertised)) or "none"
    named = f"'{gpu}' (Ray accelerator type '{accelerator}')" if gpu and gpu != accelerator else f"'{accelerator}'"
    raise ClusterError(f"no node of the cluster has GPU type {named} (GPU types present: {have})",
                       "start the emulated fleet with `mixfleet routing serve --emulate`, or add nodes of that type")


def placements(fleet, opts: ServeOptions, advertised: dict[str, float] | None) -> dict[str, str]:
    """Accelerator type per GPU-typed replica id (see :func:`placed_by_gpu_type`); checks each type has
    GPUs for its replicas. Real-engine replicas run on whatever CPU (or CUDA GPU) Ray gives them."""
    typed = placed_by_gpu_type(fleet, opts)
    if advertised is None:
        return {r.replica_id: r.accelerator for r in typed}
    out = {r.replica_id: placement_accelerator(r.accelerator, advertised, r.gpu) for r in typed}
    names = {out[r.replica_id]: r.gpu for r in typed}
    need: dict[str, float] = {}
    for acc in out.values():
        need[acc] = need.get(acc, 0.0) + opts.gpus_per_replica
    for acc, n in need.items():
        if n > advertised[acc] + 1e-9:
            raise ClusterError(f"the fleet needs {n:g} GPUs of type {names[acc]} ({opts.gpus_per_replica:g} per replica) "
                               f"but the cluster has {advertised[acc]:g}",
                               "use fewer replicas of that type, a smaller --gpus-per-replica, or more nodes")
    return out


def build_app(fleet, options: ServeOptions | dict | None = None, *, advertised: dict[str, float] | None = None):
    """The Serve application for ``fleet`` (not yet running)."""
    from ray import serve

    from mixfleet.platform.logs import serve_logging_config
    from mixfleet.routing.serve.ingress import Ingress
    from mixfleet.routing.serve.replica import EngineReplica

    opts = options if isinstance(options, ServeOptions) else parse_model(options or {}, ServeOptions,
                                                                          source="serve options")
    kinds = {engine_of(r, opts) for r in fleet.replicas}
    if "tiny-torch" in kinds:
        from mixfleet.routing.serve.tiny_engine import check_cuda

        check_cuda()
    if "torch" in kinds:
        from mixfleet.routing.torch_model import model_config

        cfg = model_config(opts.torch_model or fleet.model)  # fails here, not in every replica
        device = real_device(opts)
        opts = opts.model_copy(update={"device": device, "torch_model": opts.torch_model or cfg.name})
    if opts.cpu_bind is not None:
        from mixfleet.platform.cpus import parse_cpu_bind

        parse_cpu_bind(opts.cpu_bind)  # a bad spec fails here, not in every replica
    opts = resolve_options(fleet, opts)
    where = placements(fleet, opts, advertised)
    real = [r.replica_id for r in fleet.replicas if engine_of(r, opts) == "torch"]
    # ingress and engines are both on every request's path: no per-request access-log line in either
    quiet = serve_logging_config(access_log=False)
    engine_dep = serve.deployment(EngineReplica)
    engines = {}
    for r in fleet.replicas:
        if r.replica_id in where:
            actor = {"num_cpus": opts.cpus_per_replica, "num_gpus": opts.gpus_per_replica,
                     "accelerator_type": where[r.replica_id]}
        else:  # the real engine: a CPU process, or one CUDA GPU of any type
            actor = {"num_cpus": opts.cpus_per_replica,
                     "num_gpus": opts.gpus_per_replica if opts.device == "cuda" else 0}
        engines[r.replica_id] = engine_dep.options(
            name=engine_deployment(r.replica_id), num_replicas=1, ray_actor_options=actor,
            max_ongoing_requests=r.max_batch + opts.max_waiting + 16,
            max_queued_requests=4 * (r.max_batch + opts.max_waiting),
            health_check_period_s=2.0, health_check_timeout_s=15.0, graceful_shutdown_timeout_s=1.0,
            logging_config=quiet,
        ).bind(replica=r, max_batched_tokens=fleet.config.max_batched_tokens, options=opts,
               cpu_index=real.index(r.replica_id) if r.replica_id in real else 0)
    ingress = serve.deployment(Ingress).options(
        name="ingress", num_replicas=1, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=opts.max_outstanding + 256, max_queued_requests=1024,
        health_check_period_s=2.0, graceful_shutdown_timeout_s=1.0, logging_config=quiet)
    return ingress.bind(fleet, engines, opts)


class BuilderArgs(StrictModel):
    """``args`` of the Serve config: the fleet file plus :class:`ServeOptions` fields."""

    fleet: str
    options: ServeOptions = ServeOptions()


def app_builder(args: dict):
    """Entry point for ``serve deploy`` / ``serve run`` (args: ``fleet`` and optional ``options``)."""
    from mixfleet.routing.fleet import load_fleet

    parsed = parse_model(args or {}, BuilderArgs, source="serve application args")
    path = Path(parsed.fleet)
    if not path.is_file():
        raise InputError(f"fleet file '{parsed.fleet}' not found", "pass fleet=<path to fleet.yaml>")
    fleet = load_fleet(path)
    return build_app(fleet, parsed.options, advertised=advertised_gpus())


def deploy(fleet, options: ServeOptions | dict | None = None, *, name: str = APP_NAME, route_prefix: str = "/"):
    """Deploy on the connected cluster (Serve must be started) and wait until it is healthy."""
    from mixfleet.platform.serving import run_app

    app = build_app(fleet, options, advertised=advertised_gpus())
    return run_app(app, name=name, route_prefix=route_prefix)


def gpu_count_for(fleet, gpus_per_replica: float, opts: ServeOptions | None = None) -> dict[str, int]:
    """GPUs per Ray accelerator type that an emulated cluster needs for this fleet (real-engine replicas
    need none: they run on the host)."""
    need: dict[str, float] = {}
    for r in placed_by_gpu_type(fleet, opts or ServeOptions()):
        need[r.accelerator] = need.get(r.accelerator, 0.0) + gpus_per_replica
    return {k: math.ceil(v - 1e-9) for k, v in need.items()}
