"""Loading user code named by a reference: ``path/to/file.py:attr`` or ``package.module:attr``.

The MapReduce CLI (``mixfleet mapreduce run FILE.py:JobClass``) and XFaaS
workflows (``function: funcs.py:inc``) both name user code this way; this
module is the one place that turns such a reference into a Python object.

Invariants:
- A file reference is imported from its path, not from ``sys.path``; a
  relative path is taken against ``base_dir`` (default: the working folder).
- A file is executed at most once per process per resolved path: a second
  load returns the same module object, so classes and functions stay
  identical between calls. The module is registered in ``sys.modules`` under
  a name built from the file's stem and a hash of its resolved path, so the
  name is stable between runs and two ``funcs.py`` never collide.
- A file that fails to import leaves nothing in ``sys.modules``.
- Every failure raises ``error`` (default :class:`InputError`; callers
  reading references out of a config file pass :class:`ConfigError`). The
  message names the bad path or name, prefixed with ``context`` when given
  (e.g. ``node 'a': ``), and the hint says what to do.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from mixfleet.errors import InputError, MixfleetError, did_you_mean

ErrorType = type[MixfleetError]


def _prefix(context: str) -> str:
    return f"{context}: " if context else ""


def split_reference(ref: str, *, kind: str, example: str, name: str = "NAME", context: str = "",
                    error: ErrorType = InputError) -> tuple[str, str]:
    """``"a/b.py:Name"`` -> ``("a/b.py", "Name")``.

    ``kind`` names what the reference points to and ``name`` stands for the
    part after ``:`` in the error (``expected FILE.py:JobClass or
    module:JobClass``). The split is at the last ``:`` so Windows-style
    drive letters survive.
    """
    target, sep, attr = str(ref).rpartition(":")
    if not sep or not target or not attr:
        raise error(f"{_prefix(context)}bad {kind} reference '{ref}': expected FILE.py:{name} or module:{name}",
                    f"for example {example}")
    return target, attr


def is_file_reference(target: str) -> bool:
    """A target naming a ``.py`` file or containing a path separator is a file, else a module."""
    return target.endswith(".py") or "/" in target or os.sep in target


def _module_name(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return f"mixfleet_user_{stem}_{digest}"


def load_file_module(path: str | Path, *, what: str = "file", context: str = "",
                     error: ErrorType = InputError, by_value: bool = False) -> ModuleType:
    """Import the Python file at ``path`` as a module (once per process; see the module invariants).

    ``what`` names the file in errors (``"job file"``). With ``by_value`` the
    module is registered with Ray's cloudpickle so that functions and classes
    from it are pickled by value and Ray workers need not have the file.
    """
    shown = str(path)
    p = Path(path)
    if not p.is_file():
        why = "is a directory, not a file" if p.is_dir() else "not found"
        raise error(f"{_prefix(context)}{what} '{shown}' {why}", "check the path before ':'")
    resolved = p.resolve()
    name = _module_name(resolved)
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, resolved)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: dataclasses and pickling look the module up by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise error(f"{_prefix(context)}{what} '{shown}' failed to import: {type(exc).__name__}: {exc}",
                        f"fix the file so that `python {shown}` runs cleanly") from None
    if by_value:
        from ray import cloudpickle  # Ray's vendored copy is the one that pickles task arguments

        cloudpickle.register_pickle_by_value(module)
    return module


def load_module(target: str, *, base_dir: str | Path | None = None, what: str = "file", context: str = "",
                error: ErrorType = InputError, by_value: bool = False) -> ModuleType:
    """The module named by the part of a reference before ``:``: a file path or an importable module.

    A file path is relative to ``base_dir`` (default: the working folder);
    ``what``, ``context``, ``error`` and ``by_value`` are as in
    :func:`load_file_module`. Installed modules are never pickled by value.
    """
    if is_file_reference(target):
        path = Path(target) if base_dir is None else Path(base_dir) / target
        return load_file_module(path, what=what, context=context, error=error, by_value=by_value)
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise error(f"{_prefix(context)}module '{target}' not found ({exc})",
                        "pass FILE.py:NAME or the dotted name of an importable module") from None
        raise error(f"{_prefix(context)}module '{target}' failed to import: {type(exc).__name__}: {exc}",
                    "install what it needs, or fix its imports") from None
    except Exception as exc:
        raise error(f"{_prefix(context)}module '{target}' failed to import: {type(exc).__name__}: {exc}",
                    f"fix the module so that `python -c 'import {target}'` runs cleanly") from None


def get_attribute(module: ModuleType, name: str, *, kind: str, valid: Iterable[str], where: str,
                  accept: Callable[[Any], bool] | None = None, context: str = "",
                  error: ErrorType = InputError) -> Any:
    """``module.name``; a miss raises ``unknown <kind> '<name>' in '<where>'`` listing ``valid``.

    With ``accept``, a value it rejects counts as a miss (e.g. ``callable``
    for functions, so a constant of the same name is not picked up).
    """
    value = getattr(module, name, None)
    if value is None or (accept is not None and not accept(value)):
        valid = sorted(valid)
        plural = kind + ("es" if kind.endswith("s") else "s")
        raise error(f"{_prefix(context)}unknown {kind} '{name}' in '{where}'{did_you_mean(name, valid)}",
                    f"{plural} there: {', '.join(valid) or '(none)'}")
    return value
