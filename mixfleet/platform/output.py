"""Output helpers for every CLI: one JSON object, tables, progress, atomic files.

Invariants:
- With ``--json`` the CLI sends everything but the final object to stderr
  (``mixfleet.cli.main`` redirects ``sys.stdout``); :func:`emit_json`
  writes to the real stdout.
- Files are committed atomically: written to a temporary sibling, flushed,
  then renamed, so a crash never leaves a half-written output.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_console = None


def console():
    """The shared rich Console; it writes to stderr so stdout stays clean."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def _clean(obj: Any) -> Any:
    """Make ``obj`` strict-JSON safe (NaN/inf become null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def check_json(obj: Any, what: str) -> None:
    """Raise a :class:`~mixfleet.errors.JobError` naming ``what`` unless ``obj`` is JSON data (numpy scalars are)."""
    from mixfleet.errors import JobError

    try:
        json.dumps(_clean(obj), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JobError(f"{what} is not JSON-serialisable: {exc} ({type(obj).__name__} {obj!r:.60})",
                       "return JSON data (dict, list, str, numbers, bool, None)") from None


def to_json(obj: Any, indent: int | None = None) -> str:
    return json.dumps(_clean(obj), indent=indent, allow_nan=False, default=str)


def emit_json(obj: Any) -> None:
    """Print exactly one JSON object on the process's real stdout."""
    out = sys.__stdout__ or sys.stdout
    out.write(to_json(obj) + "\n")
    out.flush()


def compact(table: Any) -> Any:
    """The house table style: a rule under the header and nothing else around it (no box, no edges)."""
    from rich import box

    table.box, table.show_edge, table.pad_edge = box.SIMPLE_HEAD, False, False
    return table


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A compact rich table on stderr (the human-readable counterpart of ``--json``) under a bold title line.

    The title is its own line, wrapped at the terminal's width rather than the table's.
    """
    from rich.table import Table

    table = compact(Table())
    for col in columns:
        table.add_column(str(col), overflow="fold")  # a narrow terminal wraps a cell, never cuts it
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    if title:
        console().print(f"[bold]{title}[/bold]", highlight=False)
    console().print(table)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def check_writable(path: str | Path | None, option: str, *, folder: bool = False) -> None:
    """Fail before any work starts if ``path`` (a file to write, or a ``folder``) could not be written.

    Refused: an existing folder (a file if ``folder``), a parent that is a
    file, a folder without write permission. Nothing is created: missing
    folders are made only when the output is written.
    """
    from mixfleet.errors import InputError

    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir() != folder and p.exists():
        kind = "a file" if folder else "a folder"
        raise InputError(f"{option} '{path}' is {kind}", f"pass a {'folder' if folder else 'file'} path for {option}")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{option} '{path}' can't be written: '{parent}' is a file, not a folder",
                         f"pass a path in an existing folder for {option}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} '{path}' can't be written: no write permission in '{parent}'",
                         f"pass a path in a folder you can write for {option}")


def _umask() -> int:
    """The process's umask (read without changing it where /proc has it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename).

    The file gets the mode a plain ``open(path, "w")`` would give it: an existing file's own mode,
    else 0o666 less the umask (``mkstemp``'s 0o600 would hide a saved model from the group that serves it).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = p.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())
