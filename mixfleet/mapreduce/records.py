"""Reading a split's pieces as batches of records.

A byte range owns the lines whose first byte lies in ``[start, end)``: the
reader skips the partial line at ``start`` (it belongs to the range before)
and finishes the line that crosses ``end``. Reads are claimed chunk by chunk
through ``claim(pos, want) -> (granted, end)`` so that the master can hand
the unclaimed remainder to an idle worker; a claim never shrinks below what
was already granted, so no line is read twice or skipped.

A batch is ``(offset, records, bytes)``: the byte offset of its first line (or
the row index for Parquet and blocks), a list of values for the mapper (or,
``raw``, one ``str`` block of whole lines) and the bytes it was read from.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from typing import Any

from mixfleet.mapreduce.inputs import InputFile, Piece

Claim = Callable[[int, int], tuple[int, int]]
_PROBE = 64 * 1024


def _first_line_start(f: Any, start: int, size: int) -> int:
    if start == 0:
        return 0
    at = start - 1
    while at < size:
        buf = f.read_at(min(_PROBE, size - at), at)
        if not buf:
            break
        i = buf.find(b"\n")
        if i >= 0:
            return at + i + 1
        at += len(buf)
    return size


def _finish_line(f: Any, data: bytes, pos: int, size: int) -> bytes:
    """Extend ``data`` (read at ``pos``) to the end of its last line."""
    if not data or data[-1:] == b"\n":
        return data
    parts = [data]
    at = pos + len(data)
    while at < size:
        buf = f.read_at(min(_PROBE, size - at), at)
        if not buf:
            break
        i = buf.find(b"\n")
        if i >= 0:
            parts.append(buf[: i + 1])
            break
        parts.append(buf)
        at += len(buf)
    return b"".join(parts)


def _iter_text(entry: InputFile, piece: Piece, chunk: int, claim: Claim | None, raw: bool
               ) -> Iterator[tuple[int, Any, int]]:
    """``(offset, lines or text, bytes)`` of one byte range, claimed chunk by chunk."""
    with entry.fs.open_input_file(entry.path) as f:
        size = f.size()
        end = min(piece.end, size)
        pos = _first_line_start(f, piece.start, size)
        while pos < end:
            want = min(pos + chunk, end)
            granted, end = claim(pos, want) if claim else (want, end)
            if granted <= pos:
                break
            data = _finish_line(f, f.read_at(granted - pos, pos), pos, size)
            if not data:
                break
            text = data.decode("utf-8", errors="replace")
            if raw:
                yield pos, text, len(data)
            else:
                lines = text.split("\n")
                if lines and lines[-1] == "":
                    lines.pop()
                if "\r" in text:
                    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
                yield pos, lines, len(data)
            pos += len(data)


def iter_lines(entry: InputFile, piece: Piece, chunk: int, claim: Claim | None = None
               ) -> Iterator[tuple[int, list[str]]]:
    """Batches of lines (without newline) of one byte range, claimed chunk by chunk."""
    for pos, lines, _ in _iter_text(entry, piece, chunk, claim, raw=False):
        yield pos, lines


def iter_records(entry: InputFile | None, piece: Piece, chunk: int, claim: Claim | None = None,
                 raw: bool = False) -> Iterator[tuple[int, Any, int]]:
    """``(offset, batch, bytes)`` for any kind of piece (see module docstring).

    ``raw``: a text batch is one ``str`` of whole lines (newlines kept) instead of
    a list of lines, for ``mapper_chunk``; other kinds are lists either way."""
    if piece.block_kind == "pairs":
        data = piece.block if isinstance(piece.block, bytes) else _get(piece.block)
        yield 0, pickle.loads(data), len(data)
        return
    if piece.block_kind == "arrow":
        table = _get(piece.block)
        for offset, batch in _arrow_batches(table):
            yield offset, batch, 0
        return
    assert entry is not None
    if entry.fmt == "parquet":
        import pyarrow.parquet as pq

        with entry.fs.open_input_file(entry.path) as f:
            pf = pq.ParquetFile(f)
            row = sum(pf.metadata.row_group(i).num_rows for i in range(piece.start))
            for rg in range(piece.start, piece.end):
                for offset, batch in _arrow_batches(pf.read_row_group(rg)):
                    yield row + offset, batch, 0
                row += pf.metadata.row_group(rg).num_rows
        return
    if entry.fmt == "jsonl":
        for offset, lines, nbytes in _iter_text(entry, piece, chunk, claim, raw=False):
            yield offset, _parse_jsonl(entry, offset, lines), nbytes
        return
    yield from _iter_text(entry, piece, chunk, claim, raw=raw)


def _get(ref: Any) -> Any:
    import ray

    return ray.get(ref)


def _arrow_batches(table: Any, rows: int = 65536) -> Iterator[tuple[int, list[dict]]]:
    for offset in range(0, table.num_rows, rows):
        yield offset, table.slice(offset, rows).to_pylist()


def _parse_jsonl(entry: InputFile, offset: int, lines: list[str]) -> list[Any]:
    from mixfleet.errors import InputError

    out = []
    at = offset
    for line in lines:
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"input '{entry.uri}' has a bad JSON line at byte {at}: {exc.msg}",
                                 "fix the line or read the file as text (input_format='text')") from None
        at += len(line.encode("utf-8")) + 1
    return out


def line_offset(batch_offset: int, lines: list[Any], index: int) -> int:
    """Byte offset of ``lines[index]`` in a text batch starting at ``batch_offset``."""
    return batch_offset + sum(len(str(ln).encode("utf-8")) + 1 for ln in lines[:index])
