"""``mixfleet cluster ...``: validate, emulate, launch and inspect clusters."""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading

import typer

from mixfleet.errors import InputError
from mixfleet.platform.cluster_config import DEFAULT_CLUSTER_FILE
from mixfleet.platform.output import console, emit_json, print_table

app = typer.Typer(help="Validate, emulate, launch and inspect Ray clusters.", no_args_is_help=True,
                  add_completion=False)


@app.command()
def validate(file: str = typer.Argument(DEFAULT_CLUSTER_FILE, help="cluster.yaml to check"),
             json_out: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Check FILE with Ray's own schema and mixfleet's checks.

    mixfleet's checks: GPU node types name a known accelerator type; each
    deployment in `metadata.mixfleet.deployments` fits its node type; a
    rehearsal file (provider fake_multinode) is complete and declares the
    same node types and resources as the file `metadata.mixfleet.rehearses`
    names (CPUs may be scaled down).
    """
    from mixfleet.platform.cluster_config import load_cluster_config
    from mixfleet.platform.rehearsal import mixfleet_section

    spec = load_cluster_config(file)
    section = mixfleet_section(spec)
    types = {n: {"accelerator_type": t.accelerator_type, "gpus": t.gpus, "cpus": t.cpus,
                 "min_workers": t.min_workers, "max_workers": t.max_workers, "head": t.is_head}
             for n, t in spec.node_types.items()}
    if json_out:
        emit_json({"file": file, "valid": True, "cluster_name": spec.cluster_name, "provider": spec.provider,
                   "rehearses": section.get("rehearses"), "deployments": sorted(section.get("deployments") or {}),
                   "node_types": types})
        return
    print_table(f"{file}: valid", ["node type", "accelerator", "GPUs", "CPUs", "min", "max"],
                [(n, t["accelerator_type"] or "cpu", t["gpus"], t["cpus"], t["min_workers"], t["max_workers"])
                 for n, t in types.items()])
    if section.get("rehearses"):
        console().print(f"same node types and resources as {section['rehearses']} (CPUs scaled down; "
                        "GPUs EMULATED when rehearsed)")


def _parse_counts(items: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        name, sep, num = item.partition("=")
        if not sep or not num.strip().lstrip("-").isdigit():
            raise InputError(f"bad --nodes value '{item}': expected TYPE=N", "for example --nodes gpu_t4=2")
        counts[name.strip()] = int(num)
    return counts


@app.command()
def local(
    file: str = typer.Argument(DEFAULT_CLUSTER_FILE, help="cluster.yaml whose node types to emulate"),
    nodes: list[str] = typer.Option([], "--nodes", help="TYPE=N, overrides min_workers (repeatable)"),
    cpus_per_node: float = typer.Option(2, help="logical CPUs per emulated node (caps the declared count)"),
    json_out: bool = typer.Option(False, "--json", help="print {address, nodes} as one JSON object"),
) -> None:
    """Start an emulated cluster from FILE's node types and keep it up until Ctrl-C.

    GPUs are declared but emulated (no device behind them).
    """
    from mixfleet.platform.bootstrap import connect, shutdown
    from mixfleet.platform.cluster_config import load_cluster_config
    from mixfleet.platform.local_cluster import EmulatedCluster, nodes_from_spec
    from mixfleet.platform.status import node_rows

    spec = load_cluster_config(file)
    if cpus_per_node <= 0:
        raise InputError(f"--cpus-per-node {cpus_per_node} must be positive", "use 1 or more")
    emulated = nodes_from_spec(spec, _parse_counts(nodes), cpus_per_node=cpus_per_node)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = EmulatedCluster(emulated).start()
    try:
        conn = connect(cluster.address)
        rows = node_rows()
        if json_out:
            emit_json({"address": conn.address, "emulated": True, "nodes": rows})
        else:
            _print_nodes(rows, title=f"emulated cluster at {conn.address} (GPUs emulated)")
            console().print(f"connect with: mixfleet cluster status --address {conn.address}   (Ctrl-C stops)")
        stop.wait()
    finally:
        shutdown()
        cluster.shutdown()


def _print_nodes(rows: list[dict], title: str) -> None:
    print_table(title, ["accelerator", "node type", "node id", "CPUs", "GPUs", "memory GiB", "emulated"],
                [(r["accelerator_type"] or "cpu", r["node_type"] or "-", r["node_id"][:12], r["cpus"],
                  r["gpus"], r["memory_gib"], "yes" if r["emulated_gpus"] else "no") for r in rows])


def _ray_launcher(verb: str, file: str, dry_run: bool, yes: bool) -> None:
    cmd = ["ray", verb, file] + (["-y"] if yes else [])
    if dry_run:
        print(shlex.join(cmd))
        return
    raise typer.Exit(subprocess.call(cmd))


@app.command()
def up(file: str = typer.Argument(DEFAULT_CLUSTER_FILE), dry_run: bool = typer.Option(False, "--dry-run"),
       yes: bool = typer.Option(False, "--yes", "-y", help="don't ask for confirmation"),
       json_out: bool = typer.Option(False, "--json", help="rehearsal: print {address, dashboard, ...}")) -> None:
    """Launch the cluster FILE describes, with Ray's own launcher and autoscaler.

    A cloud provider (aws, ...) runs `ray up FILE`. The rehearsal provider
    (fake_multinode, see examples/cluster/local.yaml) runs
    `RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...` here:
    Ray's autoscaler then adds and removes nodes of FILE's types on this
    machine (GPUs emulated).
    """
    from mixfleet.platform.cluster_config import load_cluster_config

    spec = load_cluster_config(file)  # never hand Ray a file that fails our checks
    if not spec.is_rehearsal:
        _ray_launcher("up", file, dry_run, yes)
        return
    if dry_run:
        print(f"RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=<{file} wired to this head>")
        return
    from mixfleet.platform import launcher

    state = launcher.start(spec, file)
    env = launcher.client_env(state)
    if json_out:
        emit_json({**{k: state[k] for k in ("cluster_name", "address", "dashboard", "state_dir", "emulated")},
                   "env": env})
        return
    say = console().print
    say(f"rehearsal cluster '{spec.cluster_name}' is up (Ray's autoscaler on the fake multi-node provider; "
        "GPUs EMULATED)")
    say(f"  address:   {state['address']}\n  dashboard: {state['dashboard']}")
    say("  token auth: Ray's CLIs need, in their shell:\n"
        f"    export {' '.join(f'{k}={shlex.quote(v)}' for k, v in env.items())}")
    say(f"  jobs:      ray job submit --address {state['dashboard']} --working-dir . -- mixfleet ...")
    say(f"  serve:     serve deploy --address {state['dashboard']} CONFIG.yaml")
    say(f"  status:    mixfleet cluster status    stop: mixfleet cluster down {file}")


@app.command()
def down(file: str = typer.Argument(DEFAULT_CLUSTER_FILE), dry_run: bool = typer.Option(False, "--dry-run"),
         yes: bool = typer.Option(False, "--yes", "-y", help="don't ask for confirmation"),
         json_out: bool = typer.Option(False, "--json", help="rehearsal: print {stopped, processes}")) -> None:
    """Tear the cluster down (`ray down FILE`; a rehearsal: stop every process it started)."""
    from mixfleet.platform.cluster_config import load_cluster_config

    spec = load_cluster_config(file)
    if not spec.is_rehearsal:
        _ray_launcher("down", file, dry_run, yes)
        return
    from mixfleet.platform import launcher

    if dry_run:
        print(f"stop the processes of rehearsal cluster '{spec.cluster_name}' "
              f"(state in {launcher.cluster_dir(spec.cluster_name)})")
        return
    result = launcher.stop(spec.cluster_name)
    if json_out:
        emit_json({"cluster_name": spec.cluster_name, **result})
    elif result["stopped"]:
        console().print(f"rehearsal cluster '{spec.cluster_name}' stopped ({result['processes']} processes)")
    else:
        console().print(f"rehearsal cluster '{spec.cluster_name}' is not running")


def _resolve_address(address: str | None) -> str:
    """``--address``, else RAY_ADDRESS, else the running rehearsal cluster, else 'auto'.

    A rehearsal cluster's token is put in this process's environment (before Ray is imported).
    """
    import os

    from mixfleet.platform.launcher import live_clusters, use_cluster_auth

    live = live_clusters()
    address = address or os.environ.get("RAY_ADDRESS")
    if address is None:
        if len(live) > 1:
            raise InputError(f"{len(live)} rehearsal clusters are up ({', '.join(s['address'] for s in live)})",
                             "pick one with --address")
        address = live[0]["address"] if live else "auto"
    for state in live:
        if state["address"] == address:
            use_cluster_auth(state)
    return address


@app.command()
def status(address: str = typer.Option(None, "--address",
                                       help="Ray address; default: RAY_ADDRESS, the running rehearsal cluster, "
                                            "or 'auto'"),
           json_out: bool = typer.Option(False, "--json", help="print {nodes, by_accelerator, gpus, telemetry}"),
           watch: bool = typer.Option(False, "--watch", help="refresh the GPU table like top (Ctrl-C stops)"),
           interval: float = typer.Option(1.0, "--interval", help="seconds between --watch refreshes"),
           count: int = typer.Option(0, "--count", help="with --watch: stop after N refreshes (0: never)"),
           telemetry: bool = typer.Option(None, "--telemetry/--no-telemetry",
                                          help="start telemetry agents (kept running, detached) and show GPUs; "
                                               "default: on, except on an autoscaling cluster, where an agent "
                                               "would keep its node busy")) -> None:
    """Nodes of a running cluster grouped by accelerator type, with live GPU telemetry.

    GPUs of emulated nodes show source 'emulated' (no device behind them);
    real GPUs are read through NVML.
    """
    from mixfleet.platform.bootstrap import connect
    from mixfleet.platform.launcher import published_node_types
    from mixfleet.platform.status import (
        attach_telemetry,
        autoscaler_report,
        by_accelerator,
        gpu_table,
        node_rows,
    )

    if watch and json_out:
        raise InputError("--watch and --json do not mix", "use --json for one snapshot, --watch for a live table")
    if interval <= 0 or count < 0:
        raise InputError(f"bad --interval {interval} / --count {count}", "use --interval > 0 and --count >= 0")
    connect(_resolve_address(address))
    rows = node_rows()
    node_types = published_node_types()  # recorded by `cluster up`: an autoscaling cluster
    scaling = autoscaler_report(node_types) if node_types else None
    if telemetry is None:
        telemetry = scaling is None
    snap = None
    if telemetry or watch:
        from mixfleet.platform.telemetry import start_agents

        snap = start_agents()
        attach_telemetry(rows, snap)
    if json_out:
        out = {"nodes": rows, "by_accelerator": by_accelerator(rows), "autoscaler": scaling}
        if snap is not None:
            out["gpus"] = snap["gpus"]
            out["telemetry"] = {"ts": snap["ts"], "version": snap["version"], "reason": snap["reason"]}
        emit_json(out)
        return
    _print_nodes(rows, title="cluster nodes")
    if scaling is not None:
        _print_scaling(scaling)
    if snap is None:
        return
    if not watch:
        console().print(gpu_table(snap, "GPU telemetry"))
        return
    _watch(snap, interval, count)


def _print_scaling(scaling: dict) -> None:
    from mixfleet.platform.status import NODE_STATES

    print_table("autoscaler (Ray's): nodes per type", ["node type", *NODE_STATES, "idle for s"],
                [(n, *(t[k] for k in NODE_STATES), t["idle_s"]) for n, t in scaling["node_types"].items()])
    for d in scaling["demands"]:
        console().print(f"waiting for a node: {d['count']} x {d['resources']}")
    for f in scaling["failed"]:
        console().print(f"failed launch: {f['node_type']} ({f['node']})")


def _watch(snap: dict, interval: float, count: int) -> None:
    import time

    from rich.live import Live

    from mixfleet.platform.status import gpu_table
    from mixfleet.platform.telemetry import wait_for_update

    shown = 0
    title = "GPU telemetry (live, Ctrl-C stops)"
    try:
        with Live(gpu_table(snap, title), console=console(), auto_refresh=False) as live:
            while not count or shown < count:
                deadline = time.monotonic() + interval
                snap = wait_for_update(snap["version"], timeout_s=interval)
                time.sleep(max(0.0, deadline - time.monotonic()))
                live.update(gpu_table(snap, f"{title} @ {time.strftime('%H:%M:%S', time.localtime(snap['ts']))}"),
                            refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass
