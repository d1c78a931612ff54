"""Every file in examples/earlyexit runs (in-process, sharing the session's Ray) and does what it says."""

import importlib.util

EXAMPLES = ["quickstart.py", "transformer_exits.py", "batch_inference.py"]


def _run(repo_root, name):
    spec = importlib.util.spec_from_file_location(f"ee_example_run_{name[:-3]}",
                                                  repo_root / "examples" / "earlyexit" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main()


def test_every_example_is_listed(repo_root):
    files = sorted(p.name for p in (repo_root / "examples" / "earlyexit").iterdir() if p.is_file())
    assert files == sorted(EXAMPLES + ["serve_config.yaml"])


def test_quickstart(repo_root, capsys):
    out = _run(repo_root, "quickstart.py")
    assert out["full_accuracy"] > 0.85 and out["accuracy"] >= out["full_accuracy"] - 0.03
    assert out["exit_counts"][0] > 0  # easy digits leave early
    assert "test accuracy: early exit" in capsys.readouterr().out


def test_transformer_exits(repo_root):
    out = _run(repo_root, "transformer_exits.py")
    assert out["accuracy"] > 0.6 and sum(out["exit_counts"]) == 450


def test_batch_inference(repo_root, ray_local):
    out = _run(repo_root, "batch_inference.py")
    assert out["samples"] == 1000 and out["compute_saved"] > 0.5 and out["accuracy"] >= 0.97


def test_serve_config_is_a_valid_serve_deploy_file(repo_root):
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from mixfleet.earlyexit.serve.replica import ServeOptions
    from mixfleet.platform.config import parse_model

    cfg = yaml.safe_load((repo_root / "examples" / "earlyexit" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(cfg)
    app = schema.applications[0]
    assert app.import_path == "mixfleet.earlyexit.serve.app:app_builder"
    opts = parse_model(app.deployments[0].user_config, ServeOptions)  # unknown knobs would be rejected
    assert opts.mode == "adaptive" and schema.http_options.host == "127.0.0.1"
    scaling = app.deployments[0].autoscaling_config
    assert scaling["policy"]["policy_function"] == "mixfleet.earlyexit.serve.autoscale:EarlyExitAutoscaling"
    from mixfleet.earlyexit.serve.autoscale import autoscaling_config

    autoscaling_config(**scaling["policy"]["policy_kwargs"])  # knobs the policy accepts
