"""Text analytics: a 10-wide fan-out of word counters over shards, a fan-in merge, a conditional tail.

``count_i`` gets every shard (fan-out copies the payload) and counts shard ``i``.
"""

from __future__ import annotations

import re
from collections import Counter

SHARDS = 10
LONG_WORDS = 50


def split(p):
    words = re.findall(r"[a-z']+", str(p["text"]).lower())
    return {"shards": [words[i::SHARDS] for i in range(SHARDS)], "total": len(words)}


def _counter(i):
    def count(p):
        return {"shard": i, "counts": dict(Counter(p["shards"][i])), "total": p["total"]}

    count.__name__ = f"count_{i}"
    return count


count_0, count_1, count_2, count_3, count_4 = (_counter(i) for i in range(5))
count_5, count_6, count_7, count_8, count_9 = (_counter(i) for i in range(5, 10))


def merge(parts):
    total = Counter()
    for part in parts:
        total.update(part["counts"])
    return {"shard_order": [p["shard"] for p in parts], "counts": dict(total), "words": parts[0]["total"],
            "top": sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:5]}


def is_long(p):
    return p["words"] >= LONG_WORDS


def is_short(p):
    return p["words"] < LONG_WORDS


def summarize(p):
    return {"kind": "summary", "top": p["top"], "words": p["words"], "shard_order": p["shard_order"]}


def short_note(p):
    return {"kind": "note", "words": p["words"], "top": p["top"][:1]}
