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
