"""Tunables of one MapReduce run, checked once when built.

:class:`RunConfig` is a strict, frozen pydantic model on the platform's
:class:`~mixfleet.platform.config.StrictModel`: unknown options are rejected
with the platform's one-line error (naming the key and the closest valid
one), types are checked without coercion, and the cross-field rules below
raise :class:`~mixfleet.errors.InputError` naming the bad value. The runtime
never mutates it and every actor gets the same copy (unpickling does not
validate again). Defaults suit a laptop; tests shrink the timeouts and sizes
to stay fast.
"""

from __future__ import annotations

from pydantic import ConfigDict, model_validator

from mixfleet.errors import ConfigError, InputError, unknown_name
from mixfleet.platform.config import StrictModel, parse_model

MiB = 1 << 20

OUTPUT_FORMATS = ("text", "jsonl", "parquet")
INPUT_FORMATS = ("text", "jsonl", "parquet")
PARTITIONERS = ("hash", "range")


class RunConfig(StrictModel):
    """How a job runs (not what it computes)."""

    model_config = ConfigDict(strict=True)

    num_workers: int | None = None          # None: one per CPU of the cluster
    num_reducers: int | None = None         # None: from the input size
    output_format: str = "text"
    input_format: str | None = None         # None: from the file extension
    partitioner: str | None = None          # None: the job's own (default "hash")
    overwrite: bool = False
    split_bytes: int | None = None          # None: from input size and workers
    min_split_bytes: int = 1 * MiB
    max_split_bytes: int = 64 * MiB
    chunk_bytes: int = 4 * MiB              # a map claims and reads this much at a time
    claim_s: float = 0.5                    # ... or what it reads in this long at its own rate, if less
    reduce_memory_bytes: int = 256 * MiB    # reduce spills sorted runs past this
    bytes_per_reducer: int = 256 * MiB
    max_attempts: int = 4                   # per task, for lost workers
    hot_key_fraction: float = 0.05          # a key above this share of a chunk's records is hot
    sample_records: int = 2000              # per split, for the range partitioner
    steal: bool = True                      # idle workers take the remainder of long splits
    seed: int = 0
    poll_s: float = 0.2
    # --- fault tolerance (health, speculation, checkpoints) ---
    heartbeat_s: float = 1.0                # a worker reports progress this often
    heartbeat_timeout_s: float = 10.0       # a task silent this long is presumed lost
    speculation: bool = True
    speculation_threshold: float = 0.75     # fraction of a phase done before backups start
    speculation_multiplier: float = 1.5     # a straggler runs longer than this x the median task
    speculation_cap: float = 0.10           # at most this share of running tasks backed up
    speculation_floor_s: float = 0.1        # never back up a younger attempt
    slow_worker_ratio: float = 0.5          # slower than this x median rate: not a backup host
    drain_grace_s: float = 2.0              # a losing map has this long to stop before its worker is replaced
    checkpoint: str | None = None           # URI of the durable task-table checkpoint
    durable_shuffle: bool = False           # also spill map outputs under the checkpoint URI
    checkpoint_every_s: float = 5.0
    max_master_restarts: int = 3

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.durable_shuffle and not self.checkpoint:
            raise InputError("--durable-shuffle needs --checkpoint URI", "pass --checkpoint where to spill map outputs")
        for name in ("heartbeat_s", "heartbeat_timeout_s", "checkpoint_every_s", "claim_s"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name}={getattr(self, name)} must be positive", "use a number of seconds > 0")
        if self.speculation_multiplier < 1 or self.speculation_floor_s < 0:
            raise InputError(f"speculation_multiplier={self.speculation_multiplier} and speculation_floor_s="
                             f"{self.speculation_floor_s} must be >= 1 and >= 0", "for example 1.5 and 0.1")
        if not 0 <= self.speculation_threshold <= 1 or not 0 < self.speculation_cap <= 1:
            raise InputError("speculation_threshold must be in [0, 1] and speculation_cap in (0, 1]",
                             "for example 0.75 and 0.1")
        if self.output_format not in OUTPUT_FORMATS:
            raise unknown_name("output format", self.output_format, OUTPUT_FORMATS)
        if self.input_format is not None and self.input_format not in INPUT_FORMATS:
            raise unknown_name("input format", self.input_format, INPUT_FORMATS)
        if self.partitioner is not None and self.partitioner not in PARTITIONERS:
            raise unknown_name("partitioner", self.partitioner, PARTITIONERS)
        for name, flag in (("num_workers", "--workers"), ("num_reducers", "--reducers")):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{flag} {value} is not a positive integer", f"pass {flag} 1 or more")
        for name in ("chunk_bytes", "reduce_memory_bytes", "min_split_bytes", "max_split_bytes",
                     "bytes_per_reducer", "max_attempts"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)} must be positive", "use 1 or more")
        return self

    @classmethod
    def from_kwargs(cls, **kwargs) -> RunConfig:
        """Build from keyword options (``run()``'s and the CLI's): an unknown option or a value of
        the wrong type is one :class:`InputError` naming the key (and the closest valid one)."""
        try:
            return parse_model(kwargs, cls, source="run options")
        except ConfigError as exc:
            raise InputError(exc.message, exc.hint) from None
