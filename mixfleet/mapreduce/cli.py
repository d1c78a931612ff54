"""``mixfleet mapreduce run FILE.py:JobClass --input ... --output ...``.

The job file is imported here and shipped to the cluster by value (and, with
``--address``, also as the job's ``runtime_env`` working dir). Without
``--json`` a rich progress bar per phase shows tasks done/running/pending,
MB/s and the ETA; with ``--json`` one object goes to stdout. Any other run
setting (:class:`~mixfleet.mapreduce.settings.RunConfig`) is ``--conf KEY=VALUE``
(``-D``, as in Hadoop), for example ``-D speculation_multiplier=2.0``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile

import typer

from mixfleet.errors import InputError
from mixfleet.platform.output import console, emit_json, print_table

app = typer.Typer(help="Run MapReduce jobs on Ray actors.", no_args_is_help=True, add_completion=False)


# settings with a flag of their own: --conf names the flag instead
_OWN_FLAGS = {"num_workers": "--workers", "num_reducers": "--reducers", "output_format": "--format",
              "input_format": "--input-format", "partitioner": "--partitioner", "overwrite": "--overwrite",
              "speculation": "--no-speculation", "checkpoint": "--checkpoint", "durable_shuffle": "--durable-shuffle"}


def parse_conf(pairs: list[str]) -> dict:
    """``["KEY=VALUE", ...]`` -> settings; a value is read as an int, a float, true/false,
    none, or else kept as text (the settings' own validation names a wrong type)."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise InputError(f"--conf '{pair}' is not KEY=VALUE", "for example --conf speculation_multiplier=2.0")
        if key in _OWN_FLAGS:
            raise InputError(f"--conf {key} has a flag of its own", f"use {_OWN_FLAGS[key]}")
        out[key] = _value(raw)
    return out


def _value(raw: str):
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
        return int(number) if number.is_integer() and "e" in raw.lower() else number  # 1e6: an int
    except ValueError:
        pass
    return {"true": True, "false": False, "none": None, "null": None}.get(raw.lower(), raw)


@app.callback()
def _group() -> None:
    """Run MapReduce jobs on Ray actors."""


def load_job_class(spec: str):
    """``path/to/file.py:Class`` or ``package.module:Class`` -> the Job subclass."""
    from mixfleet.mapreduce.job import Job
    from mixfleet.platform.usercode import get_attribute, load_module, split_reference

    target, cls_name = split_reference(spec, kind="job", name="JobClass",
                                        example="examples/mapreduce/wordcount.py:WordCount")
    module = load_module(target, what="job file")
    jobs = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Job) and v is not Job]
    cls = get_attribute(module, cls_name, kind="job class", valid=jobs, where=target)
    if not (isinstance(cls, type) and issubclass(cls, Job)):
        raise InputError(f"'{cls_name}' in '{target}' is not a mixfleet.mapreduce.Job subclass",
                         f"job classes there: {', '.join(jobs) or 'none'}")
    return cls


def _with_source(tb: str, module) -> str:
    """Put the job file's name and source lines back into a worker traceback.

    The job travels by value, so worker frames of its code are named
    ``<dynamic-code>``; the driver has the file and fills the lines in.
    """
    import linecache
    import re

    path = getattr(module, "__file__", None)
    if not path:
        return tb
    out = []
    for line in tb.splitlines():
        m = re.match(r'(\s*)File "<dynamic-code>", line (\d+), in (.+)', line)
        if m:
            out.append(f'{m.group(1)}File "{path}", line {m.group(2)}, in {m.group(3)}')
            src = linecache.getline(path, int(m.group(2))).strip()
            if src:
                out.append(f"{m.group(1)}  {src}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class _Bars:
    """Rich progress: one bar per phase with done/running/pending, MB/s and ETA."""

    def __init__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description:<7}"), BarColumn(),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console(), transient=False)
        self.ids: dict[str, int] | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.ids is not None:
            self.progress.stop()

    def update(self, st: dict) -> None:
        if self.ids is None:  # started on the first report, so an input error prints nothing but its line
            self.ids = {}
            self.progress.start()
        mbps = st["bytes_done"] / 1e6 / max(st["elapsed_s"], 1e-6)
        step = f" step {st['step'] + 1}/{st['steps']}" if st["steps"] > 1 else ""
        for kind, counts in (("map", st["maps"]), ("reduce", st["reduces"])):
            total = sum(counts.values())
            if not total and kind not in self.ids:
                continue
            if kind not in self.ids:
                self.ids[kind] = self.progress.add_task(kind, total=max(total, 1), detail="")
            detail = f"running {counts['running']} pending {counts['pending']}"
            if kind == "map":
                detail += f"  {mbps:6.1f} MB/s{step}"
            self.progress.update(self.ids[kind], total=max(total, 1), completed=counts["done"], detail=detail)


@app.command("run")
def run_cmd(
    job: str = typer.Argument(..., help="FILE.py:JobClass or module:JobClass"),
    inputs: list[str] = typer.Option(..., "--input", "-i", help="path, glob, folder or s3:// gs:// hdfs:// URI"),
    output: str = typer.Option(..., "--output", "-o", help="output folder or URI"),
    reducers: int | None = typer.Option(None, "--reducers", help="reduce tasks (default: from input size)"),
    workers: int | None = typer.Option(None, "--workers", help="worker actors (default: one per CPU)"),
    output_format: str = typer.Option("text", "--format", help="text | jsonl | parquet"),
    input_format: str | None = typer.Option(None, "--input-format", help="text | jsonl | parquet (default: by extension)"),
    partitioner: str | None = typer.Option(None, "--partitioner", help="hash | range (default: the job's)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing output"),
    address: str | None = typer.Option(None, "--address", help="join this Ray cluster (default: embedded, or RAY_ADDRESS)"),
    no_speculation: bool = typer.Option(False, "--no-speculation", help="turn LATE backup tasks off"),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="URI for the durable task-table checkpoint (resumable)"),
    durable_shuffle: bool = typer.Option(False, "--durable-shuffle", help="also spill map outputs under --checkpoint"),
    conf: list[str] = typer.Option([], "--conf", "-D", help="KEY=VALUE for any other run setting, repeatable "
                                   "(e.g. -D speculation_multiplier=2.0, -D chunk_bytes=1048576)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Run a MapReduce job and commit its output (part-r-NNNNN + _SUCCESS)."""
    from mixfleet.mapreduce.execute import UserCodeError
    from mixfleet.mapreduce.job import check_steps
    from mixfleet.mapreduce.runner import Interrupted, run
    from mixfleet.platform.bootstrap import connect, shutdown

    cls = load_job_class(job)
    options = dict(output_format=output_format, input_format=input_format, partitioner=partitioner,
                   overwrite=overwrite, speculation=not no_speculation, checkpoint=checkpoint,
                   durable_shuffle=durable_shuffle, **parse_conf(conf))
    from mixfleet.mapreduce.settings import RunConfig

    RunConfig.from_kwargs(num_reducers=reducers, num_workers=workers, **options)  # fail before Ray starts
    check_steps(cls())
    shipped = None
    try:
        if address:
            shipped = tempfile.mkdtemp(prefix="mixfleet-job-")
            shutil.copy(job.rpartition(":")[0], shipped) if job.rpartition(":")[0].endswith(".py") else None
            connect(address, runtime_env={"working_dir": shipped})
        bars = _Bars() if not json_out else None
        try:
            if bars:
                with bars:
                    result = run(cls, inputs, output, reducers, workers, address=address, progress=bars.update,
                                 **options)
            else:
                result = run(cls, inputs, output, reducers, workers, address=address, **options)
        except UserCodeError as exc:
            console().print(_with_source(exc.user_traceback, sys.modules[cls.__module__]),
                            markup=False, highlight=False, end="")
            raise
        except Interrupted as exc:  # the job's actors are stopped; stop an embedded Ray too
            shutdown()
            print("error: interrupted", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
    finally:
        if shipped:
            shutil.rmtree(shipped, ignore_errors=True)
    if json_out:
        emit_json(result.to_dict())
        return
    print_table(f"{cls.__name__}: {result.status} in {result.elapsed_s:.2f} s -> {output}",
                ["map tasks", "reduce tasks", "attempts", "failed", "speculative"],
                [(result.map_tasks, result.reduce_tasks, result.attempts["launched"], result.attempts["failed"],
                  result.attempts["speculative"])])
    print_table("counters", ["group", "name", "value"],
                [(g, n, v) for g, names in sorted(result.counters.items()) for n, v in sorted(names.items())])
