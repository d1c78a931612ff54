"""Word count at 0.25-4 GiB: mixfleet vs a single-process Python reference vs Ray Data.

Builds the input by repeating the 8 lab books (tests/data/gutenberg) into
64 MiB files, then, in one run on the same data and the same embedded Ray
(``--cpus``, default 2):

- mixfleet ``WordCount`` (examples/mapreduce/wordcount.py) at every size,
  recording elapsed time, MB/s and the peak RSS of every worker actor;
- the single-process reference: the same mapper, combiner and reducer in a
  plain Python loop (combining every 100k lines, a fair, strong baseline);
- Ray Data: ``read_text`` -> ``flat_map`` (one row per word) -> ``groupby("word").count()``.

Outputs are checked equal. Writes ``benchmarks/results/mapreduce_wordcount.{json,md}``.

    python benchmarks/mapreduce_wordcount.py                  # sizes 0.25,0.5,1,4 GiB; peers at 1 GiB
    python benchmarks/mapreduce_wordcount.py --sizes 0.25 --peer-size 0.25   # quick look
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GiB, MiB = 1 << 30, 1 << 20
FILE_BYTES = 64 * MiB

spec = importlib.util.spec_from_file_location("bench_wordcount", REPO / "examples" / "mapreduce" / "wordcount.py")
wordcount = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wordcount)


def build_input(folder: Path, total_gib: float) -> list[Path]:
    """64 MiB files made of the books repeated, enough for ``total_gib``; reused if present."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(p.read_text() for p in sorted((REPO / "tests" / "data" / "gutenberg").glob("pg-*.txt")))
    block = (text * (FILE_BYTES // len(text) + 1)).encode()
    cut = block.rfind(b"\n", 0, FILE_BYTES) + 1
    files = []
    for i in range(int(round(total_gib * GiB / FILE_BYTES))):
        path = folder / f"books-{i:04d}.txt"
        if not path.exists() or path.stat().st_size != cut:
            path.write_bytes(block[:cut])
        files.append(path)
    return files


class RssSampler:
    """Peak RSS per Ray worker actor process (found by its ``ray::Worker`` title)."""

    def __init__(self, period_s: float = 0.25):
        self.period_s, self.peaks, self._stop = period_s, {}, threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline"]):
                try:
                    cmd = " ".join(proc.info["cmdline"] or [])
                    if cmd.startswith("ray::Worker"):
                        rss = proc.memory_info().rss
                        self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), rss)
                except Exception:  # a process that just exited
                    continue
            time.sleep(self.period_s)


def run_mixfleet(files: list[Path], out: Path) -> dict:
    from mixfleet.mapreduce import run

    with RssSampler() as rss:
        t0 = time.perf_counter()
        result = run(wordcount.WordCount, [str(f) for f in files], str(out), overwrite=True)
        elapsed = time.perf_counter() - t0
    counts = {k: int(v) for k, v in result.read()}
    return {"elapsed_s": elapsed, "map_tasks": result.map_tasks, "reduce_tasks": result.reduce_tasks,
            "worker_peak_rss_mib": sorted(round(v / MiB, 1) for v in rss.peaks.values()), "counts": counts}


def run_reference(files: list[Path]) -> dict:
    """The same mapper/combiner/reducer in one Python process."""
    job = wordcount.WordCount()
    t0 = time.perf_counter()
    groups: dict[str, list[int]] = {}
    n = 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                for k, v in job.mapper(None, line.rstrip("\n")):
                    bucket = groups.get(k)
                    if bucket is None:
                        groups[k] = [v]
                    else:
                        bucket.append(v)
                n += 1
                if n % 100_000 == 0:
                    groups = {k: [v for _, v in job.combiner(k, vs)] for k, vs in groups.items()}
    counts = {}
    for k in sorted(groups):
        for k2, v in job.reducer(k, groups[k]):
            counts[k2] = v
    return {"elapsed_s": time.perf_counter() - t0, "counts": counts}


def run_ray_data(files: list[Path], timeout_s: float) -> dict:
    """Ray Data's groupby yields nothing until the whole shuffle is done, so the time
    limit is enforced from outside: the query runs in a thread and is abandoned
    (the process exits soon after) when it overruns."""
    import ray.data

    word = wordcount.WORD

    def words(row: dict) -> list[dict]:
        return [{"word": w} for w in word.findall(row["text"])]

    box: dict = {}

    def query() -> None:
        ds = ray.data.read_text([str(f) for f in files]).flat_map(words).groupby("word").count()
        counts = {}
        for batch in ds.iter_batches(batch_size=65536, batch_format="pyarrow"):
            for w, c in zip(batch.column("word").to_pylist(), batch.column("count()").to_pylist(), strict=True):
                counts[w] = c
        box["counts"] = counts

    t0 = time.perf_counter()
    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return {"elapsed_s": None, "timed_out_after_s": timeout_s, "counts": None}
    return {"elapsed_s": time.perf_counter() - t0, "counts": box.get("counts")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0.25,0.5,1,4", help="GiB sizes for the mixfleet scaling runs")
    ap.add_argument("--peer-size", type=float, default=1.0, help="GiB size of the side-by-side comparison")
    ap.add_argument("--data-dir", default="/tmp/mixfleet-bench-wordcount")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--ray-data-timeout", type=float, default=1800)
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. machine contention)")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]

    from mixfleet.platform import connect

    connect(num_cpus=args.cpus)
    data = Path(args.data_dir)
    all_files = build_input(data / "in", max(sizes + [args.peer_size]))
    per_file = all_files[0].stat().st_size
    take = lambda gib: all_files[: int(round(gib * GiB / FILE_BYTES))]  # noqa: E731

    peer_files = take(args.peer_size)
    peer_mb = len(peer_files) * per_file / 1e6
    print(f"side by side on {peer_mb:.0f} MB ({len(peer_files)} files), {args.cpus} CPUs", file=sys.stderr)
    mix = run_mixfleet(peer_files, data / "out-peer")
    print(f"  mixfleet   {mix['elapsed_s']:.1f} s", file=sys.stderr)
    ref = run_reference(peer_files)
    print(f"  reference  {ref['elapsed_s']:.1f} s", file=sys.stderr)
    assert mix["counts"] == ref["counts"], "mixfleet and the reference disagree"

    scaling = []
    for gib in sizes:
        files = take(gib)
        r = mix if files == peer_files else run_mixfleet(files, data / f"out-{gib}")
        mb = len(files) * per_file / 1e6
        scaling.append({"gib": gib, "mb": round(mb, 1), "elapsed_s": round(r["elapsed_s"], 2),
                        "mb_per_s": round(mb / r["elapsed_s"], 2), "map_tasks": r["map_tasks"],
                        "reduce_tasks": r["reduce_tasks"], "worker_peak_rss_mib": r["worker_peak_rss_mib"]})
        print(f"  scaling {gib} GiB: {r['elapsed_s']:.1f} s, peak RSS/worker {r['worker_peak_rss_mib']}",
              file=sys.stderr)

    rd = run_ray_data(peer_files, args.ray_data_timeout)  # last: an overrunning query is abandoned
    print(f"  ray data   {rd['elapsed_s']} s", file=sys.stderr)
    rd_equal = rd["counts"] == ref["counts"] if rd["counts"] is not None else None

    def rate(x):
        return round(peer_mb / x["elapsed_s"], 2) if x["elapsed_s"] else None

    out = {
        "benchmark": "mapreduce_wordcount",
        "command": "python benchmarks/mapreduce_wordcount.py " + " ".join(sys.argv[1:]),
        "cpus": args.cpus, "note": args.note, "peer_mb": round(peer_mb, 1),
        "mixfleet": {"elapsed_s": round(mix["elapsed_s"], 2), "mb_per_s": rate(mix)},
        "reference": {"elapsed_s": round(ref["elapsed_s"], 2), "mb_per_s": rate(ref)},
        "ray_data": {"elapsed_s": round(rd["elapsed_s"], 2) if rd["elapsed_s"] else None, "mb_per_s": rate(rd),
                     "timed_out_after_s": rd.get("timed_out_after_s"), "output_equal": rd_equal},
        "ratio_vs_reference": round(ref["elapsed_s"] / mix["elapsed_s"], 2),
        "ratio_vs_ray_data": round(rd["elapsed_s"] / mix["elapsed_s"], 2) if rd["elapsed_s"] else None,
        "bars": {"vs_reference": 1.6, "vs_ray_data": 1.5},
        "scaling": scaling,
        "distinct_words": len(ref["counts"]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mapreduce_wordcount.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "mapreduce_wordcount.md").write_text(markdown(out))
    print(markdown(out))
    print(f"reproduce: {out['command']}")
    return 0


def headline(r: dict) -> str:
    """One line for the README's results at a glance."""
    rd = f"{r['ratio_vs_ray_data']:.2f}x" if r.get("ratio_vs_ray_data") else \
        f"Ray Data unfinished at {r['ray_data'].get('timed_out_after_s') or 0:g} s"
    return (f"{r['peer_mb']:g} MB word count: {r['ratio_vs_reference']:.2f}x a single-process reference "
            f"(bar {r['bars']['vs_reference']:g}x); vs Ray Data: {rd} (bar {r['bars']['vs_ray_data']:g}x)")


def markdown(r: dict) -> str:
    rd = r["ray_data"]
    rd_time = f"{rd['elapsed_s']:.1f}" if rd["elapsed_s"] else f"> {rd['timed_out_after_s']:.0f} (stopped)"
    lines = [
        f"### MapReduce word count, {r['peer_mb']:.0f} MB, {r['cpus']} CPUs", "",
        "| system | time (s) | MB/s | mixfleet speed-up | bar |", "| --- | ---: | ---: | ---: | ---: |",
        f"| mixfleet | {r['mixfleet']['elapsed_s']:.1f} | {r['mixfleet']['mb_per_s']:.1f} | 1.00 | |",
        f"| single-process Python (same mapper/combiner/reducer) | {r['reference']['elapsed_s']:.1f} | "
        f"{r['reference']['mb_per_s']:.1f} | {r['ratio_vs_reference']:.2f} | >= 1.6 |",
        f"| Ray Data (read_text, flat_map, groupby count) | {rd_time} | {rd['mb_per_s'] or '-'} | "
        f"{r['ratio_vs_ray_data'] or '-'} | >= 1.5 |",
        "", "| input (GiB) | time (s) | MB/s | maps | reduces | peak RSS per worker (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in r["scaling"]:
        lines.append(f"| {s['gib']} | {s['elapsed_s']} | {s['mb_per_s']} | {s['map_tasks']} | {s['reduce_tasks']} | "
                     f"{', '.join(str(x) for x in s['worker_peak_rss_mib'])} |")
    if r.get("note"):
        lines += ["", f"Note: {r['note']}"]
    lines += ["", f"Reproduce: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
