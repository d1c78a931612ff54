"""TeraSort-style total-order sort of 100-byte records, with generator and validator.

A record is a line of 100 bytes: a 10-byte printable key, two blanks, a
32-hex-digit row id, two blanks, 53 filler bytes and a newline (gensort's
ASCII layout). The job samples keys (``partitioner = "range"``) so that
part files are totally ordered: every key in ``part-r-00001`` is >= every
key in ``part-r-00000``.

    python -c "from examples.mapreduce.terasort import generate; generate('/tmp/ts/in.txt', 100000)"
    mixfleet mapreduce run examples/mapreduce/terasort.py:TeraSort --input /tmp/ts/in.txt \
        --output /tmp/ts/out --reducers 4
"""

import hashlib
import random

from mixfleet.mapreduce import Job

KEY = 10
RECORD = 100
_PRINTABLE = "".join(chr(c) for c in range(33, 127))  # no blank, no tab


class TeraSort(Job):
    partitioner = "range"

    def mapper(self, _, line):
        yield line[:KEY], line[KEY:]

    def reducer(self, key, rests):
        for rest in sorted(rests):
            yield key, rest


def generate(path: str, records: int, seed: int = 0) -> None:
    """Write ``records`` 100-byte records to ``path``."""
    rng = random.Random(seed)
    filler = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    with open(path, "w") as f:
        for row in range(records):
            key = "".join(rng.choice(_PRINTABLE) for _ in range(KEY))
            fill = filler[row % 26] * 53
            f.write(f"{key}  {row:032X}  {fill}\n")


def _checksum(records) -> tuple[int, str]:
    total = 0
    for rec in records:
        total = (total + int.from_bytes(hashlib.blake2b(rec.encode(), digest_size=8).digest(), "big")) % (1 << 64)
    return total, f"{total:016x}"


def validate(input_path: str, part_paths: list[str]) -> dict:
    """Check total order across the part files (in name order) and that the output
    is a permutation of the input (same count and order-free checksum)."""
    with open(input_path) as f:
        inp = f.read().splitlines()
    out: list[str] = []
    boundaries_ok = True
    last = None
    for path in sorted(part_paths):
        with open(path) as f:
            for line in f.read().splitlines():
                key, _, rest = line.partition("\t")
                if last is not None and key < last:
                    boundaries_ok = False
                last = key
                out.append(key + rest)
    in_sum, out_sum = _checksum(inp), _checksum(out)
    return {"records_in": len(inp), "records_out": len(out), "ordered": boundaries_ok,
            "checksum_in": in_sum[1], "checksum_out": out_sum[1],
            "ok": boundaries_ok and len(inp) == len(out) and in_sum == out_sum}
