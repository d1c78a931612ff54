"""A 10x CPU straggler at default settings: clean vs one slow worker, with and without speculation.

Word count over ``--mb`` MB of the lab books (one file) on ``--workers`` (2) worker
actors and an embedded Ray with ``--cpus`` (2) CPUs, every setting at its
default (splits, reducers, speculation). In the slow cases every attempt on
worker 0 is 10x slower *on CPU*: after each 2,000 lines (and 500 reduce keys)
it busy-loops for 9x the time its own work took (no sleep, so the core stays
busy and the worker's heartbeats and progress look like a slow machine's).

Cases, one run: ``clean``; ``slow`` (speculation on, the default); ``slow_no_spec``
(``speculation=False``). ``--repeat N`` runs the three cases N times in rounds (each
round every case once) and reports each case's median time, the rounds beside it.
Outputs must be identical. The bar is ``slow <= 1.3 x
clean``. Note the capacity bound: with one of two cores doing a tenth of its
work, the job has 1.1 cores of useful work instead of 2, so the CPU-bound part
cannot take less than 2 / 1.1 = 1.82x its clean time, whatever the scheduler does;
the table reports that bound next to the measurement.

    python benchmarks/mapreduce_straggler.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import sys
import time
from pathlib import Path

from mixfleet.mapreduce import Job

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORD = re.compile(r"[A-Za-z]+")
_spec = importlib.util.spec_from_file_location("bench_mapreduce_faults", Path(__file__).with_name("mapreduce_faults.py"))
_faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_faults)
build_input = _faults.build_input  # the lab books repeated to a size, one file


class SlowWorkerWordCount(Job):
    """Word count whose attempts on worker ``slow_worker`` burn ``factor - 1`` x their own CPU time."""

    def __init__(self, slow_worker: int = -1, factor: float = 10.0):
        super().__init__()
        self.slow_worker, self.factor = slow_worker, factor

    def _burn(self):
        now = time.perf_counter()
        until = now + (self.factor - 1) * (now - self._mark)
        while time.perf_counter() < until:  # busy: the core is taken, nothing sleeps
            pass
        self._mark = time.perf_counter()

    def mapper_init(self):
        self._mark, self._n, self._slow = time.perf_counter(), 0, self.worker_index == self.slow_worker

    def mapper(self, _, line):
        self._n += 1
        if self._slow and self._n % 2000 == 0:
            self._burn()
        for word in WORD.findall(line):
            yield word, 1

    def combiner(self, word, counts):
        yield word, sum(counts)

    def reducer_init(self):
        self._mark, self._n, self._slow = time.perf_counter(), 0, self.worker_index == self.slow_worker

    def reducer(self, word, counts):
        self._n += 1
        if self._slow and self._n % 500 == 0:
            self._burn()
        yield word, sum(counts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--factor", type=float, default=10.0)
    ap.add_argument("--data", default="/tmp/mixfleet-bench-straggler/books.txt")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the three cases; medians reported")
    ap.add_argument("--note", default="")
    args = ap.parse_args()

    from mixfleet.mapreduce import run
    from mixfleet.platform import connect

    connect(num_cpus=args.cpus)
    src = build_input(Path(args.data), args.mb)
    out_root = Path(args.data).parent
    cases = {"clean": (SlowWorkerWordCount(), {}),
             "slow": (SlowWorkerWordCount(0, args.factor), {}),
             "slow_no_spec": (SlowWorkerWordCount(0, args.factor), {"speculation": False})}
    rounds: dict[str, list[dict]] = {name: [] for name in cases}
    outputs = {}
    for k in range(args.repeat):
        for name, (job, extra) in cases.items():
            t0 = time.perf_counter()
            result = run(job, [str(src)], str(out_root / f"out-{name}"), num_workers=args.workers,
                         overwrite=True, **extra)
            elapsed = time.perf_counter() - t0
            out = sorted(result.read())
            outputs.setdefault(name, out)
            if out != outputs[name]:
                outputs[name] = None
            won = [a["end"] - a["start"] for a in result.timeline if a["outcome"] == "won" and a["kind"] == "map"]
            spec = result.counters["speculation"]
            rounds[name].append({
                "elapsed_s": round(elapsed, 2), "map_tasks": result.map_tasks,
                "reduce_tasks": result.reduce_tasks, "attempts": result.attempts,
                "backups_won": spec["backups_won"], "backups_launched": spec["backups_launched"],
                "map_task_s": {"min": round(min(won), 2), "median": round(statistics.median(won), 2),
                               "max": round(max(won), 2)}})
            print(f"round {k + 1} {name:14s} {elapsed:6.1f} s  attempts {result.attempts}  backups won "
                  f"{spec['backups_won']}/{spec['backups_launched']}", file=sys.stderr)
    runs = {}
    for name, rs in rounds.items():
        mid = sorted(rs, key=lambda r: r["elapsed_s"])[(len(rs) - 1) // 2]  # the median round (lower middle)
        runs[name] = {**mid, "elapsed_s": statistics.median(r["elapsed_s"] for r in rs),
                      "rounds_s": [r["elapsed_s"] for r in rs]}
    base = runs["clean"]["elapsed_s"]
    ratios = {k: round(v["elapsed_s"] / base, 2) for k, v in runs.items()}
    round_ratios = {k: [round(r["elapsed_s"] / c["elapsed_s"], 2) for r, c in zip(rs, rounds["clean"], strict=True)]
                    for k, rs in rounds.items()}
    result = {"benchmark": "mapreduce_straggler",
              "command": "python benchmarks/mapreduce_straggler.py " + " ".join(sys.argv[1:]),
              "input_mb": args.mb, "workers": args.workers, "cpus": args.cpus, "factor": args.factor,
              "note": args.note, "repeat": args.repeat, "runs": runs, "ratios_vs_clean": ratios,
              "round_ratios_vs_clean": round_ratios,
              "capacity_bound": round(args.workers / (args.workers - 1 + 1 / args.factor), 2),
              "bar": 1.3, "bar_met": ratios["slow"] <= 1.3,
              "outputs_identical": all(o is not None and o == outputs["clean"] for o in outputs.values())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mapreduce_straggler.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "mapreduce_straggler.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def headline(r: dict) -> str:
    """One line for the README's summary table."""
    x = r["ratios_vs_clean"]
    return (f"{x['slow']:.2f}x clean with speculation, {x['slow_no_spec']:.2f}x without (bar {r['bar']}x; "
            f"CPU capacity bound {r['capacity_bound']}x)")


def markdown(r: dict) -> str:
    n = r.get("repeat", 1)
    lines = [f"### One of {r['workers']} workers {r['factor']:g}x slower on CPU, default settings: word count, "
             f"{r['input_mb']:.0f} MB, {r['cpus']} CPUs" + (f", median of {n} rounds" if n > 1 else ""), "",
             "| case | time (s) | x clean | rounds: x clean | map tasks | map task s (min / median / max) "
             "| backups won / launched |",
             "| --- | ---: | ---: | --- | ---: | --- | --- |"]
    for name, run in r["runs"].items():
        t = run["map_task_s"]
        per_round = " / ".join(f"{x:.2f}" for x in r.get("round_ratios_vs_clean", {}).get(name, [])) or "-"
        lines.append(f"| {name} | {run['elapsed_s']:.1f} | {r['ratios_vs_clean'][name]:.2f} | {per_round} | "
                     f"{run['map_tasks']} | {t['min']} / {t['median']} / {t['max']} | "
                     f"{run['backups_won']} / {run['backups_launched']} |")
    lines += ["", f"Bar: slow <= {r['bar']}x clean: {'met' if r['bar_met'] else 'MISSED'} "
                  f"({r['ratios_vs_clean']['slow']:.2f}x). Capacity bound for a CPU-bound job: "
                  f"{r['capacity_bound']:.2f}x (1.1 useful cores of 2). Outputs identical: "
                  f"{'yes' if r['outputs_identical'] else 'NO'}."]
    if r.get("note"):
        lines += ["", f"Note: {r['note']}"]
    lines += ["", f"Reproduce: `{r['command'].strip()}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
