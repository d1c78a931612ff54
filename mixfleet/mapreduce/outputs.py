"""Job output: the existence check, part writers and the atomic job commit.

Layout (Hadoop's convention): ``OUTPUT/part-r-NNNNN`` plus an empty
``_SUCCESS`` written last. A reduce attempt writes
``OUTPUT/_temporary/part-r-NNNNN.aA``; only the master commits, renaming the
winning attempt of every partition once all reduces are done, then writing
``_SUCCESS``. A failed job removes ``_temporary``, so it leaves no
``_SUCCESS`` and no ``part-*`` file.

Text lines are ``key<TAB>value``: a ``str`` is written as is, anything else
as JSON.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

from mixfleet.errors import InputError, JobError

TEMP_DIR = "_temporary"
SUCCESS = "_SUCCESS"
_EXT = {"text": "", "jsonl": ".jsonl", "parquet": ".parquet"}


def part_name(index: int, fmt: str) -> str:
    return f"part-r-{index:05d}{_EXT[fmt]}"


def prepare_output(fs: Any, path: str, uri: str, overwrite: bool) -> None:
    """Refuse an existing non-empty output unless ``overwrite``; then clear it."""
    import pyarrow.fs as pafs

    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise InputError(f"output '{uri}' is an existing file", "pass a folder path for --output")
    if info.type == pafs.FileType.Directory:
        entries = fs.get_file_info(pafs.FileSelector(path))
        if entries and not overwrite:
            raise InputError(f"output '{uri}' already exists",
                             "pass --overwrite (overwrite=True) to replace it, or choose another --output")
        if entries:
            fs.delete_dir_contents(path)
    else:
        fs.create_dir(path, recursive=True)


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
        raise JobError(f"reduce output can't be written as {fmt}: {str(exc).splitlines()[0]}",
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

    tmp_dir = f"{out_path}/{TEMP_DIR}"
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
    """Rename every winning attempt to its final name, then write ``_SUCCESS``."""
    parts = []
    for index in sorted(winners):
        final = f"{out_path}/{part_name(index, fmt)}"
        fs.move(winners[index], final)
        parts.append(final)
    abort(fs, out_path)
    with fs.open_output_stream(f"{out_path}/{SUCCESS}") as f:
        f.write(b"")
    return parts


def abort(fs: Any, out_path: str) -> None:
    """Remove every attempt file (a failed job leaves no part file)."""
    import pyarrow.fs as pafs

    tmp_dir = f"{out_path}/{TEMP_DIR}"
    if fs.get_file_info(tmp_dir).type == pafs.FileType.Directory:
        fs.delete_dir(tmp_dir)


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
