"""``mixfleet routing serve``: start the live router (and, with ``--emulate``, an emulated GPU fleet).

Registered on the routing CLI by :func:`register` (the routing CLI looks
this module up lazily). Without ``--emulate`` it joins the cluster at
``--address`` (or ``RAY_ADDRESS``; else an embedded Ray, which has no GPU
types and is refused with a hint, unless every replica is a REAL engine
(``engine: torch`` pools: they run on this host's CPU or a CUDA GPU)). With ``--emulate`` it starts an
EMULATED multi-node cluster with one node per GPU type of the fleet, each
declaring ``accelerator_type:<T>`` and enough GPUs for its replicas.
It serves until Ctrl-C (SIGINT) or SIGTERM, then deletes the application
and stops what it started.
"""

from __future__ import annotations

import os
import threading

import typer

from mixfleet.errors import InputError
from mixfleet.platform.output import console, emit_json, print_table

EMULATED_NOTE = ("EMULATED: GPU nodes are emulated Ray nodes and their replicas run the emulated engine "
                 "(the simulator's iteration-time model on a wall clock; placeholder tokens)")


def _check_port(name: str, port: int | None) -> None:
    if port is not None and not (1 <= port <= 65535):
        raise InputError(f"{name} {port} is out of range", "give a TCP port in 1..65535 (0 is not allowed)")


def serve_command(
    fleet: str = typer.Option(..., "--fleet", help="fleet.yaml (model, GPU pools)"),
    emulate: bool = typer.Option(False, "--emulate", help="start an EMULATED multi-node cluster for the fleet"),
    port: int = typer.Option(8000, "--port", help="HTTP port on 127.0.0.1 (OpenAI-compatible API)"),
    grpc_port: int = typer.Option(9000, "--grpc-port", help="gRPC port on 127.0.0.1 (LLMService.Generate)"),
    policy: str = typer.Option("ilp", "--policy", help="routing policy: ilp, least_work_left, pow2, ..."),
    address: str = typer.Option(None, "--address", help="join this Ray cluster instead (not with --emulate)"),
    gpus_per_replica: float = typer.Option(1.0, "--gpus-per-replica", help="GPUs each replica asks for"),
    max_outstanding: int = typer.Option(None, "--max-outstanding", min=1, help="requests in flight before 429"),
    device: str = typer.Option("auto", "--device", help="real-engine (engine: torch) replicas: auto, cpu or cuda"),
    torch_threads: int = typer.Option(1, "--torch-threads", min=1, max=256,
                                      help="real-engine replicas on the CPU: torch threads each"),
    cpu_bind: str = typer.Option(None, "--cpu-bind", help="real-engine replicas on the CPU: bind replica k to the "
                                 "k-th '|'-separated CPU set, e.g. '1' or '0-1|2-3' (default: not bound)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object when ready (endpoints)"),
) -> None:
    """Serve the fleet live on Ray Serve with heterogeneity-aware routing (Ctrl-C stops)."""
    from pathlib import Path

    from mixfleet.platform.bootstrap import check_port_free
    from mixfleet.platform.config import parse_model
    from mixfleet.routing.fleet import load_fleet
    from mixfleet.routing.policies import check_policy_name
    from mixfleet.routing.serve.app import ServeOptions, placed_by_gpu_type

    _check_port("--port", port)
    _check_port("--grpc-port", grpc_port)
    if port == grpc_port:
        raise InputError(f"--port and --grpc-port are both {port}", "give two different ports")
    if emulate and address:
        raise InputError("--emulate starts its own cluster, so --address makes no sense with it",
                         "drop one of them")
    if not Path(fleet).is_file():
        raise InputError(f"fleet file '{fleet}' not found", "pass --fleet path/to/fleet.yaml "
                         "(e.g. examples/routing/fleet.yaml)")
    check_policy_name(policy)
    if cpu_bind is not None:
        from mixfleet.platform.cpus import check_cpu_bind, parse_cpu_bind

        if address or os.environ.get("RAY_ADDRESS"):
            parse_cpu_bind(cpu_bind)  # the replicas run on the cluster's machines: each checks its own CPUs
        else:
            check_cpu_bind(cpu_bind)  # an embedded or emulated Ray runs them on this machine
    fl = load_fleet(fleet)
    opts = parse_model({"policy": policy, "gpus_per_replica": gpus_per_replica, "max_outstanding": max_outstanding,
                        "device": device, "torch_threads": torch_threads, "cpu_bind": cpu_bind},
                       ServeOptions, source="command-line options")
    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    if not emulate and not joining and placed_by_gpu_type(fl, opts):
        raise InputError(f"an embedded Ray has none of the fleet's GPU types ({', '.join(p.gpu for p in fl.config.pools)})",
                         "pass --emulate for an EMULATED fleet, or --address of a cluster with those GPUs")
    if emulate:  # Serve starts here: its ports must be free
        check_port_free(port, "--port")
        check_port_free(grpc_port, "--grpc-port")
    stop = threading.Event()
    run_serving(fl, opts, emulate=emulate, address=address, port=port, grpc_port=grpc_port, stop=stop,
                json_out=json_out)


def run_serving(fleet, opts, *, emulate: bool, address: str | None, port: int, grpc_port: int,
                stop: threading.Event, json_out: bool = False) -> None:
    """Start (cluster,) Serve and the app; block until ``stop`` is set; tear everything down."""
    from mixfleet.platform.bootstrap import connect, shutdown
    from mixfleet.platform.serving import serving, stop_on_signal, wait_for_signal
    from mixfleet.routing.serve.app import (
        APP_NAME,
        GRPC_SERVICER,
        advertised_gpus,
        deploy,
        engine_of,
        gpu_count_for,
        placements,
    )
    from mixfleet.routing.torch_model import REAL_NOTE

    cluster = None
    say = console().print
    engines = sorted({engine_of(r, opts) for r in fleet.replicas})
    try:
        if "torch" in engines:
            real = sum(1 for r in fleet.replicas if engine_of(r, opts) == "torch")
            say(f"[dim]REAL engine on {real} replica(s): transformers continuous batching, {REAL_NOTE}[/dim]")
        nodes = []
        if emulate:
            from mixfleet.platform.local_cluster import EmulatedCluster, EmulatedNode

            nodes = [EmulatedNode(f"gpu_{acc.lower()}", cpus=1, gpus=n, accelerator_type=acc)
                     for acc, n in gpu_count_for(fleet, opts.gpus_per_replica, opts).items()]
        if nodes:
            say(f"[dim]{EMULATED_NOTE}[/dim]")
            names = {r.accelerator: r.gpu for r in fleet.replicas}  # show the fleet file's GPU names
            say("starting the emulated cluster: " + ", ".join(f"{n.gpus:g}x{names.get(n.accelerator_type, n.accelerator_type)}"
                                                              for n in nodes))
            cluster = EmulatedCluster(nodes, head_cpus=2).start()
            connect(cluster.address)
        else:
            connect(address)
        placements(fleet, opts, advertised_gpus())  # fail before starting Serve if a GPU type is missing
        with serving(http_port=port, grpc_port=grpc_port, grpc_servicer_functions=[GRPC_SERVICER]) as srv, \
                stop_on_signal(stop):
            # Serve is up: Ctrl-C / SIGTERM now mean an orderly stop (exit 0) once the deploy returns;
            # before this, they interrupt at once (the CLI's handler) and the clean-up below still runs
            try:
                from mixfleet.platform.telemetry import start_agents

                start_agents()
            except Exception as exc:  # telemetry is optional for serving
                say(f"[yellow]telemetry agents not started: {exc}[/yellow]")
            say(f"deploying {len(fleet.replicas)} engine replicas ({fleet.describe()}) with policy '{opts.policy}' ...")
            srv.own(APP_NAME)
            deploy(fleet, opts)
            info = {"http": f"http://127.0.0.1:{srv.ports.http_port}/v1", "grpc": f"127.0.0.1:{grpc_port}",
                    "app": APP_NAME, "model": fleet.model, "policy": opts.policy, "replicas": len(fleet.replicas),
                    "engines": ", ".join(engines), "emulated": engines == ["emulated"]}
            if json_out:
                emit_json(info)
            else:
                print_table("mixfleet live router (Ctrl-C to stop)", ["endpoint", "value"], list(info.items()))
            wait_for_signal(stop)
            say("stopping ...")
    finally:
        shutdown()
        if cluster is not None:
            cluster.shutdown()


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the routing CLI."""
    app.command("serve")(serve_command)
