"""``mixfleet demo``: the end-to-end tour on an embedded local Ray.

The frame starts an emulated fleet from ``cluster.yaml`` (GPUs emulated),
then runs each part's step in order. A step is a function
``step(ctx: DemoContext) -> dict`` in ``mixfleet/<part>/demo.py``; its dict
becomes one key of the ``--json`` object, and for people it prints one
compact table (``output.print_table``) under a bold title line that starts
with the step's name, plus at most a line or two. The whole demo fits on two
screens: keep a new step to about five lines. Steps are listed in :data:`STEPS`.
"""

from __future__ import annotations

import importlib
import importlib.util
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer

from mixfleet.platform.output import console, emit_json

# (key in the JSON object, "module:function")
STEPS: list[tuple[str, str]] = [
    ("cluster", "mixfleet.platform.demo:step"),
    ("telemetry", "mixfleet.platform.telemetry.demo:step"),
    ("mapreduce", "mixfleet.mapreduce.demo:step"),
    ("routing", "mixfleet.routing.demo:step"),
    ("routing_live", "mixfleet.routing.serve.demo:step"),
    ("routing_real", "mixfleet.routing.serve.demo:real_step"),
    ("earlyexit", "mixfleet.earlyexit.demo:step"),
    ("earlyexit_serve", "mixfleet.earlyexit.serve.demo:step"),
    ("xfaas", "mixfleet.xfaas.demo:step"),
]


@dataclass
class DemoContext:
    """What a demo step gets: a scratch folder, the output mode, the cluster, where to keep files."""

    workdir: Path
    json_mode: bool
    cluster_file: str
    address: str | None = None
    extras: dict = field(default_factory=dict)
    out_dir: Path | None = None  # --out DIR: the only place the demo keeps files; None keeps nothing

    def say(self, text: str) -> None:
        console().print(text)

    def keep(self, name: str) -> Path:
        """Where a step writes a file for the user: under ``--out DIR``, else in the scratch folder (deleted)."""
        folder = self.out_dir if self.out_dir is not None else self.workdir
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package does not exist yet
        return False


app = typer.Typer(help="Run the end-to-end demo on an embedded local Ray.", add_completion=False,
                  invoke_without_command=True)


@app.callback()
def demo(
    json_out: bool = typer.Option(False, "--json", help="print one JSON object with a key per step"),
    cluster_file: str = typer.Option("cluster.yaml", "--cluster", help="cluster.yaml whose fleet to emulate"),
    only: list[str] = typer.Option([], "--only", help="run only these steps (repeatable)"),
    out_dir: Path | None = typer.Option(None, "--out", help="keep the demo's plots in this folder (default: keep "
                                    "nothing; the demo writes only to a temporary folder)"),
) -> None:
    """Run every part's demo step on an emulated fleet and exit 0.

    Without --out the demo writes nothing outside a temporary folder that is removed at the end.
    """
    from mixfleet.errors import unknown_name
    from mixfleet.platform.bootstrap import shutdown

    keys = [k for k, _ in STEPS]
    for name in only:
        if name not in keys:
            raise unknown_name("demo step", name, keys)
    result: dict = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mixfleet-demo-") as tmp:
        ctx = DemoContext(workdir=Path(tmp), json_mode=json_out, cluster_file=cluster_file, out_dir=out_dir)
        try:
            for key, target in STEPS:
                if only and key not in only and key != "cluster":
                    continue
                module_name, func_name = target.split(":")
                if not _has_module(module_name):
                    continue  # that part has no demo step yet
                step = getattr(importlib.import_module(module_name), func_name)
                s0 = time.perf_counter()
                out = step(ctx)
                out["elapsed_s"] = round(time.perf_counter() - s0, 2)
                result[key] = out
        finally:
            stop = ctx.extras.pop("cluster", None)
            shutdown()
            if stop is not None:
                stop.shutdown()
    result["elapsed_s"] = round(time.perf_counter() - t0, 2)
    if json_out:
        emit_json(result)
    else:
        kept = f"; plots kept in {out_dir}" if out_dir is not None else " (pass --out DIR to keep its plots)"
        console().print(f"demo finished in {result['elapsed_s']:.1f} s{kept}")
