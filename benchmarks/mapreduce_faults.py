"""Predictable latency despite slow and failing workers: four cases on the same data, one run.

Cases (word count over the lab books repeated to ``--mb`` MB, ``--workers`` worker
actors on an embedded Ray with ``--cpus`` CPUs):

- (a) clean;
- (b) one worker slowed 10x (the job sleeps 9x its own compute time on worker 0), speculation on;
- (c) the same without speculation;
- (d) one worker killed during map and one during reduce (the job kills its own process).

(b) and (c) also run with split stealing off, which isolates what speculation alone buys.
Outputs must be identical in every case. Writes
``benchmarks/results/mapreduce_faults.{json,md}`` and a timeline PNG of the task
attempts per worker (``mapreduce_faults_timeline.png``).

    python benchmarks/mapreduce_faults.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from mixfleet.mapreduce import Job

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORD = re.compile(r"[A-Za-z]+")


class FaultyWordCount(Job):
    """Word count that can slow one worker down or kill chosen attempts (fault injection)."""

    def __init__(self, slow_worker: int = -1, factor: float = 10.0, kill_map: str = "", kill_reduce: str = ""):
        super().__init__()
        self.slow_worker, self.factor = slow_worker, factor
        self.kill_map, self.kill_reduce = kill_map, kill_reduce

    def _slow(self):
        if self.worker_index != self.slow_worker:
            return
        now = time.perf_counter()
        time.sleep((self.factor - 1) * (now - self._mark))
        self._mark = time.perf_counter()

    def mapper_init(self):
        self._mark, self._n = time.perf_counter(), 0

    def mapper(self, _, line):
        self._n += 1
        if self._n % 2000 == 0:
            self._slow()
            if self.task_id == self.kill_map and self.attempt == 1 and self._n >= 4000:
                os._exit(1)  # die in the middle of the map
        for word in WORD.findall(line):
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer_init(self):
        self._mark, self._n = time.perf_counter(), 0
        if self.task_id == self.kill_reduce and self.attempt == 1:
            os._exit(1)

    def reducer(self, word, counts):
        self._n += 1
        if self._n % 500 == 0:
            self._slow()
        yield word, sum(counts)


def build_input(path: Path, mb: float) -> Path:
    text = "".join(p.read_text() for p in sorted((REPO / "tests" / "data" / "gutenberg").glob("pg-*.txt")))
    target = int(mb * 1e6)
    data = (text * (target // len(text) + 1))[:target]
    data = data[: data.rfind("\n") + 1]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.stat().st_size != len(data):
        path.write_text(data)
    return path


def timeline_png(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixfleet.platform.output import save_figure

    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.0 * len(runs)), sharex=True)
    colors = {"map": "#4c72b0", "reduce": "#55a868"}
    for ax, (name, run) in zip(axes, runs.items(), strict=False):
        for a in run["timeline"]:
            style = dict(color=colors[a["kind"]], alpha=1.0 if a["outcome"] == "won" else 0.35,
                         edgecolor="black", hatch="//" if a["speculative"] else None)
            ax.barh(a["worker"], a["end"] - a["start"], left=a["start"], height=0.7, **style)
            if a["outcome"] in ("lost", "cancelled"):
                ax.text(a["end"], a["worker"], "x" if a["outcome"] == "lost" else "c", va="center", fontsize=7)
        ax.set_ylabel("worker")
        ax.set_title(f"{name}: {run['elapsed_s']:.1f} s", fontsize=9, loc="left")
    axes[-1].set_xlabel("seconds since the job started (blue map, green reduce; hatched = backup; "
                        "faded = lost/cancelled attempt)")
    save_figure(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=32)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--floor", type=float, default=2.0, help="speculation floor (s); tasks here last seconds")
    ap.add_argument("--data", default="/tmp/mixfleet-bench-faults/books.txt")
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    from mixfleet.mapreduce import run
    from mixfleet.platform import connect

    connect(num_cpus=args.cpus)
    src = build_input(Path(args.data), args.mb)
    out_root = Path(args.data).parent
    common = dict(num_workers=args.workers, num_reducers=4, overwrite=True, speculation_floor_s=args.floor)
    cases = {
        "a_clean": (FaultyWordCount(), {}),
        "b_slow_worker_speculation": (FaultyWordCount(slow_worker=0), {}),
        "c_slow_worker_no_speculation": (FaultyWordCount(slow_worker=0), {"speculation": False}),
        "d_killed_map_and_reduce": (FaultyWordCount(kill_map="s0-m-00002", kill_reduce="s0-r-00001"), {}),
        "b2_slow_worker_speculation_no_steal": (FaultyWordCount(slow_worker=0), {"steal": False}),
        "c2_slow_worker_no_speculation_no_steal": (FaultyWordCount(slow_worker=0),
                                                   {"steal": False, "speculation": False}),
    }
    run(FaultyWordCount(), [str(src)], str(out_root / "out-warmup"), **common)  # warm imports and caches
    runs, outputs = {}, {}
    for name, (job, extra) in cases.items():
        t0 = time.perf_counter()
        result = run(job, [str(src)], str(out_root / f"out-{name}"), **common, **extra)
        elapsed = time.perf_counter() - t0
        outputs[name] = sorted(result.read())
        spec = result.counters["speculation"]
        task_ms = sum(1000 * (a["end"] - a["start"]) for a in result.timeline)
        runs[name] = {"elapsed_s": round(elapsed, 2), "map_tasks": result.map_tasks,
                      "reduce_tasks": result.reduce_tasks, "attempts": result.attempts, "speculation": spec,
                      "wasted_work_pct": round(100 * spec["wasted_ms"] / task_ms, 1) if task_ms else 0.0,
                      "timeline": result.timeline}
        print(f"{name:42s} {elapsed:6.1f} s  attempts {result.attempts}  backups won "
              f"{spec['backups_won']}/{spec['backups_launched']}", file=sys.stderr)
    base = runs["a_clean"]["elapsed_s"]
    identical = all(o == outputs["a_clean"] for o in outputs.values())
    ratios = {k: round(v["elapsed_s"] / base, 2) for k, v in runs.items()}
    bars = {"b_le_1.25x_a": ratios["b_slow_worker_speculation"] <= 1.25,
            "c_ge_2x_a": ratios["c_slow_worker_no_speculation"] >= 2.0,
            "d_le_1.3x_a": ratios["d_killed_map_and_reduce"] <= 1.3, "outputs_identical": identical}
    result = {"benchmark": "mapreduce_faults", "command": "python benchmarks/mapreduce_faults.py " + " ".join(sys.argv[1:]),
              "input_mb": args.mb, "workers": args.workers, "cpus": args.cpus, "speculation_floor_s": args.floor,
              "note": args.note, "ratios_vs_clean": ratios, "bars_met": bars,
              "runs": {k: {kk: vv for kk, vv in v.items() if kk != "timeline"} for k, v in runs.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mapreduce_faults.json").write_text(json.dumps(result, indent=2) + "\n")
    timeline_png(runs, RESULTS / "mapreduce_faults_timeline.png")
    md = markdown(result)
    (RESULTS / "mapreduce_faults.md").write_text(md)
    print(md)
    print(f"reproduce: {result['command']}")
    return 0


def headline(r: dict) -> str:
    """One line for the README's results at a glance."""
    x = r["ratios_vs_clean"]
    met = sum(r["bars_met"].values())
    return (f"vs clean: slow worker + speculation {x['b_slow_worker_speculation']:.2f}x, without "
            f"{x['c_slow_worker_no_speculation']:.2f}x, two workers killed {x['d_killed_map_and_reduce']:.2f}x; "
            f"{met} of {len(r['bars_met'])} bars met")


def markdown(r: dict) -> str:
    lines = [f"### MapReduce under faults: word count, {r['input_mb']:.0f} MB, {r['workers']} workers on "
             f"{r['cpus']} CPUs, speculation floor {r['speculation_floor_s']} s", "",
             "| case | time (s) | x clean | attempts (failed / backups) | backups won | wasted work |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for name, run in r["runs"].items():
        a, s = run["attempts"], run["speculation"]
        lines.append(f"| {name} | {run['elapsed_s']:.1f} | {r['ratios_vs_clean'][name]:.2f} | {a['launched']} "
                     f"({a['failed']} / {a['speculative']}) | {s['backups_won']} | {run['wasted_work_pct']}% |")
    lines += ["", "Bars: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in r["bars_met"].items())]
    if r.get("note"):
        lines += ["", f"Note: {r['note']}"]
    lines += ["", "Timeline: `benchmarks/results/mapreduce_faults_timeline.png`", "",
              f"Reproduce: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
