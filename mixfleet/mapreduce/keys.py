"""Stable key hashing, partitioners and key ordering.

Python's ``hash()`` is salted per process, so two workers would disagree on
a key's reducer; :func:`key_bytes` + ``zlib.crc32`` give every process the
same answer. Keys that compare equal in Python (``1``, ``1.0``, ``True``)
hash alike, so a dict-equal key never lands on two reducers.
"""

from __future__ import annotations

import asyncio
import bisect
import pickle
import zlib
from collections.abc import Callable, Sequence
from typing import Any


def key_bytes(key: Any) -> bytes:
    """A process-independent encoding of ``key`` for hashing."""
    t = type(key)
    if t is str:
        return key.encode("utf-8", "surrogatepass")
    if t is bytes:
        return key
    if t is bool or t is int:
        return b"i%d" % int(key)
    if t is float:
        return b"i%d" % int(key) if key.is_integer() else repr(key).encode()
    if key is None:
        return b"\x00none"
    if t is tuple:
        return b"(" + b"\x1f".join(key_bytes(k) for k in key) + b")"
    return pickle.dumps(key, protocol=4)


def hash_partition(key: Any, n: int) -> int:
    """The reducer of ``key`` among ``n`` (stable across processes)."""
    return zlib.crc32(key_bytes(key)) % n


def hash_partitioner(n: int) -> Callable[[Any], int]:
    if n == 1:
        return lambda _key: 0

    def part(key: Any, _crc=zlib.crc32, _kb=key_bytes, _n=n) -> int:
        return _crc(key.encode("utf-8", "surrogatepass") if type(key) is str else _kb(key)) % _n

    return part


def range_boundaries(sample: Sequence[Any], n: int) -> list[Any]:
    """``n - 1`` cut points at the quantiles of a sorted key sample."""
    keys = sorted(sample, key=order_key(sample))
    if n <= 1 or not keys:
        return []
    cuts = [keys[min(len(keys) - 1, (i * len(keys)) // n)] for i in range(1, n)]
    out: list[Any] = []
    for c in cuts:  # drop duplicates so that no reducer is empty by construction
        if not out or out[-1] != c:
            out.append(c)
    return out


def range_partitioner(boundaries: list[Any]) -> Callable[[Any], int]:
    """Key ``k`` goes to the number of boundaries ``<= k``: reducer order is key order."""
    return lambda key: bisect.bisect_right(boundaries, key)


def order_key(keys: Sequence[Any]) -> Callable[[Any], Any] | None:
    """``None`` (natural order) when the keys compare, else a total fallback order."""
    try:
        sorted(keys[:1000])
        return None
    except TypeError:
        return _fallback


def _fallback(key: Any) -> tuple[str, str]:
    return type(key).__name__, repr(key)


def sort_keys(keys: list[Any]) -> list[Any]:
    """Keys in natural order when comparable, else by ``(type, repr)``."""
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=_fallback)


async def sample_boundaries(workers: list, files: list, splits: list, step: int, rng, per_split: int,
                            n: int) -> list[Any]:
    """The range partitioner's boundaries: up to 64 splits are sampled by the worker actors
    (``per_split`` records each, from a random offset in the split's first half unless the
    file is Parquet or a block), then cut into ``n`` ranges by :func:`range_boundaries`."""
    from mixfleet.mapreduce.inputs import Piece

    chosen = splits if len(splits) <= 64 else rng.sample(splits, 64)
    calls = []
    for j, split in enumerate(chosen):
        piece = split[0]
        if not piece.block_kind and files[piece.file].fmt != "parquet":
            span = piece.end - piece.start
            start = piece.start + (rng.randrange(span // 2) if span > 2 else 0)
            piece = Piece(piece.file, start, piece.end)
        calls.append(workers[j % len(workers)].sample.remote(step, piece, per_split))
    sample: list = []
    for keys in await asyncio.gather(*[_resolve(c) for c in calls]):
        sample += keys
    return range_boundaries(sample, n)


async def _resolve(ref):
    return await ref
