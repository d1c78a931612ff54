"""The inline runner: the same job in this process, without Ray (mrjob's ``inline`` runner).

``run(job, inputs, output, runner="inline")`` is for unit tests and for
debugging with ``pdb`` (a breakpoint in a mapper stops in this process). It
runs the code the Ray workers run (:func:`~mixfleet.mapreduce.execute.run_map`
/ :func:`~mixfleet.mapreduce.execute.run_reduce`, the same combiner,
partitioner, merge and commit) on the same kind of plan, so that a job that
only works by accident of order fails here too:

- the input is cut into at least two map splits (the split size is capped at
  half the input) and there are at least two reducers;
- the maps run in a shuffled order (seeded by ``seed``), and every reducer
  sees the map outputs in a shuffled order, so values arrive in an order
  unrelated to the input's;
- counters, ``_SUCCESS`` and part files are as with Ray; there are no
  retries, backups or checkpoints (one attempt per task).
"""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

from mixfleet.mapreduce.execute import reduce_counters, run_map, run_reduce, sample_keys
from mixfleet.mapreduce.inputs import InputFile, Piece, plan_splits, split_size
from mixfleet.mapreduce.job import Job
from mixfleet.mapreduce.keys import hash_partitioner, range_boundaries, range_partitioner
from mixfleet.mapreduce.outputs import abort, commit, write_attempt
from mixfleet.mapreduce.results import JobReport
from mixfleet.mapreduce.settings import RunConfig


def inline_splits(files: list[InputFile], cfg: RunConfig) -> list[list[Piece]]:
    """The Ray runner's plan for two workers, with splits of at most half the input."""
    total = sum(f.size for f in files)
    cap = max(1, math.ceil(total / 2))
    size = min(cfg.split_bytes or split_size(total, 2, cfg), cap)
    return plan_splits(files, 2, cfg.model_copy(update={"split_bytes": size}))


def run_inline(job: Job, files: list[InputFile], splits: list[list[Piece]], partitioner: str,
               reducers: int, output: tuple, cfg: RunConfig) -> JobReport:
    """Run every step here; returns the report the Ray master would (no timeline)."""
    fs, path, fmt = output
    rng = random.Random(cfg.seed)
    counters: dict[str, dict[str, int]] = {}
    launched = {"map": 0, "reduce": 0}
    steps = job.steps()
    pieces = splits
    try:
        for s, step in enumerate(steps):
            last = s == len(steps) - 1
            boundaries = None
            if partitioner == "range":
                sample: list = []
                for split in pieces:
                    entry = files[split[0].file] if split[0].file >= 0 else None
                    sample += sample_keys(step, entry, split[0], cfg.chunk_bytes, cfg.sample_records)
                boundaries = range_boundaries(sample, reducers)
            part_of = range_partitioner(boundaries) if boundaries is not None else hash_partitioner(reducers)
            blocks: list[list[bytes | None]] = [[] for _ in pieces]
            for i in rng.sample(range(len(pieces)), len(pieces)):
                out = run_map(job, step, f"s{s}-m-{i:05d}", files, pieces[i], part_of, reducers,
                              chunk_bytes=cfg.chunk_bytes, hot_key_fraction=cfg.hot_key_fraction, attempt=1,
                              worker=0)
                blocks[i] = out.blocks
                _merge(counters, out.all_counters())
                launched["map"] += 1
            winners: dict[int, str] = {}
            following: list[list[Piece]] = []
            for r in rng.sample(range(reducers), reducers):
                sources = [b[r] for b in blocks if b[r] is not None]
                rng.shuffle(sources)
                stream, merger, ctx = run_reduce(job, step, f"s{s}-r-{r:05d}", sources, cfg.reduce_memory_bytes,
                                                 attempt=1, worker=0)
                if last:
                    winners[r], n = write_attempt(fs, path, r, 1, fmt, stream)
                else:
                    pairs = list(stream)
                    n = len(pairs)
                    if pairs:
                        following.append([Piece(block=pickle.dumps(pairs, protocol=5), block_kind="pairs",
                                                nbytes=n)])
                _merge(counters, reduce_counters(ctx, merger, n))
                launched["reduce"] += 1
            pieces = following
        parts = commit(fs, path, winners, fmt)
    except BaseException:
        abort(fs, path)
        raise
    counters.setdefault("mixfleet", {}).update(map_attempts=launched["map"], reduce_attempts=launched["reduce"])
    total = launched["map"] + launched["reduce"]
    return JobReport("succeeded", launched["map"], launched["reduce"],
                     {"launched": total, "failed": 0, "speculative": 0}, counters, parts)


def _merge(into: dict, counters: dict[str, Any]) -> None:
    for group, names in counters.items():
        bucket = into.setdefault(group, {})
        for name, n in names.items():
            bucket[name] = bucket.get(name, 0) + n
