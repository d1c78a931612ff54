"""Demo step: the early-exit trade-off on MNIST 5k with the committed weights.

Runs the plain backbone and the calibrated early-exit model side by side on
the test split (one torch thread, batch 32 and batch 1) and prints the
table; then the same model labels the test split through Ray Data on an
actor pool. No training happens here.
"""

from __future__ import annotations


def step(ctx) -> dict:
    import torch

    from mixfleet.earlyexit.batch import batch_predict, images_dataset
    from mixfleet.earlyexit.bench import compare
    from mixfleet.earlyexit.data import load_dataset
    from mixfleet.earlyexit.persist import default_model_path, load
    from mixfleet.platform.output import print_table

    torch.set_num_threads(1)
    model = load(default_model_path())
    ds = load_dataset("mnist", seed=0)
    rows, out = [], {}
    for bs, limit, repeats in ((32, None, 2), (1, 300, 1)):
        r = compare(model, ds.test.x, ds.test.y, batch_size=bs, repeats=repeats, warmup=10, limit=limit)
        out[f"batch_{bs}"] = r
        for name in ("full", "early_exit"):
            m = r[name]
            rows.append((bs, name, r["samples"], f"{100 * m['accuracy']:.2f}%", m["mean_latency_ms"],
                         m["flops"] / 1e6, ", ".join(f"{100 * v:.0f}%" for v in m.get("exit_rates", [])) or "-"))
    _, report = batch_predict(images_dataset(ds.test.x, ds.test.y), actors=1, batch_size=250)
    out["ray_data"] = report.to_dict()
    if not ctx.json_mode:
        print_table("early exit on MNIST 5k test split (1 torch thread)",
                    ["batch", "model", "samples", "accuracy", "mean ms", "MFLOPs", "exit rates"], rows)
        ctx.say(f"Ray Data actor pool: {report.samples} images, exit rates "
                f"{', '.join(f'{100 * v:.1f}%' for v in report.exit_rates)}, "
                f"compute saved {100 * report.compute_saved:.1f}%, accuracy {100 * report.accuracy:.2f}%")
    return out
