"""Does the simulator predict a REAL engine? The same trace slice replayed live on real-engine replicas
and simulated with the profile measured from that engine, per request, at two loads.

    python benchmarks/routing_fidelity.py [--requests 160] [--scale 0.25] [--load 0.5 --load 0.85]

Real compute, random weights: the replicas are the real engine (``engine: torch``,
:mod:`mixfleet.routing.serve.torch_engine`): ``transformers``' continuous batching
(FIFO, paged KV cache, chunked prefill) over ``tiny-llama`` with seeded random
weights, on this machine's CPU (``--device cuda`` on a GPU). Nothing is emulated
on the live side.

One run, in order:

1. profile: :func:`mixfleet.routing.profiler.measure` on this machine (the grid of
   ``mixfleet routing profile``) and its least-squares fit: the simulator's
   ``measured:`` entry (measured again right before each load's replay: on the
   2-core development VM the same decode step took 1.6 ms and, 15 minutes later,
   3.1 ms; a short probe before and after each replay reports how far the host's
   speed moved during it);
2. capacity: a burst of the slice's requests on the real engine, offline (requests
   per second at saturation; the first 4 warm it up), and the same burst live, through
   the deployed Serve application (the capacity of what is replayed: proxy, ingress,
   streaming and the replica process included). The loads are fractions of the live
   capacity (``--rate-from live``, default) or of the offline one (``offline``, the
   runs before 2026-12-04): at a fraction of the offline capacity the live deployment
   can be past saturation, so "85% load" would not be 85% of what is replayed;
3. per load (default 50% and 85% of that capacity): the Azure conversation trace's
   first ``--requests`` rows, prompt and output lengths scaled by ``--scale``
   (clipped to the model's context), arrivals scaled to the load; replayed
   (a) live through the mixfleet Serve application as streaming OpenAI
   completions (``max_tokens`` = the true output length) and (b) in
   :class:`~mixfleet.routing.simulator.Simulation` with the measured profile
   (chunked prefill, grow-and-preempt KV, the same policy), plus the idle
   transport (requests one at a time through Serve) measured just before; and
   (c) simulated with a *served profile*: the same grid, but the profiler's
   burst and trickle sent through the deployed application and timed inside the
   replica (:meth:`TorchEngine.time_iterations`), so the fit sees the engine's
   iterations as served (beside the replica's event loop and Serve's threads);
4. per request TTFT and E2E, sim vs real; P50/P99 ratios against the bars
   (within 10% at 50% load, 20% at 85%); a scatter plot; and where they part, a
   decomposition: transport (client-seen minus engine-seen latency), engine
   vs simulator (queueing and batching inside the engine), and the profile's own
   fit error; and inside the replica, the replay's own iterations (counted against
   the simulator's, priced by the profile), the *stalls* (waits with sequences in
   the engine and no iteration running) and the decode steps' time split into
   the forward pass and the generation loop's Python, beside the same split for
   the offline and the served trickle (``decode_steps`` in the JSON);
5. ``--repeat`` (default; ``--no-repeat`` skips it): each load's schedule replayed live a second
   time straight after the first, the real engine against itself (``repeat`` in the JSON): how far
   the referee moves over the next minutes, the noise floor under the bars.

CPU binding (``--bind on``; ``auto`` binds on a CPU run with a core to spare
for each replica; default ``off``): replica ``k`` is bound to its own core (``ServeOptions.cpu_bind``)
and everything else (this driver, the load generator, Ray, Serve's proxy and
the ingress) to the remaining cores, as a GPU engine has its device to itself;
the profile, the probe and the capacity burst are measured on the first
replica's core. ``--bind off`` shares every core (the committed run; one run
with binding is reported in ``docs/routing.md``).

Results: ``benchmarks/results/routing_fidelity.json``, ``.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from mixfleet.routing.serve.replay import percentile as _pct
from mixfleet.routing.serve.replay import replay, served_profile_points
from mixfleet.routing.serve.replay import summary as _summary

RESULTS = Path(__file__).resolve().parent / "results"
BARS = {0.5: 0.10, 0.85: 0.20}
KEYS = ("p50_ttft_s", "p99_ttft_s", "p50_e2e_s", "p99_e2e_s")
NOTE = "real compute, random weights"
DRIVER = "driver and load generator"


def _probe_grid():
    """A few seconds of the engine, timed before and after each replay: two prefills and three decode shapes
    (up to 16 sequences over 2,300 keys), each the median of three."""
    from mixfleet.routing.profiler import Grid

    return Grid(prompt_grid=(64, 256), batch_grid=(1, 4, 16), context_grid=(128,), decode_tokens=16, repeats=3,
                burst=0, trickle=0)


def bar_for(load: float) -> float:
    return BARS.get(round(load, 2), 0.10 if load <= 0.5 else 0.20)


def slice_rows(n: int, scale: float, max_context: int):
    """The first ``n`` Azure conversation rows, lengths x ``scale``, clipped to the context (arrivals as traced)."""
    from mixfleet.routing.traces import TraceRow, open_trace

    rows = []
    for r in open_trace("azure-conv").head(n):
        p, o = max(1, round(r.prompt * scale)), max(1, round(r.output * scale))
        if p + o > max_context:
            o = min(o, max_context // 4)
            p = max_context - o
        rows.append(TraceRow(r.arrival_s, p, o))
    return rows


def at_rate(rows, rate: float):
    """``rows`` with arrivals rescaled so that the mean rate is ``rate`` requests/s."""
    from mixfleet.routing.traces import TraceRow

    span = rows[-1].arrival_s - rows[0].arrival_s
    k = (len(rows) - 1) / rate / span
    return [TraceRow((r.arrival_s - rows[0].arrival_s) * k, r.prompt, r.output) for r in rows]


def cpu_plan(bind: str, device: str, replicas: int) -> tuple[str | None, list[int] | None]:
    """``(cpu_bind spec for the replicas, the CPUs left for everything else)``, or ``(None, None)``."""
    cpus = sorted(os.sched_getaffinity(0))
    if bind == "off" or device != "cpu" or len(cpus) < replicas + 1:
        if bind == "on":
            raise SystemExit(f"error: --bind on needs a CPU run and more than {replicas} CPUs (have {len(cpus)}); "
                             "use --bind off")
        return None, None
    mine = cpus[-replicas:]
    return "|".join(str(c) for c in mine), cpus[:-replicas]


@contextlib.contextmanager
def on_cpus(cpus: list[int] | None):
    """Run the block with this process bound to ``cpus`` (nothing changes for ``None``)."""
    if cpus is None:
        yield
        return
    from mixfleet.platform.cpus import bind_process

    before = bind_process(cpus)
    try:
        yield
    finally:
        bind_process(before)


def measure_capacity(cfg, fleet, rows, device: str, threads: int) -> dict:
    """Requests/s of one real engine replica when every request of ``rows`` is queued at once."""
    from mixfleet.routing.serve.torch_engine import TorchEngine

    rep = fleet.replicas[0]

    async def burst():
        eng = TorchEngine("capacity", cfg, kv_tokens=rep.kv_tokens, max_batch=rep.max_batch,
                          max_batched_tokens=fleet.config.max_batched_tokens, device=device, threads=threads,
                          max_waiting=len(rows) + 1)
        try:
            async def one(r):
                async for _ in eng.generate(r.prompt, r.output, [65 + (k % 26) for k in range(r.prompt)]):
                    pass

            await asyncio.gather(*(one(r) for r in rows[:4]))  # warm-up
            t0 = time.perf_counter()
            await asyncio.gather(*(one(r) for r in rows))
            return time.perf_counter() - t0
        finally:
            eng.close()

    span = asyncio.run(burst())
    return {"requests": len(rows), "makespan_s": span, "req_s_per_replica": len(rows) / span}


def simulate(fleet, rows, policy: str, slowdown: float = 1.0, speed: float = 1.0) -> dict:
    """The simulator on ``rows``; with ``slowdown`` != 1 the replicas slow linearly from their profile to
    ``slowdown`` x it over the trace (the host's measured drift, as the simulator's speed changes); with
    ``speed`` != 1 every step takes ``speed`` x the profile's time from the start."""
    from mixfleet.routing.policies import make_policy
    from mixfleet.routing.simulator import Simulation, SpeedChange

    span, steps = rows[-1].arrival_s, 20
    faults = [SpeedChange(span * j / steps, r.replica_id, 1.0 / (speed * (1.0 + (slowdown - 1.0) * j / steps)))
              for j in range(1, steps + 1) for r in fleet.replicas] if slowdown != 1.0 else []
    if speed != 1.0:
        faults = [SpeedChange(0.0, r.replica_id, 1.0 / speed) for r in fleet.replicas] + faults
    res = Simulation(fleet, make_policy(policy, fleet), rows, cap_rule="oracle", chunked=True,
                     reserve="prompt", faults=faults).run()
    m = res.metrics
    per = {int(k): {"ttft": float(t), "e2e": float(e), "replica": fleet.replicas[i].replica_id}
           for k, t, e, i in zip(m.request, m.ttft, m.e2e, m.replica, strict=True)}
    return {**_summary(m.ttft, m.e2e), "iterations": sum(res.extra["iterations"]),
            "busy_s": sum(res.extra["busy_s"]), "per_request": per}


def replay_iterations(points: list[dict], coef: dict, sim: dict, waits: list[dict] = ()) -> dict:
    """The replay's own iterations, timed inside the real replica, against the profile that simulated it:
    how much longer they took than the fit predicts for the same iterations (the engine's speed and the
    fit's error), split into decode-only iterations and those with prompt chunks; and how many there were
    against the simulator's count (the batching: the same requests in more or fewer iterations); and the
    waits in the replica where the engine had sequences and ran no iteration (``waits``, one per replica,
    from :func:`mixfleet.routing.iterations.stalls`), which the simulator does not have."""
    from mixfleet.routing import profiler

    pred = profiler.predict_ms(coef, points)
    out = {"timed": len(points), "simulated_iterations": sim["iterations"], "simulated_busy_s": sim["busy_s"],
           "measured_s": sum(p["time_s"] for p in points), "predicted_s": sum(pred) / 1e3,
           "stalls": {"count": sum(w.get("count", 0) for w in waits), "seconds": sum(w.get("seconds", 0.0) for w in waits),
                      "longest_s": max((w.get("longest_s", 0.0) for w in waits), default=0.0),
                      "at_s": [w.get("at_s", []) for w in waits]}}
    for name, keep in (("all", lambda p: True), ("decode_only", lambda p: p["sq"] == 0),
                       ("with_prompt_chunks", lambda p: p["sq"] > 0)):
        pairs = [(p, pr) for p, pr in zip(points, pred, strict=True) if keep(p)]
        if pairs:
            out[name] = {"iterations": len(pairs),
                         "measured_over_predicted": sum(p["time_s"] for p, _ in pairs) * 1e3 / sum(pr for _, pr in pairs),
                         "mean_sequences": float(np.mean([p["sequences"] for p, _ in pairs])),
                         "mean_keys": float(np.mean([p["keys"] for p, _ in pairs]))}
    return out


def loop_split(points: list[dict]) -> dict | None:
    """Decode-only iterations of ``points`` (those with ``forward_s``): how many, their mean sequences and
    keys, and their mean time (ms) split into the forward pass and the generation loop's Python around it."""
    dec = [p for p in points if p.get("sq") == 0 and p["kind"] == "step" and "forward_s" in p]
    if not dec:
        return None
    return {"iterations": len(dec), "mean_sequences": float(np.mean([p["sequences"] for p in dec])),
            "mean_keys": float(np.mean([p["keys"] for p in dec])),
            "mean_ms": float(np.mean([p["time_s"] for p in dec])) * 1e3,
            "forward_ms": float(np.mean([p["forward_s"] for p in dec])) * 1e3,
            "loop_ms": float(np.mean([p["time_s"] - p["forward_s"] for p in dec])) * 1e3}


def live_capacity(base: str, model: str, rows, timeout_s: float) -> dict:
    """Requests/s of the deployed application when every request of ``rows`` arrives at once (streamed
    through the proxy and the ingress, as the replay is): the capacity of what is replayed."""
    from mixfleet.routing.traces import TraceRow

    res = asyncio.run(replay(base, model, [TraceRow(0.0, r.prompt, r.output) for r in rows], timeout_s))
    done = [v["e2e"] for v in res["per_request"].values() if v.get("e2e") is not None]
    span = max(done) if done else float("nan")
    return {"requests": len(rows), "makespan_s": span, "req_s": len(rows) / span, "failed": len(res["failed"])}


def idle_transport(base: str, model: str, rows) -> dict:
    """Client-seen minus engine-seen TTFT and E2E of requests sent one at a time to an idle fleet (medians):
    the fixed cost of the HTTP proxy, the ingress and the Ray hops, which the simulator does not model."""
    from mixfleet.routing.traces import TraceRow

    ttft, e2e = [], []
    for r in rows:
        per = asyncio.run(replay(base, model, [TraceRow(0.0, r.prompt, r.output)], 120))["per_request"].get(0)
        if per and per["engine_e2e"] is not None:
            ttft.append(per["ttft"] - per["engine_ttft"])
            e2e.append(per["e2e"] - per["engine_e2e"])
    return {"ttft_s": _pct(ttft, 50), "e2e_s": _pct(e2e, 50), "probes": len(e2e)}


def replica_peak_rss_mib() -> dict[str, float]:
    """Peak resident memory (VmHWM) of each real-engine Serve replica process on this host, in MiB."""
    out = {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "ServeReplica:" in cmd and ":engine-" in cmd:
                hwm = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("VmHWM"))
                out[cmd.split("ServeReplica:", 1)[1].split()[0]] = int(hwm.split()[1]) / 1024
        except (OSError, StopIteration, ValueError):
            continue
    return out


def host_drift(before: dict, after: dict) -> float:
    """How much slower the same probe ran after a replay than before it (median over the probe's points)."""
    return float(np.median([a["time_s"] / b["time_s"] for a, b in zip(after["points"], before["points"], strict=True)]))


def with_transport(sim: dict, transport: dict) -> dict:
    """Simulated latencies plus the idle transport cost (what a client of the simulated fleet would see)."""
    out = dict(sim)
    for k in KEYS:
        out[k] = sim[k] + (transport["ttft_s"] if "ttft" in k else transport["e2e_s"])
    return out


def decompose(sim: dict, live: dict, fit_error: float) -> dict:
    """Where real and simulated latencies part (mirrors routing_live.diagnose)."""
    common = [k for k in live if k in sim and live[k]["engine_e2e"] is not None]
    d = {"requests_compared": len(common), "profile_fit_mean_abs_rel_error": fit_error}
    for name, xs in (("transport_e2e_s", [live[k]["e2e"] - live[k]["engine_e2e"] for k in common]),
                     ("transport_ttft_s", [live[k]["ttft"] - live[k]["engine_ttft"] for k in common]),
                     ("engine_minus_sim_e2e_s", [live[k]["engine_e2e"] - sim[k]["e2e"] for k in common]),
                     ("engine_minus_sim_ttft_s", [live[k]["engine_ttft"] - sim[k]["ttft"] for k in common])):
        d[name] = {"p50": _pct(xs, 50), "p99": _pct(xs, 99)}
    eng = _summary([live[k]["engine_ttft"] for k in common], [live[k]["engine_e2e"] for k in common])
    d["engine_side"] = eng
    d["engine_over_sim"] = {k: eng[k] / sim_k for k in KEYS if (sim_k := _summary(
        [sim[j]["ttft"] for j in common], [sim[j]["e2e"] for j in common])[k]) > 0}
    for part in ("to_engine", "engine_late", "to_ingress", "to_client"):
        xs = [live[k][part] for k in common if part in live[k]]
        if xs:
            d.setdefault("transport_parts_s", {})[part] = {"p50": _pct(xs, 50), "p99": _pct(xs, 99)}
    d["same_replica_fraction"] = sum(live[k]["replica"] == sim[k]["replica"] for k in common) / max(1, len(common))
    return d


def scatter(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixfleet.platform.output import save_figure

    fig, axes = plt.subplots(len(runs), 2, figsize=(9, 4.2 * len(runs)), squeeze=False)
    for row, run in zip(axes, runs, strict=True):
        sim, live = run["sim_per_request"], run["live_per_request"]
        ks = [k for k in live if k in sim]
        for ax, key in zip(row, ("ttft", "e2e"), strict=True):
            x, y = [sim[k][key] for k in ks], [live[k][key] for k in ks]
            hi = max(max(x, default=1), max(y, default=1)) * 1.05
            ax.plot([0, hi], [0, hi], color="grey", lw=1, ls="--", label="real = sim")
            ax.scatter(x, y, s=10, alpha=0.6)
            ax.set_xlabel(f"simulated {key.upper()} (s)")
            ax.set_ylabel(f"real {key.upper()} (s)")
            ax.set_title(f"{run['load']:.0%} of capacity: {key.upper()} per request")
            ax.legend(loc="upper left")
    fig.suptitle(f"Simulator (measured profile) vs real engine ({NOTE})")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def headline(out: dict) -> str:
    """One line for the README's glance table."""
    ratios = [run["real_over_sim"][k] for run in out["runs"] for k in KEYS]
    ok = sum(abs(run["real_over_sim"][k] - 1) <= run["bar"] for run in out["runs"] for k in KEYS)
    again = [run for run in out["runs"] if run.get("repeat")]
    floor = (f"; the real engine replayed again against itself: {sum(_within(r['repeat']['over_first'], r['bar']) for r in again)}"
             f" of {4 * len(again)}" if again else "")
    return (f"real / simulated P50 and P99 TTFT and E2E: {min(ratios):.2f}-{max(ratios):.2f}x, {ok} of {len(ratios)} "
            f"within the bars{floor} ({NOTE}, {out['device']})")


def _binding(b: dict | None) -> str:
    if not b or not b.get("replicas"):
        return "Cores shared by the replicas and everything else. "
    return (f"Replicas bound to CPU {b['replicas']} (one core each; the profile and the capacity burst measured "
            f"there), everything else (driver, load generator, Ray, Serve proxy, ingress) to CPU "
            f"{','.join(map(str, b['everything_else']))}. ")


def _cores(c: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(c.items(), key=lambda kv: (kv[0] == "host", -kv[1])))


def _live_capacity(cap: dict) -> str:
    live = cap.get("live")
    if not live:
        return "; the loads are fractions of it"
    cores = f"; cores in use meanwhile: {_cores(live['cores'])}" if live.get("cores") else ""
    return (f", {live['req_s']:.2f} req/s live through the deployed application (the same burst streamed through "
            f"the proxy and the ingress: {live['makespan_s']:.1f} s{cores}); the loads are fractions of the "
            f"{cap.get('rate_from', 'offline')} capacity")


def _within(ratios: dict, bar: float) -> int:
    return sum(abs(r - 1) <= bar for r in ratios.values())


def markdown(out: dict) -> str:
    """The results tables, rendered from the JSON this script writes."""
    per_load = [r["idle_transport"] for r in out["runs"] if "idle_transport" in r]
    trs = per_load if len(per_load) == len(out["runs"]) and per_load else [out["idle_transport"]]
    when = "just before each replay" if trs is per_load else "once, after the warm-up"
    ttft, e2e = (" / +".join(f"{t[k] * 1e3:.0f}" for t in trs) for k in ("ttft_s", "e2e_s"))
    lines = [f"# Simulator vs real engine ({NOTE})", "",
             f"{out['fleet']}; model {out['model']} on {out['device']} ({out['threads']} torch thread(s) per replica). "
             + _binding(out.get("cpu_bind")) +
             f"Azure conv first {out['requests']} requests, lengths x{out['scale']:g}; measured capacity "
             f"{out['capacity']['req_s_per_replica']:.2f} req/s per replica offline (a burst of "
             f"{out['capacity']['requests']}: {out['capacity']['makespan_s']:.1f} s real, "
             f"{out['capacity']['simulated_makespan_s']:.1f} s simulated with the profile measured a minute before)"
             + _live_capacity(out['capacity']) + ". "
             f"Profile fit: mean |rel. error| {out['profile']['fit_error']['mean']:.1%} over "
             f"{out['profile']['points']} points (grid, burst and trickle iterations). Simulator figures "
             f"include the idle transport (Serve proxy, ingress, Ray hops; requests one at a time) measured {when}: TTFT +{ttft} ms, "
             f"E2E +{e2e} ms; `engine only` is the simulator alone. `served profile`: the simulator with a "
             "profile whose burst and trickle were sent through the deployed application and timed inside the "
             "replica just before the offline profile (the grid's points still offline).", "",
             "| load | req/s | metric | simulator s | real s | real / sim | bar | | real / sim (engine only) "
             "| real / sim, served profile | | real again / real | |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in out["runs"]:
        served = run.get("served_profile")
        for k in KEYS:
            r = run["real_over_sim"][k]
            ok = "ok" if abs(r - 1) <= run["bar"] else "MISSED"
            sr = served["real_over_sim"][k] if served else None
            s_txt = "| | |" if sr is None else f"| {sr:.3f} | {'ok' if abs(sr - 1) <= run['bar'] else 'MISSED'} |"
            again = (run.get("repeat") or {}).get("over_first", {}).get(k)
            s_txt += " | |" if again is None else f" {again:.3f} | {'ok' if abs(again - 1) <= run['bar'] else 'MISSED'} |"
            lines.append(f"| {run['load']:.0%} | {run['rate_req_s']:.2f} | {k} | {run['simulator'][k]:.3f} | "
                         f"{run['live'][k]:.3f} | {r:.3f} | ±{run['bar']:.0%} | {ok} | "
                         f"{run['real_over_sim_engine_only'][k]:.3f} " + s_txt)
    for run in out["runs"]:
        d = run["decomposition"]
        eos = ", ".join(f"{k} {v:.3f}" for k, v in d["engine_over_sim"].items())
        lines += ["", f"Gap at {run['load']:.0%} (p50 / p99 s): transport e2e "
                  f"{d['transport_e2e_s']['p50']:.3f} / {d['transport_e2e_s']['p99']:.3f}, transport TTFT "
                  f"{d['transport_ttft_s']['p50']:.3f} / {d['transport_ttft_s']['p99']:.3f}; engine minus simulator "
                  f"e2e {d['engine_minus_sim_e2e_s']['p50']:.3f} / {d['engine_minus_sim_e2e_s']['p99']:.3f}, TTFT "
                  f"{d['engine_minus_sim_ttft_s']['p50']:.3f} / {d['engine_minus_sim_ttft_s']['p99']:.3f}. "
                  f"Engine-side / simulator: {eos}. Failed requests: {len(run['live']['failed'])}. "
                  f"Profile measured just before: fit error {run['profile']['fit_error']:.1%}"
                  + (f" (served profile: {run['served_profile']['fit_error']:.1%} over "
                     f"{run['served_profile']['points']} served iterations)" if run.get("served_profile") else "")
                  + "; the host ran "
                  f"{run['host_slowdown_during_replay']:.2f}x slower after the replay than before it; real / "
                  "simulated with that drift (linear, as the simulator's speed changes): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in run["real_over_sim_with_drift"].items()) + "."]
        if run.get("cores_during_replay"):
            lines[-1] += f" Cores in use during the replay (of {os.cpu_count()}): " + _cores(run["cores_during_replay"]) + "."
        it = run.get("replay_iterations")
        if it:
            parts = "; ".join(f"{name.replace('_', ' ')}: {v['iterations']} at {v['measured_over_predicted']:.2f}x (mean "
                              f"{v['mean_sequences']:.1f} sequences, {v['mean_keys']:.0f} keys)"
                              for name, v in it.items() if name in ("decode_only", "with_prompt_chunks"))
            lines[-1] += (f" The replay's own iterations, timed in the replica ({it['timed']} the engine went straight on "
                          f"from): {it['measured_s']:.1f} s against {it['predicted_s']:.1f} s that the profile "
                          f"predicts for the same iterations ({it['all']['measured_over_predicted']:.2f}x; {parts}); "
                          f"the simulator ran {it['simulated_iterations']} iterations, busy {it['simulated_busy_s']:.1f} s.")
            st = it.get("stalls")
            if st:
                lines[-1] += (f" Waits with sequences in the engine and no iteration running (over 10 ms): "
                              f"{st['count']}, {st['seconds']:.2f} s in all, the longest {st['longest_s'] * 1e3:.0f} ms.")
        if "real_over_sim_at_live_speed" in run:
            lines[-1] += (f" The live burst ran {run['live_burst_over_simulated']:.2f}x as long as simulated with this "
                          "profile; real / simulated with every step that much slower: "
                          + ", ".join(f"{k} {v:.3f}" for k, v in run["real_over_sim_at_live_speed"].items()) + ".")
    repeats = [run for run in out["runs"] if run.get("repeat")]
    if repeats:
        lines += ["", "`real again`: each load's schedule replayed live a second time straight after the first (same "
                  "requests, same arrivals, same replica): the real engine against itself, the noise floor under the "
                  "bars on this host. " + " ".join(
                      f"At {run['load']:.0%} it meets {_within(run['repeat']['over_first'], run['bar'])} of 4 bars "
                      f"against the first replay (host {run['repeat']['host_slowdown_during_replay']:.2f}x slower after "
                      f"it than before); the simulator meets {_within(run['real_over_sim'], run['bar'])} of 4 against "
                      f"the first replay and {_within(run['repeat']['over_sim'], run['bar'])}"
                      " of 4 against the second." for run in repeats)]
    rss = out.get("replica_peak_rss_mib") or {}
    if rss:
        lines += ["", "Peak resident memory of each real-engine replica process (VmHWM): "
                  + ", ".join(f"{k} {v:.0f} MiB" for k, v in sorted(rss.items())) + "."]
    lines += ["", f"Per-request scatter: `{out['plot']}`. Machine: {out['machine']}.", "",
              f"Reproduce: `{out['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=320,
                    help="trace rows per load (the P99 of 320 is the 4th-slowest request)")
    ap.add_argument("--scale", type=float, default=0.25, help="trace prompt/output length factor")
    ap.add_argument("--load", type=float, action="append", default=[], help="fraction of measured capacity")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--policy", default="least_work_left")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per replica (CPU)")
    ap.add_argument("--quick-profile", action="store_true", help="a small profiling grid")
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    ap.add_argument("--flush", type=float, default=0.5, help="token-chunk interval of the replicas (s); TTFT and "
                    "the last token are exact regardless")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--rate-from", choices=("live", "offline"), default="live",
                    help="the capacity the loads are fractions of: the live deployment's burst or the offline engine's")
    ap.add_argument("--repeat", action=argparse.BooleanOptionalAction, default=True,
                    help="replay each load live a second time straight after the first: how far the real engine "
                         "moves from itself on this host (the bars' noise floor)")
    ap.add_argument("--bind", choices=("auto", "on", "off"), default="off",
                    help="bind each replica to a core of its own and the rest to the others (see module doc)")
    args = ap.parse_args(argv)
    loads = args.load or [0.5, 0.85]

    from mixfleet.platform.bootstrap import connect, free_port, shutdown
    from mixfleet.platform.config import parse_model
    from mixfleet.platform.cpus import cores_used, cpu_seconds_by_role
    from mixfleet.platform.output import atomic_write_text
    from mixfleet.platform.serving import delete_app, start_serve
    from mixfleet.routing import profiler
    from mixfleet.routing.fleet import fleet_from_dict
    from mixfleet.routing.profiles import ProfileBook
    from mixfleet.routing.serve import APP_NAME, ServeOptions, deploy
    from mixfleet.routing.serve.app import engine_handle
    from mixfleet.routing.torch_model import model_config
    from mixfleet.routing.traces import TraceRow

    cfg = model_config("tiny-llama")
    gpu = "CUDA" if args.device == "cuda" else "CPU"
    spec = {"model": cfg.name, "pools": [{"gpu": gpu, "count": args.replicas, "engine": "torch"}],
            "max_batch": 32, "max_batched_tokens": 512}
    grid = profiler.QUICK if args.quick_profile else profiler.Grid(repeats=2)

    bind, rest = cpu_plan(args.bind, args.device, args.replicas)
    engine_cpus = [int(bind.split("|")[0])] if bind else None

    def measure(g):
        with on_cpus(engine_cpus):
            return profiler.measure(cfg, device=args.device, threads=args.threads, kv_tokens=16384,
                                max_batch=spec["max_batch"], max_batched_tokens=spec["max_batched_tokens"], grid=g)

    def profiled():
        """Profile the engine now: the measured points, their fit and the fleet the simulator runs."""
        m = measure(grid)
        c = profiler.fit(m["points"])
        b = parse_model(profiler.profile_book(m, c, gpu=gpu), ProfileBook, source="measured profile")
        return m, c, b, fleet_from_dict(spec, b)

    t0 = time.perf_counter()
    measured, coef, book, fleet = profiled()
    print(f"profiled in {time.perf_counter() - t0:.0f} s; fit mean error {coef['mean_abs_rel_error']:.1%}",
          file=sys.stderr)
    base_rows = slice_rows(args.requests, args.scale, cfg.max_context)
    with on_cpus(engine_cpus):
        cap = measure_capacity(cfg, fleet, base_rows, args.device, args.threads)
    # the same burst in the simulator, with the profile measured a minute before: the model alone, offline
    sim_burst = simulate(fleet, [TraceRow(0.0, r.prompt, r.output) for r in base_rows], args.policy)
    cap["simulated_makespan_s"] = max(v["e2e"] for v in sim_burst["per_request"].values())
    first = {"entry": book.measured[-1].model_dump(), "points": len(measured["points"]),
             "fit_error": {"mean": coef["mean_abs_rel_error"], "max": coef["max_abs_rel_error"]},
             "measured": measured["points"]}
    print(f"capacity {cap['req_s_per_replica']:.2f} req/s per replica; the burst took {cap['makespan_s']:.1f} s, "
          f"simulated {cap['simulated_makespan_s']:.1f} s", file=sys.stderr)
    runs = []
    if rest is not None:  # Ray's processes inherit this binding; the replicas bind themselves (cpu_bind)
        from mixfleet.platform.cpus import bind_process

        bind_process(rest)
    connect(num_cpus=2)
    try:
        port = free_port()
        start_serve(http_port=port)
        deploy(fleet, ServeOptions(policy=args.policy, device=args.device, torch_threads=args.threads, cpu_bind=bind,
                                   max_waiting=10_000, max_outstanding=100_000, flush_s=args.flush,
                                   first_chunk_timeout_s=600))
        base = f"http://127.0.0.1:{port}"
        engines = [engine_handle(r.replica_id) for r in fleet.replicas]
        asyncio.run(replay(base, fleet.model, at_rate(base_rows[:6], 2.0), 120))  # warm-up
        transport = idle_transport(base, fleet.model, base_rows[:8])
        c0, w0 = cpu_seconds_by_role(me=DRIVER), time.perf_counter()
        cap["live"] = live_capacity(base, fleet.model, base_rows, args.timeout)
        cap["live"]["cores"] = cores_used(c0, cpu_seconds_by_role(me=DRIVER), time.perf_counter() - w0)
        cap["rate_from"] = args.rate_from
        per_replica = (cap["live"]["req_s"] / args.replicas if args.rate_from == "live" else cap["req_s_per_replica"])
        print(f"live capacity {cap['live']['req_s']:.2f} req/s (the burst took {cap['live']['makespan_s']:.1f} s); "
              f"loads are fractions of the {args.rate_from} capacity", file=sys.stderr)
        burst_rows = [TraceRow(0.0, r.prompt, r.output) for r in base_rows]
        for load in loads:
            # the same phases through the deployed application, timed inside the replica: the served profile
            served = served_profile_points(base, fleet.model, [r.replica_id for r in fleet.replicas],
                                           spec["max_batched_tokens"], cfg.max_context, args.timeout)
            # this host's speed moves within minutes: each load is simulated with a profile measured just before,
            # the last thing before the probe and the replay (its trickle ends about 20 s before the replay starts)
            measured, coef, book, fleet = profiled()
            s_measured = dict(measured, points=[p for p in measured["points"] if p["kind"] != "step"] + served)
            s_coef = profiler.fit(s_measured["points"])
            s_book = parse_model(profiler.profile_book(s_measured, s_coef, gpu=gpu), ProfileBook,
                                 source="served profile")
            s_fleet = fleet_from_dict(spec, s_book)
            before = measure(_probe_grid())
            transport = idle_transport(base, fleet.model, base_rows[:8])  # also the host's now, not the start's
            rate = load * per_replica * args.replicas
            rows = at_rate(base_rows, rate)
            raw = simulate(fleet, rows, args.policy)
            sim_per = raw.pop("per_request")
            sim = with_transport(raw, transport)
            c0, w0 = cpu_seconds_by_role(me=DRIVER), time.perf_counter()
            timing = [h for h in engines if h.time_iterations.remote(True).result()]  # the replay's iterations
            try:
                live = asyncio.run(replay(base, fleet.model, rows, args.timeout + rows[-1].arrival_s))
            finally:
                its = [p for h in timing for p in h.time_iterations.remote(False, "replay").result()]
                waits = [h.iteration_stalls.remote().result() for h in timing]
            cores = cores_used(c0, cpu_seconds_by_role(me=DRIVER), time.perf_counter() - w0)
            live_per = live.pop("per_request")
            after = measure(_probe_grid())
            drift = host_drift(before, after)
            repeat = None
            if args.repeat:  # the referee against itself: the same schedule, live again, straight after
                again = asyncio.run(replay(base, fleet.model, rows, args.timeout + rows[-1].arrival_s))
                again.pop("per_request")
                repeat = {"live": again, "host_slowdown_during_replay": host_drift(after, measure(_probe_grid())),
                          "over_first": {k: again[k] / live[k] for k in KEYS},
                          "over_sim": {k: again[k] / sim[k] for k in KEYS}}
            s_raw = simulate(s_fleet, rows, args.policy)
            s_raw.pop("per_request")
            s_sim = with_transport(s_raw, transport)
            ratio = {k: live[k] / sim[k] for k in KEYS}
            drifted = with_transport({k: v for k, v in simulate(fleet, rows, args.policy, drift).items()
                                      if k != "per_request"}, transport)
            # the live burst against this load's profile: how much slower the served engine ran than profiled
            live_speed = cap["live"]["makespan_s"] / max(v["e2e"] for v in simulate(
                fleet, burst_rows, args.policy)["per_request"].values())
            at_live = with_transport({k: v for k, v in simulate(fleet, rows, args.policy, speed=live_speed).items()
                                      if k != "per_request"}, transport)
            runs.append({"load": load, "rate_req_s": rate, "bar": bar_for(load), "simulator": sim,
                         "simulator_engine_only": raw, "live": live, "real_over_sim": ratio,
                         "real_over_sim_engine_only": {k: live[k] / raw[k] for k in KEYS},
                         "within_bar": all(abs(ratio[k] - 1) <= bar_for(load) for k in KEYS) and not live["failed"],
                         "profile": {"entry": book.measured[-1].model_dump(),
                                     "fit_error": coef["mean_abs_rel_error"]},
                         "host_slowdown_during_replay": drift, "idle_transport": transport,
                         "served_profile": {"entry": s_book.measured[-1].model_dump(), "points": len(served),
                                            "fit_error": s_coef["mean_abs_rel_error"], "simulator": s_sim,
                                            "real_over_sim": {k: live[k] / s_sim[k] for k in KEYS}},
                         "real_over_sim_with_drift": {k: live[k] / drifted[k] for k in KEYS},
                         "live_burst_over_simulated": live_speed, "cores_during_replay": cores,
                         "real_over_sim_at_live_speed": {k: live[k] / at_live[k] for k in KEYS},
                         "decomposition": decompose(sim_per, live_per, coef["mean_abs_rel_error"]),
                         "replay_iterations": replay_iterations(its, coef, raw, waits) if its else None,
                         "decode_steps": {"offline_trickle": loop_split([p for p in measured["points"]
                                                                         if p.get("phase") == "trickle"]),
                                          "served_trickle": loop_split(served), "replay": loop_split(its)},
                         "repeat": repeat, "sim_per_request": sim_per, "live_per_request": live_per})
            print(f"load {load:.0%} ({rate:.2f} req/s): real/sim " + ", ".join(f"{k} {v:.3f}" for k, v in ratio.items())
                  + f"; host {drift:.2f}x slower after the replay than before", file=sys.stderr)
        rss = replica_peak_rss_mib()
        delete_app(APP_NAME)
    finally:
        shutdown()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    scatter(runs, out_dir / "routing_fidelity.png")
    cmd = (f"python benchmarks/routing_fidelity.py --requests {args.requests} --scale {args.scale:g} "
           + " ".join(f"--load {x:g}" for x in loads) + f" --replicas {args.replicas} --device {args.device} "
           f"--flush {args.flush:g} --bind {args.bind} --rate-from {args.rate_from}"
           + ("" if args.repeat else " --no-repeat"))

    out = {"benchmark": "routing_fidelity", "note": NOTE, "emulated": False, "fleet": fleet.describe(),
           "model": cfg.name, "device": measured["device"], "threads": args.threads, "requests": len(base_rows),
           "cpu_bind": {"replicas": bind, "everything_else": rest},
           "scale": args.scale, "policy": args.policy, "capacity": cap, "idle_transport": transport,
           "profile": first,
           "bars": "P50 and P99 TTFT and E2E within 10% at 50% load, 20% at 85%",
           "runs": [{k: v for k, v in r.items() if not k.endswith("per_request")} for r in runs],
           "per_request": {f"{r['load']:g}": {"sim": r["sim_per_request"], "real": r["live_per_request"]}
                           for r in runs},
           "replica_peak_rss_mib": rss,
           "plot": "benchmarks/results/routing_fidelity.png",
           "machine": f"{os.cpu_count()} CPU cores (1-minute load average "
                      f"{os.getloadavg()[0]:.1f} at the end)",
           "command": cmd}
    atomic_write_text(out_dir / "routing_fidelity.json", json.dumps(out, indent=1) + "\n")
    md = markdown(out)
    atomic_write_text(out_dir / "routing_fidelity.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
