"""Strict JSON for request bodies: every malformed body is an InputError (HTTP 400), never a 500.

``json.loads`` alone lets through, or fails outside ``JSONDecodeError`` on:
``NaN``/``Infinity`` (not JSON), numbers beyond float range (``1e999`` ->
``inf``), integers too long to convert (``ValueError``), deep nesting
(``RecursionError``) and bytes that are not UTF-8. :func:`loads_body`
refuses each with a message naming the problem, and caps the nesting depth
so that no handler recurses on a pathological body.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mixfleet.errors import InputError

MAX_DEPTH = 32


def _no_constant(name: str) -> Any:
    raise InputError(f"'{name}' is not valid JSON", "send finite numbers (NaN and Infinity are not JSON)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputError(f"number {text[:40]} is out of range", "send numbers within float range")
    return value


def _too_deep(obj: Any, limit: int) -> bool:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((v, depth + 1) for v in items)
    return False


def loads_body(raw: bytes | str, *, max_depth: int = MAX_DEPTH, example: str = '{"...": ...}') -> Any:
    """The JSON value of a request body, or an :class:`InputError` saying what is wrong with it."""
    hint = f"send a JSON object such as {example}"
    if not raw.strip():
        raise InputError("empty request body", hint)
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_float)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON in the request body: {exc}", hint) from None
    except UnicodeDecodeError:
        raise InputError("the request body is not UTF-8 text", hint) from None
    except RecursionError:
        raise InputError(f"the request body nests deeper than {max_depth} levels", hint) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise InputError(f"invalid number in the request body: {str(exc)[:80]}", hint) from None
    if _too_deep(value, max_depth):
        raise InputError(f"the request body nests deeper than {max_depth} levels", hint)
    return value
