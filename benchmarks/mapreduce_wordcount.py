"""Word count, side by side with the tools a data engineer would pick instead; and scaling to 4 GiB.

Builds the input by repeating the 8 lab books (tests/data/gutenberg) into
64 MiB files. ``--peers`` (the default mode) runs, in one invocation on the
same ``--peer-size`` GiB of files and with ``--cpus`` (2) cores for everyone:

- ``script``: a single-process Python script, 4 MiB chunks, ``findall`` + ``Counter.update``;
- ``reference``: the same mapper/combiner/reducer as ``examples/mapreduce/wordcount.py``
  in a plain single-process loop (combining every 100k lines);
- ``spark_df``: Spark DataFrame on ``local[N]`` (split / explode / groupBy count;
  skipped with a line saying so where ``java`` is missing);
- ``spark_rdd``: PySpark RDD with the same Python regex (``flatMap`` / ``reduceByKey``);
- ``dask_bag``: Dask bag, processes scheduler, N workers (``map(findall).flatten().frequencies()``);
- ``ray_data``: Ray Data with map-side combining (``map_batches`` over whole blocks
  with a ``Counter``, then ``groupby("word").sum("count")``);
- ``mixfleet_line``: mixfleet, per-line API (``examples/mapreduce/wordcount.py``);
- ``mixfleet_chunk``: mixfleet, chunk API (``examples/mapreduce/wordcount_fast.py``).

``--repeat N`` runs the whole line-up N times in rounds (each round every system once, in
the same order) and reports each system's median; the bars read the median over rounds of
the ratio measured *within* a round, so a host that changes speed between rounds moves
both sides of a ratio together (this VM's speed moves within minutes: the script alone
took 32-37 s in three runs of one session).

Every output is checked equal to the script's. Times are of the query, with the
engine already started (Ray connected, Spark session up), and include reading
the input and collecting the counts. The first round starts once the host has
settled after Ray's start-up (under a quarter of a core busy for a second, at
most a minute: ``settled_s`` in the JSON), so the script, which runs first, does
not share the cores with it. ``--scaling`` runs mixfleet (chunk API) at
each of ``--sizes`` GiB and records the peak RSS of every worker actor.

Writes ``benchmarks/results/mapreduce_wordcount.{json,md}`` (a mode keeps the
other mode's last results).

    python benchmarks/mapreduce_wordcount.py --peers
    python benchmarks/mapreduce_wordcount.py --scaling
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GiB, MiB = 1 << 30, 1 << 20
FILE_BYTES = 64 * MiB
WORD = re.compile(r"[A-Za-z]+")
BARS = {"mixfleet_line": {"reference": 1.6, "dask_bag": 1.3}, "mixfleet_chunk": {"script": 1.6, "spark_df": 1.2}}
LABELS = {
    "script": "single-process script (4 MiB chunks, findall + Counter.update)",
    "reference": "single-process, same mapper/combiner/reducer as wordcount.py",
    "spark_df": "Spark DataFrame local[{cpus}] (split, explode, groupBy count)",
    "spark_rdd": "PySpark RDD local[{cpus}] (flatMap findall, reduceByKey)",
    "dask_bag": "Dask bag, processes scheduler, {cpus} workers (map findall, flatten, frequencies)",
    "ray_data": "Ray Data, map_batches Counter per block, groupby sum",
    "mixfleet_line": "mixfleet, per-line mapper (wordcount.py)",
    "mixfleet_chunk": "mixfleet, chunk mapper (wordcount_fast.py)",
}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "examples" / "mapreduce" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
        proc = Path("/proc")
        while not self._stop.is_set():
            for d in proc.iterdir():
                if not d.name.isdigit():
                    continue
                try:
                    if not (d / "cmdline").read_bytes().startswith(b"ray::Worker"):
                        continue
                    rss = int((d / "statm").read_text().split()[1]) * 4096
                    self.peaks[int(d.name)] = max(self.peaks.get(int(d.name), 0), rss)
                except OSError:  # a process that just exited
                    continue
            time.sleep(self.period_s)


# --- the systems ----------------------------------------------------------------------------
def settle(max_cores: float = 0.25, window_s: float = 1.0, timeout_s: float = 60.0) -> float:
    """Wait until the host uses under ``max_cores`` for a ``window_s`` window (Ray's start-up done:
    its prestarted workers and dashboard burn CPU for several seconds after ``connect``), at most
    ``timeout_s``; the seconds waited. Without it the first round's script runs beside that start-up."""
    from mixfleet.platform.cpus import cpu_seconds_by_role

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        a = cpu_seconds_by_role(roles=())["host"]
        time.sleep(window_s)
        if (cpu_seconds_by_role(roles=())["host"] - a) / window_s < max_cores:
            break
    return time.perf_counter() - t0


def run_script(files: list[Path], cpus: int) -> dict:
    counts: Counter = Counter()
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(4 * MiB):
                chunk += f.readline()  # whole lines only
                counts.update(WORD.findall(chunk.decode("utf-8", errors="replace")))
    return dict(counts)


def run_reference(files: list[Path], cpus: int) -> dict:
    job = _load("wordcount").WordCount()
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
    return counts


def _spark(cpus: int):
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master(f"local[{cpus}]").appName("mixfleet-bench")
            .config("spark.driver.memory", "4g").config("spark.sql.shuffle.partitions", str(2 * cpus))
            .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())


def run_spark_df(files: list[Path], cpus: int, spark) -> dict:
    from pyspark.sql import functions as F

    df = spark.read.text([str(f) for f in files])
    words = df.select(F.explode(F.split(F.col("value"), "[^A-Za-z]+")).alias("word")).where(F.col("word") != "")
    return {r["word"]: r["count"] for r in words.groupBy("word").count().collect()}


def run_spark_rdd(files: list[Path], cpus: int, spark) -> dict:
    from operator import add

    word = WORD
    rdd = spark.sparkContext.textFile(",".join(str(f) for f in files))
    return dict(rdd.flatMap(word.findall).map(lambda w: (w, 1)).reduceByKey(add, 2 * cpus).collect())


def run_dask_bag(files: list[Path], cpus: int) -> dict:
    import dask.bag as db

    word = WORD
    bag = db.read_text([str(f) for f in files], blocksize=FILE_BYTES)
    return dict(bag.map(word.findall).flatten().frequencies().compute(scheduler="processes", num_workers=cpus))


def run_ray_data(files: list[Path], cpus: int) -> dict:
    import ray.data

    word = WORD

    def count(batch: dict) -> dict:
        c: Counter = Counter()
        for line in batch["text"]:
            c.update(word.findall(line))
        return {"word": list(c), "count": list(c.values())}

    ds = ray.data.read_text([str(f) for f in files]).map_batches(count, batch_size=None)
    counts = {}
    for batch in ds.groupby("word", num_partitions=2 * cpus).sum("count").iter_batches(batch_size=65536, batch_format="pyarrow"):
        counts.update(zip(batch.column("word").to_pylist(), batch.column("sum(count)").to_pylist(), strict=True))
    return counts


def run_mixfleet(files: list[Path], cpus: int, example: str, cls: str, out: Path) -> dict:
    from mixfleet.mapreduce import run

    result = run(getattr(_load(example), cls), [str(f) for f in files], str(out), overwrite=True)
    counts = {k: int(v) for k, v in result.read()}
    shutil.rmtree(out, ignore_errors=True)
    return counts


# --- modes ---------------------------------------------------------------------------------
def peers(args, files: list[Path], out_root: Path) -> dict:
    systems = {
        "script": lambda: run_script(files, args.cpus),
        "reference": lambda: run_reference(files, args.cpus),
        "mixfleet_line": lambda: run_mixfleet(files, args.cpus, "wordcount", "WordCount", out_root / "out-line"),
        "mixfleet_chunk": lambda: run_mixfleet(files, args.cpus, "wordcount_fast", "WordCountFast",
                                               out_root / "out-chunk"),
        "dask_bag": lambda: run_dask_bag(files, args.cpus),  # before Ray Data, whose actors outlive its run
        "ray_data": lambda: run_ray_data(files, args.cpus),
    }
    skipped = {}
    results: dict[str, dict] = {}
    truth = None

    def timed(name: str, fn) -> None:
        nonlocal truth
        t0 = time.perf_counter()
        counts = fn()
        elapsed = time.perf_counter() - t0
        truth = truth if truth is not None else counts
        r = results.setdefault(name, {"runs_s": [], "output_equal": True})
        r["runs_s"].append(round(elapsed, 2))
        r["output_equal"] = r["output_equal"] and counts == truth
        print(f"  {name:15s} {elapsed:7.1f} s  equal={counts == truth}", file=sys.stderr)

    java = shutil.which("java") is not None
    if not java:
        skipped["spark_df"] = skipped["spark_rdd"] = "java is not installed on this machine: Spark skipped"
        print("spark: skipped, `java` not found on PATH", file=sys.stderr)
    waited = settle()
    print(f" the host settled after {waited:.1f} s", file=sys.stderr)
    for k in range(args.repeat):
        if args.repeat > 1:
            print(f" round {k + 1} of {args.repeat}", file=sys.stderr)
        for name, fn in systems.items():
            timed(name, fn)
        # Spark last, its JVM started here and stopped after: an idle JVM beside the other systems takes CPU
        # from the ones that use both cores (Ray, Dask) more than from the single-process script
        if java:
            spark = _spark(args.cpus)
            try:
                timed("spark_df", lambda spark=spark: run_spark_df(files, args.cpus, spark))
                timed("spark_rdd", lambda spark=spark: run_spark_rdd(files, args.cpus, spark))
            finally:
                spark.stop()
    for r in results.values():
        r["elapsed_s"] = round(statistics.median(r["runs_s"]), 2)
    rounds = {api: {peer: [round(a / b, 2) for a, b in zip(results[peer]["runs_s"], results[api]["runs_s"],
                                                           strict=True)]
                    for peer in bars if peer in results} for api, bars in BARS.items()}
    ratios = {api: {peer: round(statistics.median(v), 2) for peer, v in by_peer.items()}
              for api, by_peer in rounds.items()}
    return {"systems": results, "skipped": skipped, "ratios": ratios, "ratio_per_round": rounds,
            "repeat": args.repeat, "distinct_words": len(truth or {}), "java": _java_version(),
            "settled_s": round(waited, 1)}


def scaling(args, all_files: list[Path], out_root: Path) -> list[dict]:
    rows = []
    for gib in [float(s) for s in args.sizes.split(",")]:
        files = all_files[: int(round(gib * GiB / FILE_BYTES))]
        with RssSampler() as rss:
            t0 = time.perf_counter()
            run_mixfleet(files, args.cpus, "wordcount_fast", "WordCountFast", out_root / "out-scaling")
            elapsed = time.perf_counter() - t0
        mb = sum(f.stat().st_size for f in files) / 1e6
        rows.append({"gib": gib, "mb": round(mb, 1), "elapsed_s": round(elapsed, 2), "mb_per_s": round(mb / elapsed, 2),
                     "worker_peak_rss_mib": sorted(round(v / MiB, 1) for v in rss.peaks.values())})
        print(f"  scaling {gib} GiB: {elapsed:.1f} s, peak RSS per worker {rows[-1]['worker_peak_rss_mib']}",
              file=sys.stderr)
    return rows


def _java_version() -> str | None:
    import subprocess

    if shutil.which("java") is None:
        return None
    out = subprocess.run(["java", "-version"], capture_output=True, text=True)
    return (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else "java"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--peers", action="store_true", help="the side-by-side comparison (default)")
    mode.add_argument("--scaling", action="store_true", help="mixfleet (chunk API) at each of --sizes")
    ap.add_argument("--sizes", default="0.25,0.5,1,2,4", help="GiB sizes for --scaling")
    ap.add_argument("--peer-size", type=float, default=1.0, help="GiB of input for --peers")
    ap.add_argument("--data-dir", default="/tmp/mixfleet-bench-wordcount")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the whole line-up (--peers); medians reported")
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. machine contention)")
    args = ap.parse_args()

    import logging

    from mixfleet.platform import connect

    connect(num_cpus=args.cpus)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    data = Path(args.data_dir)
    sizes = [float(s) for s in args.sizes.split(",")] if args.scaling else [args.peer_size]
    all_files = build_input(data / "in", max(sizes))
    path = RESULTS / "mapreduce_wordcount.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    if not all(isinstance(out.get(k, {}), dict) for k in ("peers", "scaling")):
        out = {}  # results of an older version of this script
    out["benchmark"] = "mapreduce_wordcount"
    command = "python benchmarks/mapreduce_wordcount.py " + " ".join(sys.argv[1:])
    if args.scaling:
        out["scaling"] = {"command": command, "cpus": args.cpus, "note": args.note,
                          "rows": scaling(args, all_files, data)}
    else:
        files = all_files[: int(round(args.peer_size * GiB / FILE_BYTES))]
        mb = sum(f.stat().st_size for f in files) / 1e6
        print(f"side by side on {mb:.0f} MB ({len(files)} files), {args.cpus} CPUs", file=sys.stderr)
        out["peers"] = {"command": command, "cpus": args.cpus, "note": args.note, "mb": round(mb, 1),
                        "bars": BARS, **peers(args, files, data)}
    out["command"] = " ; ".join(out[m]["command"].strip() for m in ("peers", "scaling") if m in out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "mapreduce_wordcount.md").write_text(markdown(out))
    print(markdown(out))
    return 0


def headline(r: dict) -> str:
    """One line for the README's summary table."""
    p = r.get("peers")
    if not p:
        return ""
    ratio = p["ratios"]
    parts = [f"{api.split('_')[1]} API {got}x {peer}" for api in ratio for peer, got in ratio[api].items()]
    return f"{p['mb']:.0f} MB on {p['cpus']} CPUs: " + ", ".join(parts)


def markdown(r: dict) -> str:
    lines: list[str] = []
    p = r.get("peers")
    if p:
        cpus = p["cpus"]
        n = p.get("repeat", 1)
        how = "one run" if n == 1 else f"one run of {n} rounds, median per system"
        lines += [f"### Word count side by side: {p['mb']:.0f} MB, {cpus} CPUs, {how}", "",
                  "| system | time (s) | MB/s | same output |" + (" each round (s) |" if n > 1 else ""),
                  "| --- | ---: | ---: | --- |" + (" --- |" if n > 1 else "")]
        for name, s in sorted(p["systems"].items(), key=lambda kv: kv[1]["elapsed_s"]):
            label = LABELS[name].format(cpus=cpus)
            lines.append(f"| {label} | {s['elapsed_s']:.1f} | {p['mb'] / s['elapsed_s']:.1f} | "
                         f"{'yes' if s['output_equal'] else 'NO'} |"
                         + (f" {', '.join(f'{x:.1f}' for x in s['runs_s'])} |" if n > 1 else ""))
        for name, why in p.get("skipped", {}).items():
            lines.append(f"| {LABELS[name].format(cpus=cpus)} | skipped | | {why} |")
        per_round = p.get("ratio_per_round") if n > 1 else None
        lines += ["", "| mixfleet API | vs | speed-up" + (" (median of rounds)" if per_round else "") + " | bar | met |"
                  + (" each round |" if per_round else ""),
                  "| --- | --- | ---: | ---: | --- |" + (" --- |" if per_round else "")]
        for api, bars in p["bars"].items():
            for peer, bar in bars.items():
                got = p["ratios"].get(api, {}).get(peer)
                met = "-" if got is None else ("yes" if got >= bar else "**no**")
                each = ", ".join(str(x) for x in (per_round or {}).get(api, {}).get(peer, []))
                lines.append(f"| {api} | {peer} | {got if got is not None else '-'} | >= {bar} | {met} |"
                             + (f" {each} |" if per_round else ""))
        if p.get("java"):
            lines += ["", f"Spark ran on {p['java']}."]
        if p.get("note"):
            lines += ["", f"Note: {p['note']}"]
        lines += ["", f"Reproduce: `{p['command'].strip()}`", ""]
    s = r.get("scaling")
    if s:
        lines += [f"### mixfleet scaling (chunk API), {s['cpus']} CPUs", "",
                  "| input (GiB) | time (s) | MB/s | peak RSS per worker (MiB) |", "| ---: | ---: | ---: | --- |"]
        for row in s["rows"]:
            lines.append(f"| {row['gib']} | {row['elapsed_s']} | {row['mb_per_s']} | "
                         f"{', '.join(str(x) for x in row['worker_peak_rss_mib'])} |")
        if s.get("note"):
            lines += ["", f"Note: {s['note']}"]
        lines += ["", f"Reproduce: `{s['command'].strip()}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
