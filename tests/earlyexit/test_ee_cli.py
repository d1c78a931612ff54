"""The earlyexit CLI as a user runs it: train, calibrate, bench (--json, --plot).

Commands run through the real entry point in this process (``cli_here``),
so torch is imported once; small ``--limit``/``--epochs`` keep them quick.
"""

import json


def test_bench_json_schema_savings_and_plot(cli_here, tmp_path):
    png = tmp_path / "tradeoff.png"
    r = cli_here("earlyexit", "bench", "--json", "--batch-size", "8", "--limit", "200", "--repeats", "1", "--plot", png)
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert out["batch_size"] == 8
    for key in ("accuracy", "mean_latency_ms", "p99_latency_ms", "flops"):
        assert key in out["full"] and key in out["early_exit"]
    rates = out["early_exit"]["exit_rates"]
    assert len(rates) == 3 and abs(sum(rates) - 1) < 1e-9
    assert out["early_exit"]["flops"] < 0.5 * out["full"]["flops"]
    assert out["full"]["accuracy"] - out["early_exit"]["accuracy"] <= 0.02
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(out["curve"]) >= 5  # one measured point per calibrated operating point


def test_train_then_calibrate_on_digits(cli_here, tmp_path):
    model = tmp_path / "digits.pt"
    r = cli_here("earlyexit", "train", "--dataset", "digits", "--epochs", "1", "--limit", "400", "--out", model,
                 "--json")
    assert r.returncode == 0, r.stderr
    out = r.json()
    assert model.is_file() and out["mode"] == "joint" and out["train_samples"] == 400
    assert set(out["test_accuracy_per_exit"]) == {"layer1", "layer2", "final"}
    curve, recal = tmp_path / "curve.json", tmp_path / "recal.pt"
    r = cli_here("earlyexit", "calibrate", "--model", model, "--criterion", "entropy", "--eps", "0.02",
                 "--curve", curve, "--out", recal, "--json")
    assert r.returncode == 0, r.stderr
    cal = r.json()
    assert cal["criterion"] == {"name": "entropy"} and cal["accuracy"] >= cal["full_accuracy"] - 0.02
    assert [p["eps"] for p in json.loads(curve.read_text())] == [p["eps"] for p in cal["curve"]]
    r = cli_here("earlyexit", "train", "--dataset", "digits", "--epochs", "2", "--limit", "400",
                 "--heads-only", recal, "--out", tmp_path / "heads.pt", "--json")
    assert r.returncode == 0, r.stderr
    assert r.json()["mode"] == "heads"


def test_train_takes_head_options_and_the_saved_model_keeps_them(cli_here, tmp_path):
    """``--head pool_linear:pool=2`` builds 2x2-grid heads; loading the file rebuilds the same heads."""
    from mixfleet.earlyexit.persist import load

    model = tmp_path / "grid.pt"
    r = cli_here("earlyexit", "train", "--dataset", "digits", "--epochs", "1", "--limit", "200",
                 "--head", "pool_linear:pool=2", "--out", model, "--json")
    assert r.returncode == 0, r.stderr
    loaded = load(model)
    assert loaded.head_spec == {"name": "pool_linear", "pool": 2}
    assert loaded.heads["0"][-1].in_features == 8 * 2 * 2  # digits_resnet's layer1: 8 channels
    r = cli_here("earlyexit", "train", "--dataset", "digits", "--head", "pool_linear:pool=big", "--out",
                 tmp_path / "bad.pt")
    assert r.returncode != 0 and "pool=big" in r.error_line and "key=integer" in r.error_line
    assert not (tmp_path / "bad.pt").exists()


def test_bench_sla_refuses_a_run_too_small_to_read_its_bar(cli_here):
    """99.99% cannot be read from a few thousand requests: the command says how many it needs, starts nothing."""
    from mixfleet.earlyexit.serve.slabench import check_requests, requests_needed

    need = requests_needed()
    r = cli_here("earlyexit", "bench-sla", "--requests", "1000", "--json")
    assert r.returncode != 0 and r.stdout == ""
    assert "--requests 1000" in r.error_line and f"at least {need} requests" in r.error_line
    assert check_requests(30000, coarse=False) is None  # the default size is a meaningful run
    assert "COARSE" in check_requests(1000, coarse=True)


def test_the_serving_model_is_heavy_enough_and_upsamples_mnist():
    """The default serving model computes at 64x64 from 28x28 input; an exit after layer1 skips most FLOPs."""
    import torch

    from mixfleet.earlyexit.flops import exit_costs
    from mixfleet.earlyexit.persist import load, serving_model_path

    path = serving_model_path()
    assert path.stat().st_size < 20 * 2**20
    model = load(path)
    assert model.predict(torch.zeros(2, 1, 28, 28)).labels.shape == (2,)
    costs = exit_costs(model)
    assert costs["full"] > 3e8 and costs["exits"][0] < 0.15 * costs["full"]
