"""The routing demo step: the policy table on a slice of the Azure conv trace, and its plot."""

from __future__ import annotations


def test_demo_step_compares_every_policy_and_keeps_the_plot_only_under_out(tmp_path, monkeypatch):
    from mixfleet.demo import DemoContext
    from mixfleet.routing.demo import step
    from mixfleet.routing.policies import POLICIES

    cwd, scratch, keep = tmp_path / "cwd", tmp_path / "scratch", tmp_path / "out"
    cwd.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(cwd)
    out = step(DemoContext(workdir=scratch, json_mode=True, cluster_file="cluster.yaml", out_dir=keep))
    assert out["emulated"] is True and set(out["policies"]) == set(POLICIES)
    p99 = {k: v["p99_e2e_s"] for k, v in out["policies"].items()}
    assert p99["least_work_left"] < p99["pow2"] < p99["round_robin"]  # speed-aware beats speed-blind
    assert all(v >= out["oracle_floor"]["p99_e2e_s"] for v in p99.values())
    assert out["plot"] == str(keep / "routing_compare.png")
    assert (keep / "routing_compare.png").read_bytes()[:4] == b"\x89PNG"
    assert list(cwd.iterdir()) == []  # nothing written where the user happens to stand
