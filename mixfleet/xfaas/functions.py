"""The function contract, resolution of import paths, the XFaaS shim and stand-ins.

Contract: ``fn(payload) -> payload`` (any picklable value). A reference is
``package.module:attr`` (imported normally) or ``relative/file.py:attr``
(loaded from the workflow's folder and pickled by value, so Ray workers need
not have the file on their path). XFaaS-style functions
(``user_function(SerWOObject) -> SerWOObject``) run through :func:`xfaas_shim`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError, did_you_mean


class SerWOObject:
    """Stand-in for XFaaS's ``SerWOObject``: a body plus metadata."""

    def __init__(self, body: Any = None, metadata: dict | None = None):
        self._body, self._metadata = body, dict(metadata or {})

    def get_body(self) -> Any:
        return self._body

    def get_metadata(self) -> dict:
        return self._metadata


class SerWOListObject(SerWOObject):
    """What an XFaaS fan-in receives: a list of ``SerWOObject``."""

    def __init__(self, objects: list[SerWOObject]):
        super().__init__(None)
        self._objects = list(objects)

    def get_objects(self) -> list[SerWOObject]:
        return self._objects


class XFaaSShim:
    """Runs an XFaaS-style function under the ``fn(payload) -> payload`` contract."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "xfaas_function")

    def __call__(self, payload: Any) -> Any:
        if isinstance(payload, list):
            arg: SerWOObject = SerWOListObject([SerWOObject(p) for p in payload])
        else:
            arg = SerWOObject(payload)
        out = self.fn(arg)
        return out.get_body() if isinstance(out, SerWOObject) else out


def xfaas_shim(fn: Callable) -> Callable:
    return XFaaSShim(fn)


def xfaas_standin(payload: Any) -> Any:
    """Pass-through stand-in for XFaaS nodes whose code is not shipped."""
    return payload


def noop(payload: Any) -> Any:
    return payload


_file_modules: dict[str, Any] = {}


def _load_file_module(path: Path):
    key = str(path.resolve())
    if key in _file_modules:
        return _file_modules[key]
    name = "mixfleet_xfaas_user_" + "_".join(path.resolve().with_suffix("").parts[-3:]).replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ConfigError(f"cannot load '{path}': {type(exc).__name__}: {exc}", "fix that module") from None
    from ray import cloudpickle  # Ray's vendored copy is the one that pickles task arguments

    cloudpickle.register_pickle_by_value(module)
    _file_modules[key] = module
    return module


def resolve(ref: str, base_dir: Path, *, node: str) -> Callable:
    """The callable named by ``ref``; errors name the node and list what the module offers."""
    mod_part, sep, attr = ref.rpartition(":")
    if not sep or not mod_part or not attr:
        raise ConfigError(f"node '{node}': bad function reference '{ref}'",
                          "use 'package.module:function' or 'file.py:function'")
    if mod_part.endswith(".py"):
        path = (base_dir / mod_part)
        if not path.exists():
            raise ConfigError(f"node '{node}': function file '{path}' does not exist", "check the path")
        module = _load_file_module(path)
    else:
        try:
            module = importlib.import_module(mod_part)
        except ImportError as exc:
            raise ConfigError(f"node '{node}': cannot import module '{mod_part}' ({exc})",
                              "check the import path") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        valid = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"node '{node}': unknown function '{attr}' in '{mod_part}'{did_you_mean(attr, valid)}",
                          f"functions there: {', '.join(valid) or '(none)'}")
    return fn


def resolve_all(workflow) -> dict[str, dict[str, Callable | None]]:
    """``{node: {"fn", "poll"}}`` plus ``{(u, v): predicate}`` under key ``"__when__"``; raises before running."""
    out: dict[str, Any] = {}
    for name, n in workflow.nodes.items():
        fn = resolve(n.function, workflow.base_dir, node=name)
        if n.style == "xfaas":
            fn = xfaas_shim(fn)
        poll = resolve(n.async_.poll, workflow.base_dir, node=name) if n.async_ else None
        out[name] = {"fn": fn, "poll": poll}
    when = {}
    for (u, v), ref in workflow.conditions.items():
        when[(u, v)] = resolve(ref, workflow.base_dir, node=f"{u}->{v} (edge condition)")
    out["__when__"] = when
    return out
