"""Job output: the existence check, part writers and the atomic job commit.

Layout (Hadoop's convention): ``OUTPUT/part-r-NNNNN`` plus an empty
``_SUCCESS`` written last. The job works in a staging folder beside the
output, ``.NAME.mixfleet-new`` (:func:`staging_path`): a reduce attempt
writes ``STAGING/_temporary/part-r-NNNNN.aA``; only the master commits,
renaming the winning attempt of every partition once all reduces are done,
writing ``_SUCCESS``, then swapping the staging folder in for the output.
Until that swap an existing output (``--overwrite``) is untouched; a failed
job removes the staging folder, so it leaves no ``_SUCCESS``, no ``part-*``
file and no empty output folder.

Text lines are ``key<TAB>value``: a ``str`` is written as is, anything else
as JSON.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterable
from typing import Any

from mixfleet.errors import InputError, JobError, first_line

TEMP_DIR = "_temporary"
SUCCESS = "_SUCCESS"
_EXT = {"text": "", "jsonl": ".jsonl", "parquet": ".parquet"}


def part_name(index: int, fmt: str) -> str:
    return f"part-r-{index:05d}{_EXT[fmt]}"


def staging_path(path: str) -> str:
    """The folder beside ``path`` where a job writes until it commits."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.mixfleet-new"


def _old_path(path: str) -> str:
    parent, _, name = path.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.mixfleet-old"


def _inside(child: str, parent: str) -> bool:
    child, parent = child.rstrip("/"), parent.rstrip("/")
    return child == parent or child.startswith(parent + "/")


def check_output(fs: Any, path: str, uri: str, overwrite: bool, inputs: Iterable[Any] = (),
                 input_dirs: Iterable[str] = ()) -> None:
    """Refuse a bad output before anything runs or is deleted.

    An existing file; an existing non-empty folder without ``overwrite``; an
    output that is, contains or lies inside an input (``inputs``: resolved
    files with ``fs``/``path``; ``input_dirs``: input folders on ``fs``).
    """
    import pyarrow.fs as pafs

    for d in input_dirs:
        if _inside(path, d):
            where = "is the input folder" if path.rstrip("/") == d.rstrip("/") else "lies inside the input folder"
            raise InputError(f"output '{uri}' {where} '{d}'",
                             "choose an --output outside every --input (a rerun would read the output back)")
    for f in inputs:
        if type(f.fs) is type(fs) and _inside(f.path, path):
            where = "is" if f.path.rstrip("/") == path.rstrip("/") else "contains"
            raise InputError(f"output '{uri}' {where} the input '{f.uri}'", "choose an --output outside every --input")
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise InputError(f"output '{uri}' is an existing file", "pass a folder path for --output")
    if isinstance(fs, pafs.LocalFileSystem):
        from mixfleet.platform.output import check_writable

        check_writable(path, "--output", folder=True)
    if info.type == pafs.FileType.Directory and not overwrite and fs.get_file_info(pafs.FileSelector(path)):
        raise InputError(f"output '{uri}' already exists",
                         "pass --overwrite (overwrite=True) to replace it, or choose another --output")


def input_folders(inputs: Any, filesystem: Any = None) -> list[str]:
    """The input arguments that are folders (globs and datasets are skipped)."""
    import pyarrow.fs as pafs

    from mixfleet.mapreduce.inputs import filesystem_for

    if not isinstance(inputs, (list, tuple, str)):
        return []
    folders = []
    for uri in [inputs] if isinstance(inputs, str) else inputs:
        if set("*?[") & set(str(uri)):
            continue
        fs, path = filesystem_for(str(uri), filesystem)
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            folders.append(path)
    return folders


def prepare_output(fs: Any, path: str, uri: str, overwrite: bool) -> None:
    """Check the output (:func:`check_output`) and start a fresh staging folder; the output is not touched."""
    import pyarrow.fs as pafs

    check_output(fs, path, uri, overwrite)
    staging = staging_path(path)
    if fs.get_file_info(staging).type != pafs.FileType.NotFound:  # left by a killed run
        fs.delete_dir(staging)
    fs.create_dir(staging, recursive=True)


def _text(obj: Any) -> str:
    return obj if type(obj) is str else json.dumps(obj, ensure_ascii=False)


def encode_part(pairs: Iterable[tuple[Any, Any]], fmt: str) -> tuple[bytes, int]:
    """Serialise pairs in the output format; returns ``(bytes, records)``."""
    rows = list(pairs)
    try:
        if fmt == "text":
            data = "".join(f"{_text(k)}\t{_text(v)}\n" for k, v in rows).encode("utf-8")
        elif fmt == "jsonl":
            data = "".join(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n"
                           for k, v in rows).encode("utf-8")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pylist([{"key": k, "value": v} for k, v in rows]) if rows else \
                pa.table({"key": pa.array([], pa.string()), "value": pa.array([], pa.string())})
            buf = io.BytesIO()
            pq.write_table(table, buf)
            data = buf.getvalue()
    except (TypeError, ValueError) as exc:
        bad = _first_bad(rows, fmt)
        raise JobError(f"reduce output {bad} can't be serialised as {fmt}: {exc}",
                       "emit str, numbers, lists or dicts (JSON types)") from None
    except Exception as exc:  # pyarrow type inference on mixed values
        raise JobError(f"reduce output can't be written as {fmt}: {first_line(exc)}",
                       "emit values of one type per column, or use --format jsonl") from None
    return data, len(rows)


def _first_bad(rows: list, fmt: str) -> str:
    for k, v in rows:
        for obj in (k, v):
            if type(obj) is not str:
                try:
                    json.dumps(obj)
                except (TypeError, ValueError):
                    return f"{obj!r:.60} (type {type(obj).__name__}) for key {k!r:.60}"
    return "(a record)"


def write_attempt(fs: Any, out_path: str, index: int, attempt: int, fmt: str,
                  pairs: Iterable[tuple[Any, Any]], batch: int = 16384) -> tuple[str, int]:
    """Stream one reduce attempt's output under ``_temporary``; ``(path, records)``.

    Text and JSONL are written in batches (memory stays flat); Parquet is
    written as one table.
    """
    from itertools import islice

    tmp_dir = f"{staging_path(out_path)}/{TEMP_DIR}"
    fs.create_dir(tmp_dir, recursive=True)
    tmp = f"{tmp_dir}/{part_name(index, fmt)}.a{attempt}"
    records = 0
    it = iter(pairs)
    try:
        with fs.open_output_stream(tmp) as f:
            if fmt == "parquet":
                data, records = encode_part(it, fmt)
                f.write(data)
            else:
                while rows := list(islice(it, batch)):
                    data, n = encode_part(rows, fmt)
                    f.write(data)
                    records += n
    except BaseException:
        try:
            fs.delete_file(tmp)
        except Exception:  # already gone or never created
            pass
        raise
    return tmp, records


def commit(fs: Any, out_path: str, winners: dict[int, str], fmt: str) -> list[str]:
    """Rename every winning attempt to its final name, write ``_SUCCESS``, then swap the staging folder in."""
    import pyarrow.fs as pafs

    staging = staging_path(out_path)
    for index in sorted(winners):
        fs.move(winners[index], f"{staging}/{part_name(index, fmt)}")
    tmp_dir = f"{staging}/{TEMP_DIR}"
    if fs.get_file_info(tmp_dir).type == pafs.FileType.Directory:
        fs.delete_dir(tmp_dir)
    with fs.open_output_stream(f"{staging}/{SUCCESS}") as f:
        f.write(b"")
    old = None
    if fs.get_file_info(out_path).type == pafs.FileType.Directory:
        old = _old_path(out_path)
        if fs.get_file_info(old).type != pafs.FileType.NotFound:
            fs.delete_dir(old)
        _move_tree(fs, out_path, old)
    _move_tree(fs, staging, out_path)
    if old is not None:
        fs.delete_dir(old)
    return [f"{out_path}/{part_name(index, fmt)}" for index in sorted(winners)]


def _move_tree(fs: Any, src: str, dst: str) -> None:
    """Rename a folder (one rename on a local disk; file by file where the store has no folder rename)."""
    import pyarrow.fs as pafs

    try:
        fs.move(src, dst)
        return
    except (OSError, NotImplementedError):
        if isinstance(fs, pafs.LocalFileSystem):
            raise
    for info in fs.get_file_info(pafs.FileSelector(src, recursive=True)):
        if info.type == pafs.FileType.File:
            target = dst + info.path[len(src.rstrip("/")):]
            fs.create_dir(target.rpartition("/")[0], recursive=True)
            fs.move(info.path, target)
    fs.delete_dir(src)


def abort(fs: Any, out_path: str) -> None:
    """Remove the job's staging folder: every attempt file goes, the previous output stays as it was."""
    import pyarrow.fs as pafs

    staging = staging_path(out_path)
    for _ in range(100):  # a killed attempt may still be closing its file for a moment
        if fs.get_file_info(staging).type != pafs.FileType.Directory:
            return
        try:
            fs.delete_dir(staging)
            return
        except OSError:  # "Directory not empty": a file appeared while the folder was being removed
            time.sleep(0.1)
    fs.delete_dir(staging)


def read_output(fs: Any, out_path: str, fmt: str) -> Iterable[tuple[Any, Any]]:
    """Yield the committed ``(key, value)`` pairs, part by part (text values stay str)."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(out_path))
    for info in sorted((i for i in infos if i.base_name.startswith("part-")), key=lambda i: i.path):
        with fs.open_input_file(info.path) as f:
            data = f.read()
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for row in pq.read_table(io.BytesIO(data)).to_pylist():
                yield row["key"], row["value"]
        elif fmt == "jsonl":
            for line in data.decode("utf-8").splitlines():
                row = json.loads(line)
                yield row["key"], row["value"]
        else:
            for line in data.decode("utf-8").split("\n"):
                if line:
                    key, _, value = line.partition("\t")
                    yield key, value
