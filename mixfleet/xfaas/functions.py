"""The function contract, resolution of import paths, the XFaaS shim and stand-ins.

Contract: ``fn(payload) -> payload`` (any picklable value). A reference is
``package.module:attr`` (imported normally) or ``relative/file.py:attr``
(loaded from the workflow's folder and pickled by value, so Ray workers need
not have the file on their path). XFaaS-style functions
(``user_function(SerWOObject) -> SerWOObject``) run through :func:`xfaas_shim`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixfleet.errors import ConfigError


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


def resolve(ref: str, base_dir: Path, *, node: str) -> Callable:
    """The callable named by ``ref``; errors name the node and list what the module offers.

    A ``file.py`` is loaded relative to ``base_dir`` and pickled by value.
    """
    from mixfleet.platform.usercode import get_attribute, load_module, split_reference

    context = f"node '{node}'"
    mod_part, attr = split_reference(ref, kind="function", name="function", example="'funcs.py:inc'",
                                     context=context, error=ConfigError)
    module = load_module(mod_part, base_dir=base_dir, what="function file", context=context, error=ConfigError,
                         by_value=True)
    valid = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
             and getattr(v, "__module__", None) == module.__name__]
    return get_attribute(module, attr, kind="function", valid=valid, where=mod_part, accept=callable,
                         context=context, error=ConfigError)


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
