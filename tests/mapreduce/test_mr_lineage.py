"""Lost map outputs are recomputed (lineage), on the emulated multi-node cluster."""

from __future__ import annotations

import importlib.util
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from mixfleet.mapreduce import run

pytestmark = pytest.mark.multinode

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("mr_testjobs_lineage", HERE / "mr_testjobs.py")
jobs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jobs)


def _master_nodes() -> set[str]:
    """Nodes of the running MapReduce masters, from the GCS actor table."""
    from ray._private import state

    return {a["Address"]["NodeID"] for a in state.actors().values()
            if a["Name"].startswith("mixfleet-mapreduce-master-") and a["State"] == "ALIVE"}


def test_map_outputs_on_a_dead_node_are_recomputed(ray_cluster, data_dir, tmp_path):
    """Kill a worker node (an emulated machine) that holds finished maps' blocks while the map
    phase is held open (``NodeGated``, wherever the scheduler put the workers): the reduces
    can't fetch those blocks, the master re-runs exactly the maps whose outputs were there,
    and the job's output and counters are exact."""
    import ray

    books = sorted((data_dir / "gutenberg").glob("pg-*.txt"))[:4]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    head = ray.get_runtime_context().get_node_id()
    box: dict = {}

    def go():
        try:
            box["result"] = run(jobs.NodeGated(str(scratch), hold_node=head), [str(b) for b in books], str(tmp_path / "out"),
                                num_workers=3, num_reducers=1, split_bytes=600_000, speculation=False,
                                progress=lambda st: box.update(maps_done=st["maps"]["done"]))
        except Exception as exc:  # surfaced by the assertion below
            box["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    index = None
    try:
        victim = None
        deadline = time.monotonic() + 180
        while victim is None and time.monotonic() < deadline and thread.is_alive():
            keep = {head} | _master_nodes()  # the driver's node and the master's stay up
            committed = box.get("maps_done", 0)  # read before the files: done maps are a subset of them
            done = [p.name.rsplit("-", 1)[1] for p in scratch.glob("mapdone-*")]
            if committed >= len(done):  # so the master has the output of every map that left a file
                victim = next((n for n in done if n not in keep), None)
            time.sleep(0.1)
        assert victim, f"no map finished on a node other than the driver's and the master's ({box.get('error')})"
        index = next(i for i in range(len(ray_cluster.nodes)) if ray_cluster.node_handle(i).node_id == victim)
        held = {"-".join(p.name.split("-")[1:4]) for p in scratch.glob(f"mapdone-*-{victim}")}  # the task ids
        ray_cluster.remove_node(index)
    finally:
        (scratch / "go").touch()  # whatever happened above, the held maps go on and the job ends
        thread.join(timeout=240)
        if index is not None:
            ray_cluster.add_node(ray_cluster.nodes[index])  # the next tests get the same fleet back
    assert not thread.is_alive(), "the job did not finish within 240 s of the node's loss"
    assert "error" not in box, box.get("error")
    result = box["result"]
    expect = Counter(w for b in books for w in re.findall(r"[A-Za-z]+", b.read_text()))
    assert {k: int(v) for k, v in result.read()} == dict(expect)
    assert result.counters["speculation"]["maps_recomputed"] >= 1
    for task in held:  # every map whose blocks were on the dead node ran again
        assert sum(1 for a in result.timeline if a["task"] == task) >= 2, task
    c = result.counters["mixfleet"]
    assert c["map_input_records"] == sum(len(b.read_text().split("\n")) - 1 for b in books)  # counted once
