"""The plan the driver hands to a master: everything about one job that a master does not decide.

Built once by :func:`~mixfleet.mapreduce.runner.run` (after inputs, output and
options were checked) and passed to :class:`~mixfleet.mapreduce.master.Master`
whole; a restarted master gets the same plan with the next ``incarnation``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mixfleet.mapreduce.inputs import InputFile, Piece
from mixfleet.mapreduce.settings import RunConfig


@dataclass(frozen=True)
class JobPlan:
    job_ref: Any  # ObjectRef of the cloudpickled job instance
    files: list[InputFile]  # the resolved inputs; pieces refer to them by index
    splits: list[list[Piece]]  # the first step's map tasks
    num_steps: int
    partitioners: list[str]  # "hash" | "range", per step
    num_reducers: int
    num_workers: int
    worker_cpus: float
    output: tuple  # (file system, path, format)
    cfg: RunConfig
    fingerprint: str = ""  # of job, inputs, reducers and output: guards the checkpoint
    stores: dict = field(default_factory=dict)  # node id -> block store actor, started per run by the driver
    incarnation: int = 0  # how many masters ran this job before this one

    @property
    def input_bytes(self) -> int:
        return sum(sum(p.size for p in s) for s in self.splits)
