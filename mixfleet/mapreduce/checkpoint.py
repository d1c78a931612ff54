"""The master's durable checkpoint: the task table as JSON on any ``pyarrow.fs`` URI.

Written at phase transitions and periodically (atomically: a temporary file
then a rename). It holds each task's state, its pieces (stolen tails
included, so a resumed run has the same tasks), the winner's counters and
where the winner's output lives: ``"store"`` (the block store, alive while
the driver is), durable shuffle files, or a reduce attempt file. A
fingerprint of the job, inputs, reducers and output refuses a checkpoint
from a different job.

Invariant: a task recorded ``done`` here has an output that was complete
when recorded; a resumed master re-runs it only if that output is gone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from typing import Any

from mixfleet.errors import InputError
from mixfleet.mapreduce.inputs import Piece
from mixfleet.mapreduce.results import MapDone, ReduceDone

VERSION = 1
FILE = "mapreduce-checkpoint.json"


def fingerprint(job_name: str, files: list, num_reducers: int, output: str, steps: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([job_name, [(f.uri, f.size) for f in files], num_reducers, output, steps]).encode())
    return h.hexdigest()[:16]


def piece_to_json(p: Any) -> list | None:
    return None if p.block_kind else [p.file, p.start, p.end, p.nbytes]


def piece_from_json(p: list) -> Piece:
    return Piece(file=p[0], start=p[1], end=p[2], nbytes=p[3])


_LIVE = ("refs", "block")  # ObjectRefs live only in this run's block stores: never saved


def task_to_json(t: Any) -> dict:
    """A task of the table as saved, with a done task's result (read back by :func:`result_from_json`)."""
    result = None
    if t.state.value == "done" and t.result is not None:
        result = {f.name: getattr(t.result, f.name) for f in fields(t.result) if f.name not in _LIVE}
        if "hot" in result:
            result["hot"] = {str(k): n for k, n in result["hot"].items()}
    return {"id": t.id, "index": t.index, "state": t.state.value,
            "pieces": [piece_to_json(p) for p in t.pieces], "result": result}


def result_from_json(kind: str, state: dict) -> MapDone | ReduceDone:
    """A saved result, its ObjectRefs empty; keys an older checkpoint has and the dataclass lacks are ignored."""
    cls = MapDone if kind == "map" else ReduceDone
    names = set(cls.__dataclass_fields__) - set(_LIVE)
    return cls(**{k: v for k, v in state.items() if k in names})


def save(fs: Any, folder: str, state: dict) -> None:
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/.{FILE}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps({"version": VERSION, **state}, default=str).encode())
    fs.move(tmp, f"{folder}/{FILE}")


def load(fs: Any, folder: str, expect_fingerprint: str) -> dict | None:
    """The saved state, ``None`` if there is none; raises if it is another job's."""
    import pyarrow.fs as pafs

    path = f"{folder}/{FILE}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_file(path) as f:
        try:
            state = json.loads(f.read())
        except json.JSONDecodeError as exc:
            raise InputError(f"checkpoint '{path}' is corrupt: {exc.msg}",
                             "remove it to start the job from scratch") from None
    if state.get("fingerprint") != expect_fingerprint:
        raise InputError(f"checkpoint '{folder}' belongs to a different job (inputs, reducers or output differ)",
                         "pass a fresh --checkpoint folder, or the same job, inputs and output as before")
    return state


def clear(fs: Any, folder: str) -> None:
    """Remove this module's files under ``folder`` (the checkpoint and durable shuffle), nothing else."""
    import pyarrow.fs as pafs

    if fs.get_file_info(f"{folder}/{FILE}").type == pafs.FileType.File:
        fs.delete_file(f"{folder}/{FILE}")
    if fs.get_file_info(f"{folder}/shuffle").type == pafs.FileType.Directory:
        fs.delete_dir(f"{folder}/shuffle")
