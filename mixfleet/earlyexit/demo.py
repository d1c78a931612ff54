"""Demo step: the early-exit trade-off on MNIST 5k with the committed weights.

Runs the plain backbone and the calibrated early-exit model side by side on
the test split (one torch thread, batch 32 and batch 1) and prints the
table; then the same model labels the test split through Ray Data. No training happens here.
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
    out = {}
    for bs, limit, repeats in ((32, None, 2), (1, 300, 1)):
        out[f"batch_{bs}"] = compare(model, ds.test.x, ds.test.y, batch_size=bs, repeats=repeats, warmup=10,
                                     limit=limit)
    b32, b1 = out["batch_32"], out["batch_1"]
    rows = [(name, f"{100 * b32[name]['accuracy']:.2f}%", b32[name]["mean_latency_ms"], b1[name]["mean_latency_ms"],
             b32[name]["flops"] / 1e6, "/".join(f"{100 * v:.0f}" for v in b32[name].get("exit_rates", [])) or "-")
            for name in ("full", "early_exit")]
    _, report = batch_predict(images_dataset(ds.test.x, ds.test.y), actors=1, batch_size=250)
    out["ray_data"] = report.to_dict()
    if not ctx.json_mode:
        print_table(f"earlyexit: MNIST 5k test split ({b32['samples']} images; {b1['samples']} at batch 1), "
                    "1 torch thread",
                    ["model", "accuracy", "ms/batch 32", "ms/image", "MFLOPs", "exit rates %"], rows)
        ctx.say(f"Ray Data: {report.samples} images, exits "
                f"{'/'.join(f'{100 * v:.1f}' for v in report.exit_rates)}%, "
                f"compute saved {100 * report.compute_saved:.1f}%, accuracy {100 * report.accuracy:.1f}%")
    return out
