"""Every file in examples/earlyexit runs and does what its docstring says."""

import subprocess
import sys

import pytest

EXAMPLES = ["quickstart.py", "transformer_exits.py", "batch_inference.py"]


def test_every_example_is_listed(repo_root):
    assert sorted(p.name for p in (repo_root / "examples" / "earlyexit").glob("*.py")) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(repo_root, name):
    env_py = sys.executable
    proc = subprocess.run([env_py, str(repo_root / "examples" / "earlyexit" / name)], capture_output=True,
                          text=True, timeout=240, cwd=repo_root, env={"PATH": "/usr/bin:/bin", "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    if name == "quickstart.py":
        assert "test accuracy: early exit" in proc.stdout
    elif name == "transformer_exits.py":
        assert "exits ['encoder.layers.1', 'encoder.layers.3']" in proc.stdout
    else:
        assert "1000 images" in proc.stdout and "compute saved" in proc.stdout
