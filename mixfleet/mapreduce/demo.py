"""The MapReduce step of ``mixfleet demo``: word count over the bundled books.

It runs the real runtime (master + worker actors on the demo's emulated
cluster) over the two public-domain books shipped in
``mixfleet/mapreduce/data`` (gzipped), shows the progress bar and prints the top words.
"""

from __future__ import annotations

import re
from pathlib import Path

from mixfleet.mapreduce.job import Job

DATA = Path(__file__).resolve().parent / "data"
_WORD = re.compile(r"[A-Za-z]+")


class DemoWordCount(Job):
    """Lab word count (words are runs of letters), lower-cased for the top list."""

    def mapper(self, _, line):
        for word in _WORD.findall(line):
            yield word.lower(), 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    reducer = combiner


def _unpack(folder: Path) -> list[str]:
    """Unzip the bundled books into ``folder`` (the runtime splits plain text)."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    books = []
    for gz in sorted(DATA.glob("*.txt.gz")):
        target = folder / gz.name[:-3]
        target.write_bytes(gzip.decompress(gz.read_bytes()))
        books.append(str(target))
    return books


def step(ctx) -> dict:
    from mixfleet.mapreduce.runner import run
    from mixfleet.platform.output import print_table

    books = _unpack(Path(ctx.workdir) / "mapreduce-books")
    out = Path(ctx.workdir) / "mapreduce-wordcount"
    if ctx.json_mode:
        result = run(DemoWordCount, books, str(out), address=ctx.address, split_bytes=64 * 1024)
    else:
        from mixfleet.mapreduce.cli import _Bars

        ctx.say(f"[bold]mapreduce: word count over {len(books)} bundled books on worker actors[/bold]")
        with _Bars() as bars:
            result = run(DemoWordCount, books, str(out), address=ctx.address, split_bytes=64 * 1024,
                         progress=bars.update)
    counts = sorted(((k, int(v)) for k, v in result.read()), key=lambda kv: (-kv[1], kv[0]))
    top = counts[:10]
    if not ctx.json_mode:  # one row: the top words and their counts
        print_table("", [w for w, _ in top], [[c for _, c in top]])
    return {"books": len(books), "words": sum(c for _, c in counts), "distinct_words": len(counts),
            "top_words": [[w, c] for w, c in top], "map_tasks": result.map_tasks,
            "reduce_tasks": result.reduce_tasks, "attempts": result.attempts}
