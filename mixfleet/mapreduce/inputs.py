"""Input resolution and dynamic split planning through ``pyarrow.fs``.

An input is a local path, a glob, a folder, or a ``s3://`` / ``gs://`` /
``hdfs://`` URI (query options such as ``?endpoint_override=...`` are passed
to pyarrow). Folders are read recursively, skipping names that start with
``_`` or ``.`` (Hadoop's convention for markers and temporaries).

Invariants of the plan:
- A split is a list of :class:`Piece`; the pieces of all splits cover every
  input byte exactly once. Byte ranges own the lines that *start* inside
  them, so any cut point is valid (which is what lets an idle worker take
  over the untouched remainder of a running split).
- Small files are coalesced into one split up to the split size; big files
  are cut into near-equal ranges.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import math
import os
from dataclasses import dataclass
from typing import Any

from mixfleet.errors import InputError
from mixfleet.mapreduce.settings import RunConfig

EXTENSION_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One resolved input file; ``fs`` is a picklable ``pyarrow.fs.FileSystem``."""

    uri: str
    fs: Any
    path: str
    size: int
    fmt: str


@dataclass(frozen=True)
class Piece:
    """Part of a split: bytes ``[start, end)`` of a text/JSONL file, row groups
    ``[start, end)`` of a Parquet file, or a whole in-memory block (``block``
    is an ObjectRef of a pickled list of pairs or of an Arrow table)."""

    file: int = -1
    start: int = 0
    end: int = 0
    block: Any = None
    block_kind: str = ""  # "pairs" | "arrow"
    nbytes: int = 0

    @property
    def size(self) -> int:
        return self.nbytes or (self.end - self.start)


def _split_uri(uri: str, filesystem: Any = None) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if filesystem is not None:
        return filesystem, uri.split("://", 1)[-1] if "://" in uri else uri
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError with a clear text
        raise InputError(f"cannot open '{uri}': {str(exc).splitlines()[0]}",
                         "use a local path or an s3://, gs:// or hdfs:// URI") from None


def filesystem_for(uri: str, filesystem: Any = None) -> tuple[Any, str]:
    """The ``(FileSystem, path)`` pair of ``uri`` (local paths made absolute)."""
    return _split_uri(uri, filesystem)


def _format_of(path: str, forced: str | None) -> str:
    if forced:
        return forced
    return EXTENSION_FORMATS.get(os.path.splitext(path)[1].lower(), "text")


def _hidden(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return base.startswith(("_", "."))


def _expand(uri: str, filesystem: Any) -> list[tuple[Any, str, str, int]]:
    """``[(fs, path, display, size)]`` for one input argument."""
    import pyarrow.fs as pafs

    fs, path = _split_uri(uri, filesystem)
    scheme = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    if _GLOB_CHARS & set(path):
        if isinstance(fs, pafs.LocalFileSystem):
            matches = sorted(globlib.glob(path))
        else:
            parent = path[: path.find(next(c for c in path if c in _GLOB_CHARS))].rsplit("/", 1)[0]
            infos = fs.get_file_info(pafs.FileSelector(parent, recursive=True, allow_not_found=True))
            matches = sorted(i.path for i in infos if fnmatch.fnmatchcase(i.path, path))
        if not matches:
            raise InputError(f"input '{uri}' matches no file", "check the glob pattern and the folder")
        out = []
        for match in matches:
            out += _expand_path(fs, match, scheme, match)
        return out
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise InputError(f"input '{uri}' not found", "check the path (or pass an existing file, folder or glob)")
    return _expand_path(fs, path, scheme, uri)


def _expand_path(fs: Any, path: str, scheme: str, display: str) -> list[tuple[Any, str, str, int]]:
    import pyarrow.fs as pafs

    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = sorted((i for i in infos if i.type == pafs.FileType.File
                        and not any(_hidden(p) for p in i.path[len(path):].split("/") if p)),
                       key=lambda i: i.path)
        return [(fs, i.path, scheme + i.path if scheme else i.path, i.size) for i in files]
    if info.type != pafs.FileType.File:
        raise InputError(f"input '{display}' is not a regular file", "pass files, folders or globs")
    return [(fs, path, display if scheme else path, info.size)]


def _check_readable(entry: InputFile) -> None:
    import pyarrow.fs as pafs

    if isinstance(entry.fs, pafs.LocalFileSystem) and not os.access(entry.path, os.R_OK):
        raise InputError(f"input '{entry.uri}' is not readable (permission denied)",
                         "fix its permissions or leave it out of --input")
    if entry.fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            with entry.fs.open_input_file(entry.path) as f:
                pq.ParquetFile(f).metadata  # noqa: B018 - validates the footer
        except Exception as exc:
            raise InputError(f"input '{entry.uri}' is unreadable as Parquet: {str(exc).splitlines()[0]}",
                             "pass a valid Parquet file or set the input format") from None


def resolve_inputs(inputs: list[str], cfg: RunConfig, filesystem: Any = None) -> list[InputFile]:
    """Every input file in order; raises :class:`InputError` naming a bad input."""
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs:
        raise InputError("no input given", "pass --input PATH (repeatable)")
    files: list[InputFile] = []
    seen: set[str] = set()
    for uri in inputs:
        for fs, path, display, size in _expand(str(uri), filesystem):
            if (display, path) in seen:
                continue
            seen.add((display, path))
            entry = InputFile(display, fs, path, size, _format_of(path, cfg.input_format))
            _check_readable(entry)
            files.append(entry)
    return files


def split_size(total: int, workers: int, cfg: RunConfig) -> int:
    """About four splits per worker, clamped to ``[min, max]`` split bytes."""
    if cfg.split_bytes:
        return cfg.split_bytes
    return int(min(cfg.max_split_bytes, max(cfg.min_split_bytes, math.ceil(total / (4 * max(1, workers))))))


def plan_splits(files: list[InputFile], workers: int, cfg: RunConfig) -> list[list[Piece]]:
    """Group the files into splits of about :func:`split_size` bytes."""
    total = sum(f.size for f in files)
    target = split_size(total, workers, cfg)
    splits: list[list[Piece]] = []
    current: list[Piece] = []
    current_bytes = 0

    def flush() -> None:
        nonlocal current, current_bytes
        if current:
            splits.append(current)
        current, current_bytes = [], 0

    for idx, f in enumerate(files):
        if f.fmt == "parquet":
            flush()
            splits += _parquet_splits(idx, f, target)
            continue
        if f.size == 0:
            continue
        if f.size > target:
            flush()
            n = math.ceil(f.size / target)
            bounds = [round(i * f.size / n) for i in range(n + 1)]
            splits += [[Piece(idx, bounds[i], bounds[i + 1])] for i in range(n)]
            continue
        if current_bytes + f.size > target:
            flush()
        current.append(Piece(idx, 0, f.size))
        current_bytes += f.size
    flush()
    return splits


def _parquet_splits(idx: int, f: InputFile, target: int) -> list[list[Piece]]:
    import pyarrow.parquet as pq

    with f.fs.open_input_file(f.path) as fh:
        meta = pq.ParquetFile(fh).metadata
    splits, start, acc = [], 0, 0
    for rg in range(meta.num_row_groups):
        acc += meta.row_group(rg).total_byte_size
        if acc >= target:
            splits.append([Piece(idx, start, rg + 1, nbytes=acc)])
            start, acc = rg + 1, 0
    if start < meta.num_row_groups:
        splits.append([Piece(idx, start, meta.num_row_groups, nbytes=acc)])
    return splits


def dataset_splits(dataset: Any) -> list[list[Piece]]:
    """One split per block of a ``ray.data.Dataset`` (executed here, before workers start)."""
    import ray

    @ray.remote(num_cpus=0)
    def nbytes(table) -> int:
        return int(table.nbytes) if table.num_rows else 0

    refs = dataset.to_arrow_refs()
    sizes = ray.get([nbytes.remote(r) for r in refs]) if refs else []
    return [[Piece(block=r, block_kind="arrow", nbytes=n)] for r, n in zip(refs, sizes, strict=False) if n]
