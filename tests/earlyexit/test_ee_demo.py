"""The earlyexit demo step: the trade-off table from the committed weights, and the Ray Data pass."""


def test_demo_step_reports_savings_at_both_batch_sizes(ray_local, tmp_path):
    from mixfleet.demo import DemoContext
    from mixfleet.earlyexit.demo import step

    out = step(DemoContext(workdir=tmp_path, json_mode=True, cluster_file="cluster.yaml"))
    for key in ("batch_32", "batch_1"):
        r = out[key]
        assert r["early_exit"]["flops"] < 0.5 * r["full"]["flops"]
        assert r["full"]["accuracy"] >= 0.97
    assert out["ray_data"]["samples"] == 1000 and out["ray_data"]["compute_saved"] > 0.5


def test_serve_demo_step_runs_a_burst_per_condition(ray_local, tmp_path):
    """The serving demo step: one replica, full / static / adaptive through 1x and 3x of its capacity."""
    from mixfleet.demo import DemoContext
    from mixfleet.earlyexit.serve.demo import APP, step
    from mixfleet.platform.bootstrap import free_port
    from mixfleet.platform.serving import serve_ports, start_serve

    if serve_ports() is None:  # the Serve the other Serve tests reuse (as in `mixfleet demo` after routing_live)
        start_serve(http_port=free_port(), grpc_port=free_port())
    before = serve_ports()
    out = step(DemoContext(workdir=tmp_path, json_mode=True, cluster_file="cluster.yaml"))
    assert set(out["conditions"]) == {"full", "static", "adaptive"} and out["nominal_rate_rps"] > 0
    assert out["emulated_device"]["full_ms_per_sample"] > 0  # the output says the device is emulated
    for r in out["conditions"].values():
        assert r["requests"] > 2 * out["nominal_rate_rps"]  # 1.5 s at 1x + 1.5 s at 3x, open loop
        assert r["accuracy"] is None or r["accuracy"] >= 0.9
    full, static, adaptive = (out["conditions"][c] for c in ("full", "static", "adaptive"))
    assert full["exit_counts"][:2] == [0, 0] and full["exit_counts"][2] > 0  # full: every answer from the last exit
    assert static["exit_counts"][0] + static["exit_counts"][1] > 0  # calibrated thresholds: early answers
    assert sum(adaptive["exit_counts"]) > 0
    from ray import serve

    assert APP not in serve.status().applications  # cleaned up
    assert serve_ports() == before  # a Serve it found stays as it was
