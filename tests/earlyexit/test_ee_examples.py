"""Every file in examples/earlyexit runs (in-process, sharing the session's Ray) and does what it says."""

import importlib.util

import pytest

EXAMPLES = ["quickstart.py", "transformer_exits.py", "batch_inference.py"]


def _run(repo_root, name):
    spec = importlib.util.spec_from_file_location(f"ee_example_run_{name[:-3]}",
                                                  repo_root / "examples" / "earlyexit" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main()


def test_every_example_is_listed(repo_root):
    assert sorted(p.name for p in (repo_root / "examples" / "earlyexit").glob("*.py")) == sorted(EXAMPLES)


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
