"""Bad input across every command, as a user meets it: ``python -m mixfleet ...`` in a subprocess.

Every case must end with the exit code expected, exactly one stderr line
starting ``error: `` (no traceback, no Ray warning, no blank line), nothing on
stdout, nothing left behind (outputs absent, an existing output byte for
byte as it was), within a time bound. Nearly all fail before Ray starts, so
the table runs two cases at a time in threads (one shared fixture) and the
per-case tests only check the results.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLEET = "examples/routing/fleet.yaml"
TRACE = "tests/data/traces/azure_conv_head300.csv"
WF = "examples/xfaas/math/workflow.yaml"
WC = "examples/mapreduce/wordcount.py:WordCount"
HANG_BOUND_S = 10 + 15  # "not a Ray cluster" must answer within 10 s; slack for a loaded CI machine
BOUND_S = 60

# (id, argv, exit code, substring of the error line, {"absent": [...], "intact": [...], "bound": s, "join": bool})
# "join": the case runs Ray, so it joins the session's Ray (as under `ray job submit`) instead of starting one
CASES: list[tuple[str, list[str], int, str, dict]] = [
    # -- the top-level command --------------------------------------------------------------
    ("unknown-command", ["mapreduse"], 2, "unknown command 'mapreduse'", {}),
    ("unknown-verb", ["routing", "simulat"], 2, "No such command", {}),
    ("unknown-option", ["routing", "simulate", "--fleet", FLEET, "--trace", TRACE, "--bogus"], 2, "--bogus", {}),
    # -- cluster: fail fast on an address that is not Ray --------------------------------------
    ("cluster-status-http-server", ["cluster", "status", "--address", "127.0.0.1:{http}"], 2,
     "is not a Ray cluster: an HTTP server answered", {"bound": HANG_BOUND_S}),
    ("cluster-status-closed-port", ["cluster", "status", "--address", "127.0.0.1:{closed}"], 2,
     "cannot reach Ray at", {"bound": HANG_BOUND_S}),
    ("cluster-status-bad-address", ["cluster", "status", "--address", "no-port-here"], 2, "bad Ray address", {}),
    ("cluster-status-watch-json", ["cluster", "status", "--watch", "--json"], 2, "do not mix", {}),
    ("cluster-status-interval", ["cluster", "status", "--interval", "0"], 2, "--interval", {}),
    ("cluster-validate-missing", ["cluster", "validate", "{sb}/nope.yaml"], 2, "nope.yaml", {}),
    ("cluster-validate-bad-yaml", ["cluster", "validate", "{sb}/bad.yaml"], 2, "bad.yaml", {}),
    ("cluster-local-bad-nodes", ["cluster", "local", "--nodes", "gpu_t4"], 2, "bad --nodes value 'gpu_t4'", {}),
    # -- mapreduce ------------------------------------------------------------------------------
    ("mr-address-http-server", ["mapreduce", "run", WC, "-i", "{sb}/books", "-o", "{sb}/mr-out1",
                                "--address", "127.0.0.1:{http}"], 2, "is not a Ray cluster",
     {"bound": HANG_BOUND_S, "absent": ["{sb}/mr-out1"]}),
    ("mr-output-is-input", ["mapreduce", "run", WC, "-i", "{sb}/books", "-o", "{sb}/books", "--overwrite"], 2,
     "is the input folder", {"intact": ["{sb}/books"]}),
    ("mr-output-inside-input", ["mapreduce", "run", WC, "-i", "{sb}/books", "-o", "{sb}/books/out", "--overwrite"],
     2, "lies inside the input folder", {"intact": ["{sb}/books"], "absent": ["{sb}/books/out"]}),
    ("mr-output-contains-input", ["mapreduce", "run", WC, "-i", "{sb}/books/a.txt", "-o", "{sb}", "--overwrite"], 2,
     "contains the input", {"intact": ["{sb}/books"]}),
    ("mr-output-exists", ["mapreduce", "run", WC, "-i", "{sb}/books", "-o", "{sb}/old-out"], 2, "already exists",
     {"intact": ["{sb}/old-out"]}),
    ("mr-output-is-file", ["mapreduce", "run", WC, "-i", "{sb}/books", "-o", "{sb}/afile"], 2, "existing file", {}),
    ("mr-output-under-file", ["mapreduce", "run", WC, "-i", "{sb}/books", "-o", "{sb}/afile/out"], 2,
     "is a file, not a folder", {}),
    ("mr-steps-string", ["mapreduce", "run", "{sb}/jobs.py:StepsString", "-i", "{sb}/books", "-o", "{sb}/mr-out2"], 2,
     "StepsString.steps() returned str", {"absent": ["{sb}/mr-out2"]}),
    ("mr-steps-not-step", ["mapreduce", "run", "{sb}/jobs.py:StepsDict", "-i", "{sb}/books", "-o", "{sb}/mr-out3"], 2,
     "StepsDict.steps()[0] is dict", {"absent": ["{sb}/mr-out3"]}),
    ("mr-job-missing", ["mapreduce", "run", "{sb}/jobs.py:Nope", "-i", "{sb}/books", "-o", "{sb}/mr-out4"], 2,
     "Nope", {"absent": ["{sb}/mr-out4"]}),
    ("mr-job-file-missing", ["mapreduce", "run", "{sb}/nojobs.py:X", "-i", "{sb}/books", "-o", "{sb}/mr-out5"], 2,
     "nojobs.py", {"absent": ["{sb}/mr-out5"]}),
    ("mr-input-missing", ["mapreduce", "run", WC, "-i", "{sb}/nothing", "-o", "{sb}/mr-out6"], 2, "not found",
     {"absent": ["{sb}/mr-out6"]}),
    ("mr-bad-format", ["mapreduce", "run", WC, "-i", "{sb}/books", "-o", "{sb}/mr-out7", "--format", "xml"], 2,
     "xml", {"absent": ["{sb}/mr-out7"]}),
    ("mr-zero-reducers", ["mapreduce", "run", WC, "-i", "{sb}/books", "-o", "{sb}/mr-out8", "--reducers", "0"], 2,
     "reducers", {"absent": ["{sb}/mr-out8"]}),
    ("mr-job-partitioner", ["mapreduce", "run", "{sb}/jobs.py:BadPartitioner", "-i", "{sb}/books", "-o",
                            "{sb}/mr-out9"], 2, "unknown partitioner 'modulo'", {"absent": ["{sb}/mr-out9"]}),
    # -- routing --------------------------------------------------------------------------------
    ("rt-trace-plain-gz", ["routing", "simulate", "--fleet", FLEET, "--trace", "{sb}/plain.csv.gz"], 2,
     "is not gzip-compressed", {}),
    ("rt-trace-truncated-gz", ["routing", "simulate", "--fleet", FLEET, "--trace", "{sb}/trunc.csv.gz"], 2,
     "is truncated", {}),
    ("rt-trace-not-utf8", ["routing", "simulate", "--fleet", FLEET, "--trace", "{sb}/latin1.csv"], 2,
     "can't be read", {}),
    ("rt-trace-missing", ["routing", "simulate", "--fleet", FLEET, "--trace", "{sb}/none.csv"], 2, "does not exist", {}),
    ("rt-trace-folder", ["routing", "simulate", "--fleet", FLEET, "--trace", "{sb}/books"], 2, "is a folder", {}),
    ("rt-trace-generator", ["routing", "simulate", "--fleet", FLEET, "--trace", "poisson:n=abc"], 2, "poisson", {}),
    ("rt-fleet-missing", ["routing", "simulate", "--fleet", "{sb}/none.yaml", "--trace", TRACE], 2, "none.yaml", {}),
    ("rt-fleet-bad-yaml", ["routing", "simulate", "--fleet", "{sb}/bad.yaml", "--trace", TRACE], 2, "bad.yaml", {}),
    ("rt-fleet-unknown-gpu", ["routing", "simulate", "--fleet", "{sb}/fleet-h900.yaml", "--trace", TRACE], 2,
     "H900", {}),
    ("rt-policy-typo", ["routing", "simulate", "--fleet", FLEET, "--trace", TRACE, "--policy", "pow3"], 2,
     "unknown policy 'pow3'", {}),
    ("rt-load-zero", ["routing", "simulate", "--fleet", FLEET, "--trace", TRACE, "--load", "0"], 2, "load 0", {}),
    ("rt-limit-zero", ["routing", "simulate", "--fleet", FLEET, "--trace", TRACE, "--limit", "0"], 2, "--limit", {}),
    ("rt-plot-folder", ["routing", "compare", "--fleet", FLEET, "--trace", TRACE, "--plot", "{sb}/plots.png"], 2,
     "is a folder", {}),
    ("rt-plot-under-file", ["routing", "compare", "--fleet", FLEET, "--trace", TRACE, "--plot", "{sb}/afile/p.png"], 2,
     "is a file, not a folder", {"absent": ["{sb}/afile/p.png"]}),
    ("rt-plot-not-png", ["routing", "compare", "--fleet", FLEET, "--trace", TRACE, "--plot", "{sb}/p.txt"], 2,
     "must end with .png", {"absent": ["{sb}/p.txt"]}),
    ("rt-plan-target-util", ["routing", "plan", "--fleet", FLEET, "--trace", TRACE, "--target-util", "2"], 2,
     "--target-util", {}),
    ("rt-serve-port-in-use", ["routing", "serve", "--fleet", FLEET, "--emulate", "--port", "{http}",
                              "--grpc-port", "{free}"], 2, "--port {http} is already in use", {}),
    ("rt-serve-grpc-port-in-use", ["routing", "serve", "--fleet", FLEET, "--emulate", "--port", "{free}",
                                   "--grpc-port", "{http}"], 2, "--grpc-port {http} is already in use", {}),
    ("rt-serve-embedded", ["routing", "serve", "--fleet", FLEET, "--port", "{free}"], 2,
     "an embedded Ray has none of the fleet's GPU types (A100-80GB", {}),
    ("rt-serve-policy", ["routing", "serve", "--fleet", FLEET, "--emulate", "--policy", "fastest"], 2,
     "unknown policy 'fastest'", {}),
    ("rt-serve-cpu-bind-syntax", ["routing", "serve", "--fleet", "examples/routing/fleet_real.yaml", "--port",
                                  "{free}", "--cpu-bind", "1-x"], 2, "cpu bind '1-x' has a bad CPU id", {}),
    ("rt-serve-cpu-bind-missing", ["routing", "serve", "--fleet", "examples/routing/fleet_real.yaml", "--port",
                                   "{free}", "--cpu-bind", "0|4096"], 2, "names CPU(s) 4096", {}),
    # -- early exit -----------------------------------------------------------------------------
    ("ee-serve-bad-mode", ["earlyexit", "serve", "--sla-ms", "50", "--mode", "bogus", "--port", "{free}"], 2,
     "unknown mode 'bogus'", {}),
    ("ee-serve-port-in-use", ["earlyexit", "serve", "--sla-ms", "50", "--port", "{http}"], 2,
     "--port {http} is already in use", {}),
    ("ee-serve-grpc-port-in-use", ["earlyexit", "serve", "--sla-ms", "50", "--port", "{free}", "--grpc-port",
                                   "{http}"], 2, "--grpc-port {http} is already in use", {}),
    ("ee-serve-sla", ["earlyexit", "serve", "--sla-ms", "0"], 2, "--sla-ms 0", {}),
    ("ee-serve-queue", ["earlyexit", "serve", "--sla-ms", "50", "--queue-bound", "0"], 2, "--queue-bound 0", {}),
    ("ee-serve-admission", ["earlyexit", "serve", "--sla-ms", "50", "--admission", "lifo"], 2, "'lifo'", {}),
    ("ee-bench-sla-admission", ["earlyexit", "bench-sla", "--admission", "lifo"], 2, "'lifo'", {}),
    ("ee-serve-device", ["earlyexit", "serve", "--sla-ms", "50", "--device-ms", "-1"], 2, "--device-ms -1", {}),
    ("ee-serve-empty-model", ["earlyexit", "serve", "--sla-ms", "50", "--port", "{free}", "--model",
                              "{sb}/empty.pt"], 2, "is empty", {}),
    ("ee-serve-garbage-model", ["earlyexit", "serve", "--sla-ms", "50", "--port", "{free}", "--model",
                                "{sb}/garbage.pt"], 2, "is not a saved early-exit model", {}),
    ("ee-bench-empty-model", ["earlyexit", "bench", "--model", "{sb}/empty.pt"], 2, "is empty", {}),
    ("ee-bench-garbage-model", ["earlyexit", "bench", "--model", "{sb}/garbage.pt"], 2,
     "is not a saved early-exit model", {}),
    ("ee-bench-missing-model", ["earlyexit", "bench", "--model", "{sb}/none.pt"], 2, "does not exist", {}),
    ("ee-bench-plot-folder", ["earlyexit", "bench", "--plot", "{sb}/plots.png"], 2, "is a folder", {}),
    ("ee-bench-plot-under-file", ["earlyexit", "bench", "--plot", "{sb}/afile/p.png"], 2, "is a file, not a folder",
     {}),
    ("ee-bench-thresholds", ["earlyexit", "bench", "--thresholds", "a,b"], 2, "bad thresholds 'a,b'", {}),
    ("ee-train-out-under-file", ["earlyexit", "train", "--out", "{sb}/afile/m.pt", "--epochs", "1"], 2,
     "is a file, not a folder", {}),
    ("ee-train-dataset", ["earlyexit", "train", "--out", "{sb}/m.pt", "--dataset", "cifar"], 2,
     "unknown dataset 'cifar'", {"absent": ["{sb}/m.pt"]}),
    ("ee-calibrate-curve-under-file", ["earlyexit", "calibrate", "--curve", "{sb}/afile/c.json"], 2,
     "is a file, not a folder", {}),
    ("ee-calibrate-out-folder", ["earlyexit", "calibrate", "--out", "{sb}/plots.png"], 2, "is a folder", {}),
    ("ee-bench-sla-plot", ["earlyexit", "bench-sla", "--plot", "{sb}/afile/p.png"], 2, "is a file, not a folder", {}),
    ("ee-bench-sla-model", ["earlyexit", "bench-sla", "--model", "{sb}/empty.pt"], 2, "is empty", {}),
    # -- xfaas ----------------------------------------------------------------------------------
    ("xf-workflow-missing", ["xfaas", "run", "{sb}/none.yaml", "--input", "{{}}"], 2, "none.yaml", {}),
    ("xf-input-not-json", ["xfaas", "run", WF, "--input", "{{seed"], 2, "neither valid JSON nor an existing file", {}),
    ("xf-placement-typo", ["xfaas", "run", WF, "--input", '{{"seed": 1, "req": 4}}', "--placement", "ilq"], 2,
     "ilq", {}),
    ("xf-only-clouds", ["xfaas", "plan", WF, "--only-clouds", "mars"], 2, "mars", {}),
    ("xf-budget", ["xfaas", "plan", WF, "--budget", "-1"], 2, "--budget -1", {}),
    ("xf-bench-plot-under-file", ["xfaas", "bench", WF, "--plot", "{sb}/afile/x.png"], 2, "is a file, not a folder",
     {}),
    ("xf-address-http-server", ["xfaas", "run", WF, "--input", '{{"seed": 1, "req": 4}}', "--address",
                                "127.0.0.1:{http}"], 2, "is not a Ray cluster", {"bound": HANG_BOUND_S}),
    ("xf-cycle", ["xfaas", "plan", "{sb}/cycle.yaml"], 2, "cycle", {}),
    # a user error found while running (Ray starts): still one line, naming the node
    ("xf-output-not-json", ["xfaas", "run", "{sb}/wf/workflow.yaml", "--input", "{{}}", "--placement", "aws",
                            "--json"], 1, "the output of node 'finish' in workflow 'badout' is not JSON-serialisable",
     {"join": True}),
]

JOBS = '''
from mixfleet.mapreduce import Job


class StepsString(Job):
    def steps(self):
        return "mapreduce"


class StepsDict(Job):
    def steps(self):
        return [{"mapper": self.mapper}]


class BadPartitioner(Job):
    partitioner = "modulo"
'''

WORKFLOW = """name: badout
nodes:
  - {name: start, function: functions.py:start}
  - {name: finish, function: functions.py:finish}
edges:
  - {from: start, to: finish}
"""

CYCLE = """name: loop
nodes:
  - {name: a, function: functions.py:start}
  - {name: b, function: functions.py:start}
edges:
  - {from: a, to: b}
  - {from: b, to: a}
"""


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _sandbox(root: Path) -> None:
    (root / "books").mkdir()
    (root / "books" / "a.txt").write_text("the quick brown fox\njumps over the lazy dog\n" * 50)
    (root / "old-out").mkdir()
    (root / "old-out" / "part-r-00000").write_text("fox\t50\n")
    (root / "old-out" / "_SUCCESS").write_text("")
    (root / "afile").write_text("a plain file\n")
    (root / "plots.png").mkdir()
    (root / "bad.yaml").write_text("model: [unclosed\n  pools: {\n")
    (root / "fleet-h900.yaml").write_text("model: llama-3.2-3b\npools:\n  - gpu: H900\n    count: 1\n")
    (root / "plain.csv.gz").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    rows = "".join(f"2023-11-16 18:{i // 60:02d}:{i % 60:02d}.000000,{100 + i},20\n" for i in range(3000))
    packed = gzip.compress(("TIMESTAMP,ContextTokens,GeneratedTokens\n" + rows).encode())
    (root / "trunc.csv.gz").write_bytes(packed[: len(packed) // 2])
    (root / "latin1.csv").write_bytes(b"TIMESTAMP,ContextTokens,GeneratedTokens\n\xe9\xff,1,1\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "garbage.pt").write_bytes(b"not a torch file\n" * 10)
    (root / "jobs.py").write_text(JOBS)
    (root / "wf").mkdir()
    (root / "wf" / "workflow.yaml").write_text(WORKFLOW)
    (root / "wf" / "functions.py").write_text("def start(p):\n    return {'x': 1}\n\n\n"
                                              "def finish(p):\n    return {'seen': {1, 2, 3}}\n")
    (root / "cycle.yaml").write_text(CYCLE)
    (root / "functions.py").write_text("def start(p):\n    return p\n")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], ray_address: str | None = None) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "mixfleet", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=BOUND_S + 60)
    return proc, time.monotonic() - t0


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, ray_local):
    """Run every case (two at a time); ``{id: (case, proc, seconds, intact_before, root)}``."""
    root = tmp_path_factory.mktemp("bad-input")
    _sandbox(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    slots = {"sb": str(root), "http": server.server_address[1], "closed": _closed_port(), "free": _closed_port()}
    before = {d: _tree(Path(d)) for _, _, _, _, extra in CASES
              for d in (x.format(**slots) for x in extra.get("intact", []))}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {cid: pool.submit(_run, [a.format(**slots) for a in argv],
                                        ray_local.address if extra.get("join") else None)
                       for cid, argv, _code, _needle, extra in CASES}
            results = {cid: f.result() for cid, f in futures.items()}
    finally:
        server.shutdown()
        server.server_close()
    return {"results": results, "before": before, "slots": slots}


def test_the_sweep_is_broad():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    parts = {argv[0] for _, argv, *_ in CASES}
    assert {"cluster", "mapreduce", "routing", "earlyexit", "xfaas"} <= parts


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(sweep, case):
    cid, _argv, code, needle, extra = case
    slots = sweep["slots"]
    proc, seconds = sweep["results"][cid]
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, proc.stderr[-3000:]
    assert proc.stdout == "", proc.stdout[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert needle.format(**slots) in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert seconds < extra.get("bound", BOUND_S), f"took {seconds:.1f} s"
    for path in extra.get("absent", []):
        assert not Path(path.format(**slots)).exists(), path
    for folder in extra.get("intact", []):
        folder = folder.format(**slots)
        assert _tree(Path(folder)) == sweep["before"][folder]
    if any("mapreduce" == a for a in _argv[:1]):  # no staging folder beside any output
        assert not list(Path(slots["sb"]).rglob(".*.mixfleet-new"))


# -- --overwrite replaces the output atomically ----------------------------------------------------
HOLD_JOB = '''
import os
import time

from mixfleet.mapreduce import Job


class Hold(Job):
    """Word count whose reducers say so in $MIXFLEET_TEST_SCRATCH/reducing, then wait for a 'release' file."""

    def mapper(self, _, line):
        for word in line.split():
            yield word, 1

    def reducer_init(self):
        scratch = os.environ["MIXFLEET_TEST_SCRATCH"]
        open(os.path.join(scratch, "reducing"), "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(scratch, "release")) and time.monotonic() < deadline:
            time.sleep(0.05)

    def reducer(self, word, counts):
        yield word, sum(counts)
'''


def _old_output(root: Path) -> Path:
    out = root / "out"
    out.mkdir()
    (out / "part-r-00000").write_text("previous\t1\n")
    (out / "part-r-00001").write_text("output\t2\n")
    (out / "_SUCCESS").write_text("")
    return out


def _siblings(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".out."))


def test_killed_mid_reduce_after_overwrite_leaves_the_previous_output_byte_identical(tmp_path):
    (tmp_path / "in.txt").write_text("to be or not to be\n" * 200)
    (tmp_path / "jobs.py").write_text(HOLD_JOB)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = _old_output(tmp_path)
    before = _tree(out)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["MIXFLEET_TEST_SCRATCH"] = str(scratch)
    proc = subprocess.Popen([sys.executable, "-m", "mixfleet", "mapreduce", "run", f"{tmp_path}/jobs.py:Hold",
                             "-i", str(tmp_path / "in.txt"), "-o", str(out), "--overwrite", "--reducers", "2",
                             "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (scratch / "reducing").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (scratch / "reducing").exists(), "the job never reached its reduce phase"
        assert _tree(out) == before  # mid-reduce: the old output is still all there
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    finally:
        (scratch / "release").touch()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err[-2000:]
    assert err.splitlines()[-1] == "error: interrupted"
    assert _tree(out) == before




def test_overwrite_keeps_the_old_output_until_commit_then_swaps(ray_local, tmp_path):
    from mixfleet.errors import JobError
    from mixfleet.mapreduce import Job
    from mixfleet.mapreduce.runner import run

    class Fails(Job):
        def mapper(self, _, line):
            for word in line.split():
                yield word, 1

        def reducer(self, word, counts):
            raise RuntimeError("reducer bug")

    class Counts(Fails):
        def reducer(self, word, counts):
            yield word, sum(counts)

    (tmp_path / "in.txt").write_text("to be or not to be\n")
    out = _old_output(tmp_path)
    before = _tree(out)
    with pytest.raises(JobError):
        run(Fails, [str(tmp_path / "in.txt")], str(out), num_reducers=2, overwrite=True)
    assert _tree(out) == before and _siblings(tmp_path) == []  # old output intact, no staging left
    with pytest.raises(JobError):
        run(Fails, [str(tmp_path / "in.txt")], str(tmp_path / "fresh"), num_reducers=2)
    assert not (tmp_path / "fresh").exists()  # a failed job leaves no empty output folder
    result = run(Counts, [str(tmp_path / "in.txt")], str(out), num_reducers=2, overwrite=True)
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-r-00000", "part-r-00001"]
    assert dict(result.read()) == {"to": "2", "be": "2", "or": "1", "not": "1"}
    assert _siblings(tmp_path) == []


# -- SIGINT/SIGTERM: the shared mechanism in mixfleet.cli ------------------------------------------
STUBBORN = '''
import sys, time
from pathlib import Path
from mixfleet import cli

cli.GRACE_S = float(sys.argv[2])
cli.install_signal_handlers()
scratch = Path(sys.argv[1])
(scratch / "ready").touch()
try:
    time.sleep(120)
except KeyboardInterrupt:
    (scratch / "cleaning").touch()
    time.sleep(120)  # a clean-up that hangs
'''


def _stubborn(tmp_path: Path, grace_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN, str(tmp_path), str(grace_s)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (tmp_path / "ready").exists(), proc.communicate()
    return proc


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert path.exists()


def test_sigterm_runs_the_clean_up_and_a_second_signal_leaves_at_once(tmp_path):
    proc = _stubborn(tmp_path, grace_s=600)
    proc.terminate()
    _wait_for(tmp_path / "cleaning", proc)  # SIGTERM took the Ctrl-C path: the except block runs
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err.splitlines() == ["error: interrupted"]


def test_a_hung_clean_up_is_cut_short_after_the_grace_period(tmp_path):
    proc = _stubborn(tmp_path, grace_s=0.5)
    proc.send_signal(2)  # SIGINT
    _, err = proc.communicate(timeout=60)
    assert (tmp_path / "cleaning").exists()
    assert proc.returncode == 130 and err.splitlines() == ["error: interrupted"]


def test_messages_use_the_fleet_files_gpu_name():
    from mixfleet.errors import ClusterError
    from mixfleet.routing.serve.app import placement_accelerator

    with pytest.raises(ClusterError, match=r"GPU type 'A100-80GB' \(Ray accelerator type 'A100-80G'\)"):
        placement_accelerator("A100-80G", {"T4": 2}, "A100-80GB")
