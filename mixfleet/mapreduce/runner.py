"""The driver side: :func:`run` plans a job, starts its master and waits.

``run`` resolves inputs and the output (user errors surface here, before
any actor starts), plans splits and reducers, ships the job to the master
actor and polls its status for the progress display. It returns a
:class:`JobResult` only after the master reports the output committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mixfleet.errors import InputError, JobError, MixfleetError
from mixfleet.mapreduce import checkpoint as ckpt
from mixfleet.mapreduce.inline import inline_splits, run_inline
from mixfleet.mapreduce.inputs import dataset_splits, filesystem_for, plan_splits, resolve_inputs
from mixfleet.mapreduce.job import Job, check_steps
from mixfleet.mapreduce.outputs import abort, check_output, input_folders, prepare_output, read_output
from mixfleet.mapreduce.plan import JobPlan
from mixfleet.mapreduce.results import JobReport
from mixfleet.mapreduce.settings import RunConfig
from mixfleet.mapreduce.store import start_stores


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM arrived while a job ran; ``exit_code`` is 128 + the signal.

    Raised by :func:`run` after the job's master (and with it every worker) was
    stopped and, for a job without ``checkpoint``, the attempt files removed.
    A checkpointed job keeps its checkpoint (written atomically) and resumes."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


@contextlib.contextmanager
def _signals():
    """While a job runs in the main thread, SIGINT and SIGTERM raise :class:`Interrupted`
    (Ray's own SIGTERM handler would exit with status 15). The first signal masks both,
    so that the clean-up it starts is not itself interrupted. Yields a dict whose
    ``signum`` says which signal came: ``ray.get``/``ray.wait`` turn any exception
    raised by a handler into a plain ``KeyboardInterrupt``."""
    caught: dict = {}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def interrupt(signum, _frame):
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        caught["signum"] = signum
        raise Interrupted(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, interrupt)
    try:
        yield caught
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@dataclass
class JobResult:
    """What a finished job reports (``to_dict`` is the CLI's ``--json`` object)."""

    status: str
    output: str
    elapsed_s: float
    map_tasks: int
    reduce_tasks: int
    attempts: dict[str, int]
    counters: dict[str, dict[str, int]]
    parts: list[str] = field(default_factory=list)
    output_format: str = "text"
    timeline: list[dict] = field(default_factory=list)
    filesystem: Any = None
    path: str = ""

    def to_dict(self) -> dict:
        return {"status": self.status, "output": self.output, "elapsed_s": round(self.elapsed_s, 3),
                "map_tasks": self.map_tasks, "reduce_tasks": self.reduce_tasks,
                "attempts": self.attempts, "counters": self.counters}

    def read(self) -> Iterator[tuple[Any, Any]]:
        """The committed pairs, part by part (text output gives ``str`` keys and values)."""
        return read_output(self.filesystem, self.path, self.output_format)

    def to_dataset(self):
        """The output as a ``ray.data.Dataset`` with ``key`` and ``value`` columns."""
        import ray.data

        paths = [p for p in self.parts]
        if not paths:
            return ray.data.from_items([])
        if self.output_format == "parquet":
            return ray.data.read_parquet(paths, filesystem=self.filesystem)
        jsonl = self.output_format == "jsonl"

        def split(row: dict) -> dict:
            if jsonl:
                return json.loads(row["text"])
            key, _, value = row["text"].partition("\t")
            return {"key": key, "value": value}

        return ray.data.read_text(paths, filesystem=self.filesystem, file_extensions=None).map(split)


def _ship_by_value(job: Job) -> None:
    """Job classes outside installed packages (tests, examples, job files) travel by value."""
    import cloudpickle

    for cls in type(job).__mro__:
        mod = sys.modules.get(cls.__module__)
        if mod is None or cls.__module__ in ("__main__", "builtins") or cls.__module__.startswith("mixfleet."):
            continue
        path = getattr(mod, "__file__", "") or ""
        if "site-packages" not in path:
            cloudpickle.register_pickle_by_value(mod)


def default_reducers(total_bytes: int, workers: int, cfg: RunConfig) -> int:
    """At least 2 (mrjob's local runner does the same), more as data grows."""
    return max(2, min(4 * workers, math.ceil(total_bytes / cfg.bytes_per_reducer)))


def run(job: Job | type[Job], inputs: Any, output: str, num_reducers: int | None = None,
        num_workers: int | None = None, *, address: str | None = None, filesystem: Any = None,
        progress: Callable[[dict], None] | None = None, runner: str = "ray", **options: Any) -> JobResult:
    """Run ``job`` over ``inputs`` (URIs, globs, or a ``ray.data.Dataset``) into ``output``.

    Options are the fields of :class:`RunConfig` (``output_format``,
    ``overwrite``, ``partitioner``, ``reduce_memory_bytes``, ...). ``runner="inline"``
    runs the job in this process without Ray (:mod:`~mixfleet.mapreduce.inline`).
    Raises :class:`InputError` for bad inputs, :class:`JobError` if the job fails
    (leaving no part file and no ``_temporary``) and :class:`Interrupted` on
    Ctrl-C / SIGTERM.
    """
    t0 = time.perf_counter()
    if runner not in ("ray", "inline"):
        from mixfleet.errors import unknown_name

        raise unknown_name("runner", runner, ("ray", "inline"))
    cfg = RunConfig.from_kwargs(num_reducers=num_reducers, num_workers=num_workers, **options)
    if isinstance(job, type):
        job = job()
    if not isinstance(job, Job):
        raise InputError(f"job {job!r} is not a mixfleet.mapreduce.Job", "subclass mixfleet.mapreduce.Job")
    steps = check_steps(job)
    if not steps:
        raise InputError(f"job {type(job).__name__} has no steps", "define mapper/reducer or steps()")
    import cloudpickle
    import ray

    from mixfleet.platform.bootstrap import connect

    is_dataset = type(inputs).__name__ in ("Dataset", "MaterializedDataset") and hasattr(inputs, "to_arrow_refs")
    files = [] if is_dataset else resolve_inputs(inputs, cfg, filesystem)
    out_fs, out_path = filesystem_for(str(output), filesystem)
    check_output(out_fs, out_path, str(output), cfg.overwrite, files, input_folders(inputs, filesystem))
    partitioner = cfg.partitioner or getattr(job, "partitioner", "hash")
    if partitioner not in ("hash", "range"):
        from mixfleet.errors import unknown_name

        raise unknown_name("partitioner", partitioner, ("hash", "range"))

    if runner == "inline":
        if is_dataset or cfg.checkpoint:
            raise InputError("the inline runner reads files and keeps no checkpoint",
                             "pass input files and no checkpoint, or use runner='ray'")
        cpus, workers = 2, 2
        splits = inline_splits(files, cfg)
    else:
        connect(address)
        cpus = ray.cluster_resources().get("CPU", 1)
        workers = cfg.num_workers or max(1, int(cpus))
        splits = dataset_splits(inputs) if is_dataset else plan_splits(files, workers, cfg)
    total = sum(sum(p.size for p in s) for s in splits)
    reducers = cfg.num_reducers or default_reducers(total, workers, cfg)
    job_name = f"{type(job).__module__}.{type(job).__qualname__}"
    fp = ckpt.fingerprint(job_name, files, reducers, str(output), len(steps))
    resuming = False
    if cfg.checkpoint:
        if is_dataset:
            raise InputError("--checkpoint is not supported for a ray.data.Dataset input",
                             "write the dataset to files first, or run without a checkpoint")
        ck_fs, ck_path = filesystem_for(cfg.checkpoint)
        resuming = not cfg.overwrite and ckpt.load(ck_fs, ck_path, fp) is not None
        if not resuming:
            ckpt.clear(ck_fs, ck_path)
    if not resuming:
        prepare_output(out_fs, out_path, str(output), cfg.overwrite)

    job._note_sources()
    if runner == "inline":
        report = run_inline(job, files, splits, partitioner, reducers, (out_fs, out_path, cfg.output_format), cfg)
    else:
        _ship_by_value(job)
        job_ref = ray.put(cloudpickle.dumps(job))
        with _signals() as caught:
            try:
                plan = JobPlan(job_ref, files, splits, len(steps), [partitioner] * len(steps), reducers, workers,
                               min(1.0, cpus / workers), (out_fs, out_path, cfg.output_format), cfg, fp)
                report = _drive(plan, progress)
            except KeyboardInterrupt:
                if not cfg.checkpoint:  # nothing to resume from: leave no attempt file behind
                    abort(out_fs, out_path)
                raise Interrupted(caught.get("signum", signal.SIGINT)) from None
            except JobError:
                if not cfg.checkpoint:
                    abort(out_fs, out_path)
                raise
    if report.status != "succeeded":
        abort(out_fs, out_path)  # again, now that the master and its workers are gone
        error = report.error
        raise error if isinstance(error, MixfleetError) else JobError(f"job failed: {error}")
    return JobResult("succeeded", str(output), time.perf_counter() - t0, report.map_tasks, report.reduce_tasks,
                     report.attempts, report.counters, report.parts, cfg.output_format, report.timeline,
                     out_fs, out_path)


def _drive(plan: JobPlan, progress: Callable[[dict], None] | None) -> JobReport:
    """Start the block stores and a master on ``plan``, wait for its report; restart a dead
    master from the checkpoint. The master and the stores are killed however this ends
    (the workers, owned by the master, go with it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mixfleet.mapreduce.master import Master
    from mixfleet.mapreduce.store import BlockStore

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)  # with the driver
    stores = start_stores(BlockStore)
    cfg, incarnation = plan.cfg, 0
    try:
        while True:
            name = f"mixfleet-mapreduce-master-{uuid.uuid4().hex[:8]}-{incarnation}"
            master = ray.remote(Master).options(num_cpus=0, max_restarts=0, name=name, scheduling_strategy=here).remote(
                dataclasses.replace(plan, stores=stores, incarnation=incarnation))
            try:
                return _wait(master, cfg, progress)
            except ray.exceptions.RayActorError:
                if not cfg.checkpoint or incarnation >= cfg.max_master_restarts:
                    raise JobError("the job's master actor died" + ("" if cfg.checkpoint else " and there is no --checkpoint to resume from"),
                                   "rerun with --checkpoint URI to make the job resumable") from None
                incarnation += 1  # resume from the checkpoint with a fresh master
            finally:
                ray.kill(master)
    finally:
        for store in stores.values():
            ray.kill(store)


def _wait(master: Any, cfg: RunConfig, progress: Callable[[dict], None] | None) -> JobReport:
    import ray

    done_ref = master.run.remote()
    while True:
        ready, _ = ray.wait([done_ref], timeout=cfg.poll_s)
        if ready:
            break
        if progress:
            try:
                progress(ray.get(master.status.remote()))
            except ray.exceptions.RayActorError:
                break  # the master died: ray.get below raises it
    report = ray.get(done_ref)
    if progress:
        progress({**ray.get(master.status.remote()), "final": True})
    return report
