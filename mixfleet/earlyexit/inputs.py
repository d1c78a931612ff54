"""Checks on what users hand to an early-exit model, before torch sees it.

Bad input ends as an :class:`~mixfleet.errors.InputError` that names the
expected form, never as a shape error deep inside a conv. ``input_shape`` is
the per-sample shape; ``None`` marks a free dimension (a sequence length).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mixfleet.errors import InputError


def _fmt_shape(shape: Sequence[int | None], batch: bool = True) -> str:
    dims = (["B"] if batch else []) + ["*" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ")"


def check_input(x, input_shape: Sequence[int | None], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return ``x`` as a ``[B, *input_shape]`` float tensor or raise InputError.

    A single sample of exactly ``input_shape`` gets a batch dimension added.
    """
    expected = _fmt_shape(input_shape)
    if isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
                                     or x.dtype == np.bool_):
            raise InputError(f"input has dtype {x.dtype}; expected a floating-point array of shape {expected}",
                             "convert it with x.astype('float32')")
        if not x.flags.writeable:  # a zero-copy view (Ray Data batch, Arrow buffer): torch needs memory it may own
            x = np.array(x, order="C")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise InputError(f"input is a {type(x).__name__}; expected a float tensor or numpy array of shape {expected}",
                         "pass torch.as_tensor(x, dtype=torch.float32)")
    if not x.is_floating_point():
        raise InputError(f"input has dtype {x.dtype}; expected floating-point values of shape {expected}",
                         "scale images to [0, 1] and convert with x.float()")
    n = len(input_shape)
    if x.ndim == n and _matches(tuple(x.shape), input_shape):
        x = x.unsqueeze(0)
    if x.ndim != n + 1 or not _matches(tuple(x.shape[1:]), input_shape):
        raise InputError(f"input has shape {tuple(x.shape)}; expected {expected}",
                         f"one sample is {_fmt_shape(input_shape, batch=False)}; stack samples on dim 0")
    if x.shape[0] == 0:
        raise InputError("input batch is empty; expected at least one sample", f"pass a {expected} tensor with B >= 1")
    bad = (~torch.isfinite(x)).sum().item()
    if bad:
        raise InputError(f"input contains {bad} NaN or Inf value(s); expected finite values",
                         "clean or drop those samples before inference")
    return x.to(dtype)


def _matches(shape: tuple[int, ...], spec: Sequence[int | None]) -> bool:
    return len(shape) == len(spec) and all(d is None or d == s for s, d in zip(shape, spec, strict=True))


def check_thresholds(thresholds, n_exits: int, names: Sequence[str] | None = None) -> list[float]:
    """Thresholds as a list of ``n_exits`` floats in ``[0, 1]``; a scalar applies to every exit."""
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        thresholds = [float(thresholds)] * n_exits
    try:
        values = [float(t) for t in thresholds]
    except (TypeError, ValueError):
        raise InputError(f"thresholds {thresholds!r} are not numbers",
                         f"pass {n_exits} values in [0, 1], one per exit") from None
    if len(values) != n_exits:
        label = f" ({', '.join(names)})" if names else ""
        raise InputError(f"got {len(values)} threshold(s) for {n_exits} exit(s){label}",
                         f"pass {n_exits} values in [0, 1], one per exit")
    for i, t in enumerate(values):
        if not (0.0 <= t <= 1.0):  # also rejects NaN
            where = names[i] if names else f"exit {i}"
            raise InputError(f"threshold {t} for {where} is outside [0, 1]",
                             "thresholds are confidence scores: 0 always exits, 1 never does")
    return values


def _numbers_only(nested: list) -> bool:
    """True if every leaf is an int or float, at the depth of the first leaf (ragged input fails later)."""
    from itertools import chain

    flat, probe = nested, nested
    while isinstance(probe, list) and probe:
        probe = probe[0]
        if isinstance(probe, list):
            flat = chain.from_iterable(flat)
    try:
        return set(map(type, flat)) <= {float, int}
    except TypeError:  # a leaf where a list was expected
        return False


def parse_instances(payload, input_shape: tuple[int, ...], max_instances: int) -> np.ndarray:
    """``{"instances": [...]}`` -> float32 ``[n, *input_shape]`` or InputError."""
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InputError("request body must be a JSON object with an 'instances' list",
                         'send {"instances": [[[...28 floats...], ...28 rows]]}')
    inst = payload["instances"]
    if not isinstance(inst, list) or not inst:
        raise InputError("'instances' must be a non-empty list", "send at least one 28x28 array")
    if len(inst) > max_instances:
        raise InputError(f"{len(inst)} instances in one request; at most {max_instances} allowed",
                         "split the request")
    try:
        if not _numbers_only(inst):  # strings, booleans, nulls: not pixel values (numpy would convert them)
            raise ValueError("not numbers")
        x = np.asarray(inst, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise InputError("instances are not equally shaped arrays of numbers",
                         f"each instance must be a {'x'.join(map(str, input_shape[-2:]))} array of floats") from None
    if x.shape[1:] == tuple(input_shape[1:]) and len(input_shape) == 3 and input_shape[0] == 1:
        x = x[:, None]
    if x.shape[1:] != tuple(input_shape):
        raise InputError(f"instance shape {tuple(x.shape[1:])} is wrong",
                         f"expected {'x'.join(map(str, input_shape[1:]))} or {'x'.join(map(str, input_shape))} "
                         "floats per instance")
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise InputError(f"instances contain {bad} NaN or Inf value(s)", "send finite pixel values in [0, 1]")
    if x.min() < 0.0 or x.max() > 1.0:
        raise InputError(f"pixel values range over [{x.min():g}, {x.max():g}], outside [0, 1]",
                         "scale images to [0, 1] (divide 0..255 by 255)")
    return x


def parse_pixel_rows(rows: list[list[float]], input_shape: tuple[int, ...], max_instances: int) -> np.ndarray:
    """Instances sent as flat rows of pixels (gRPC ``Instance.pixels``), checked as :func:`parse_instances`."""
    side = int(np.prod(input_shape[1:]))
    bad = next((len(r) for r in rows if len(r) != side), None)
    if bad is not None:
        shape = "x".join(str(d) for d in input_shape[1:])
        raise InputError(f"an instance has {bad} pixels; each instance needs {side} pixels",
                         f"send each image flattened from {shape}, values in [0, 1]")
    try:
        nested = np.asarray(rows, dtype=np.float32).reshape(-1, *input_shape[1:]).tolist()
        return parse_instances({"instances": nested}, input_shape, max_instances)
    except ValueError as exc:  # InputError is not a ValueError: it passes through
        raise InputError(str(exc)) from None
