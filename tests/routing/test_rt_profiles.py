"""GPU/model profiles and the fleet spec: anchors, fit checks, names, validation."""

from __future__ import annotations

import pytest

from mixfleet.errors import ConfigError, InputError
from mixfleet.routing.fleet import fleet_from_dict, load_fleet
from mixfleet.routing.profiles import load_profiles, run_time, steps_within

# Published 7B fp16 figures:, decode step at batch 1 (ms) / prefill (tok/s)
ANCHORS = {"T4": (56, 2200), "V100-32GB": (20, 5100), "A100-40GB": (11.6, 16000), "A100-80GB": (8.9, 16400),
           "H100": (5.3, 53000)}
TOLERANCE = 0.05  # the calibrated roofline must land within 5% of the published figures


@pytest.mark.parametrize("gpu", sorted(ANCHORS))
def test_isolated_figures_match_the_published_anchors(gpu):
    perf = load_profiles().iteration_model(gpu, "llama-2-7b")
    step_ms, prefill = ANCHORS[gpu]
    assert perf.decode_step(1, 128) * 1e3 == pytest.approx(step_ms, rel=TOLERANCE)
    assert 1024 / perf.prefill_time(1024) == pytest.approx(prefill, rel=TOLERANCE)


def test_a_faster_gpu_is_never_slower_on_the_same_request():
    book = load_profiles()
    order = ["T4", "V100-32GB", "A100-40GB", "A100-80GB", "H100", "H200"]
    for prompt in (1, 50, 700, 3000, 12000):
        for output in (1, 2, 40, 600, 2000):
            lat = [book.iteration_model(g, "llama-3.2-3b").isolated_latency(prompt, output) for g in order]
            for slower, faster in zip(lat, lat[1:], strict=False):
                assert faster[0] <= slower[0] + 1e-12 and faster[1] <= slower[1] + 1e-12, (prompt, output)


def test_closed_form_decode_runs_match_step_by_step_sums():
    perf = load_profiles().iteration_model("A100-80GB", "llama-3.2-3b")
    for batch, ctx0 in ((1, 10), (64, 64 * 900), (200, 200 * 3000)):
        lines = perf.decode_lines(batch, ctx0, batch)
        steps = [perf.decode_step(batch, ctx0 + batch * i) for i in range(300)]
        assert run_time(lines, 300) == pytest.approx(sum(steps), rel=1e-9)
        assert steps_within(lines, 300, sum(steps[:17]) + 1e-12) == 17


def test_a_measured_profile_replaces_the_roofline(tmp_path):
    import yaml

    data = load_profiles().model_dump()
    data["measured"] = [{"gpu": "T4", "model": "llama-3.2-1b", "decode_step_ms": 12.5, "prefill_tok_s": 9000}]
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(data))
    perf = load_profiles(path).iteration_model("T4", "llama-3.2-1b")
    assert perf.decode_step(1, 0) * 1e3 == pytest.approx(12.5, rel=1e-6)


def test_example_fleet_validates_and_fits(repo_root):
    fleet = load_fleet(repo_root / "examples" / "routing" / "fleet.yaml")
    assert [r.gpu for r in fleet.replicas].count("T4") == 8
    assert {r.accelerator for r in fleet.replicas} == {"A100-80G", "V100", "T4"}  # Ray's names
    assert all(r.kv_tokens >= fleet.book.models[fleet.model].max_context for r in fleet.replicas)
    packaged = repo_root / "mixfleet" / "routing" / "fleet.example.yaml"
    assert packaged.read_text() == (repo_root / "examples" / "routing" / "fleet.yaml").read_text()


def test_a_model_that_does_not_fit_is_refused_naming_where_it_fits():
    with pytest.raises(ConfigError) as err:
        fleet_from_dict({"model": "llama-2-7b", "pools": [{"gpu": "T4", "count": 2}]})
    msg = str(err.value)
    assert "llama-2-7b" in msg and "'T4'" in msg and "A100-80GB" in msg


def test_unknown_gpu_and_model_names_list_the_valid_ones():
    with pytest.raises(InputError, match=r"unknown GPU type 'A100-80'.*did you mean 'A100-80GB'.*valid GPU types: "):
        fleet_from_dict({"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80", "count": 1}]})
    with pytest.raises(InputError, match=r"unknown model 'llama-3b'.*llama-3.2-3b"):
        fleet_from_dict({"model": "llama-3b", "pools": [{"gpu": "T4", "count": 1}]})


def test_unknown_keys_in_fleet_yaml_are_rejected_with_a_suggestion(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("model: llama-3.2-3b\npools:\n  - gpu: T4\n    cout: 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'pools.0.cout'.*did you mean 'count'"):
        load_fleet(path)
