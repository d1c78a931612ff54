"""What a neighbour on the other core does to the REAL engine's decode steps.

    python benchmarks/routing_neighbours.py [--requests 40] [--rounds 2]

Real compute, random weights (``tiny-llama``, :mod:`mixfleet.routing.serve.torch_engine`). The
fidelity benchmark (``routing_fidelity.py``) finds the served engine's decode-only iterations
7-18% slower than the offline profile prices them, with no stalls and the generation loop's Python
the same served as offline: the extra time is inside the forward pass. A decode step of a few
sequences reads the whole model (about 12 MB of float32 weights for ``tiny-llama``) and little
else, so it is bound by the memory hierarchy the two cores share (the L3 cache and the memory
bus), where a serving path (proxy, ingress, client, Ray) adds traffic that a profile taken
offline does not see.

This measures that directly: the engine bound to CPU 1 runs the profiler's trickle (Poisson
arrivals through :meth:`TorchEngine.generate`, every iteration timed where ``transformers`` runs
the model) while CPU 0 runs one neighbour:

- ``none``: nothing (the baseline, run before and after every other condition, because this
  host's speed moves within minutes);
- ``cpu``: a Python loop adding integers (busy, touching no memory to speak of);
- ``stream-8mb`` / ``stream-64mb``: numpy copying an 8 MB / 64 MB array over and over (a
  memory-bound neighbour whose data fits / does not fit the shared L3).

Reported per condition: the median forward pass of the decode-only iterations of one or two
sequences (the shapes a partly loaded replica runs), and its ratio to the mean of the ``none``
runs just before and after it. The neighbours are synthetic; the engine and its timing are the
real ones. Needs at least 2 CPUs.

Results: ``benchmarks/results/routing_neighbours.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOTE = "REAL compute, random weights (tiny-llama on this CPU); the neighbours are synthetic processes"
NEIGHBOURS = {
    "none": None,
    "cpu": "x = 0\nwhile True:\n    x += 1",
    "stream-8mb": "import numpy as np\na = np.ones(2 << 20, dtype=np.float32)\nb = np.empty_like(a)\n"
                  "while True:\n    np.copyto(b, a)",
    "stream-64mb": "import numpy as np\na = np.ones(16 << 20, dtype=np.float32)\nb = np.empty_like(a)\n"
                   "while True:\n    np.copyto(b, a)",
}
WHAT = {"none": "nothing", "cpu": "a Python loop (CPU only)", "stream-8mb": "numpy copying 8 MB (fits the L3)",
        "stream-64mb": "numpy copying 64 MB (does not fit the L3)"}


def neighbour(name: str, cpu: int) -> subprocess.Popen | None:
    code = NEIGHBOURS[name]
    if code is None:
        return None
    return subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\n{code}"])


def decode_forward_ms(steps: list[dict]) -> dict:
    small = [s["forward_s"] * 1e3 for s in steps if s["sq"] == 0 and s["sequences"] <= 2]
    return {"iterations": len(small), "median_ms": statistics.median(small) if small else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40, help="trickle requests per condition run")
    ap.add_argument("--rate", type=float, default=3.0, help="trickle arrivals per second")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each neighbour (each between two of none)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print(f"error: this benchmark needs 2 CPUs (one for the engine, one for the neighbour), this process has "
              f"{len(cpus)}; run it on a machine with at least 2", file=sys.stderr)
        return 2
    engine_cpu, other_cpu = cpus[-1], cpus[0]
    os.sched_setaffinity(0, {engine_cpu})

    from mixfleet.platform.output import atomic_write_text
    from mixfleet.routing import profiler
    from mixfleet.routing.serve.torch_engine import TorchEngine
    from mixfleet.routing.torch_model import model_config

    cfg = model_config("tiny-llama")
    eng = TorchEngine("neighbours", cfg, kv_tokens=16384, max_batch=32, max_waiting=1 << 20,
                      max_batched_tokens=512, device="cpu", threads=1)
    order = ["none"]
    for _ in range(args.rounds):
        for name in NEIGHBOURS:
            if name != "none":
                order += [name, "none"]
    runs = []
    try:
        profiler._burst_steps(eng, 16, 512, cfg.max_context)  # warm-up, as a serving replica is warm
        for name in order:
            proc = neighbour(name, other_cpu)
            time.sleep(0.5)
            try:
                steps = profiler._trickle_steps(eng, args.requests, args.rate, 512, cfg.max_context)
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()
            runs.append({"neighbour": name, **decode_forward_ms(steps)})
            print(f"  {name:12s} median {runs[-1]['median_ms']} ms over {runs[-1]['iterations']} decode steps",
                  file=sys.stderr)
    finally:
        eng.close()
    for i, r in enumerate(runs):
        around = [runs[i - 1]["median_ms"], runs[i + 1]["median_ms"]] if r["neighbour"] != "none" else []
        if r["median_ms"] is not None and around and None not in around:
            r["vs_none"] = r["median_ms"] / statistics.mean(around)
    out = {"benchmark": "routing_neighbours", "note": NOTE, "emulated": False, "model": cfg.name,
           "engine_cpu": engine_cpu, "neighbour_cpu": other_cpu, "requests": args.requests, "rate": args.rate,
           "runs": runs, "command": f"python benchmarks/routing_neighbours.py --requests {args.requests} "
                                    f"--rounds {args.rounds}"}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "routing_neighbours.json", json.dumps(out, indent=1) + "\n")
    md = markdown(out)
    atomic_write_text(out_dir / "routing_neighbours.md", md)
    print(md)
    return 0


def _by_neighbour(r: dict) -> dict[str, list[float]]:
    by: dict[str, list[float]] = {}
    for run in r["runs"]:
        if "vs_none" in run:
            by.setdefault(run["neighbour"], []).append(run["vs_none"])
    return by


def headline(r: dict) -> str:
    return ("decode step forward pass with a neighbour on the other core, vs none: "
            + ", ".join(f"{k} {statistics.mean(v):.2f}x" for k, v in _by_neighbour(r).items())
            + " (real compute, random weights)")


def markdown(r: dict) -> str:
    rows = ["# The real engine's decode steps beside a neighbour on the other core", "",
            f"{r['note']}. Engine on CPU {r['engine_cpu']}, neighbour on CPU {r['neighbour_cpu']}; each run is the "
            f"profiler's trickle ({r['requests']} requests, Poisson at {r['rate']:g}/s); median forward pass of the "
            "decode-only iterations of one or two sequences; `vs none`: against the mean of the runs with no "
            "neighbour just before and after.", "",
            "| run | neighbour | decode steps | median forward (ms) | vs none |", "| ---: | --- | ---: | ---: | ---: |"]
    for i, run in enumerate(r["runs"], 1):
        vs = f"{run['vs_none']:.2f}x" if "vs_none" in run else ""
        med = f"{run['median_ms']:.3f}" if run["median_ms"] is not None else "none timed"
        rows.append(f"| {i} | {WHAT.get(run['neighbour'], run['neighbour'])} | {run['iterations']} | {med} | {vs} |")
    rows += ["", "Mean per neighbour: " + ", ".join(f"{WHAT.get(k, k)} {statistics.mean(v):.2f}x"
                                                    for k, v in _by_neighbour(r).items()) + ".", "",
             f"Reproduce: `{r['command']}`"]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
