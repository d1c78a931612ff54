"""The open-loop HTTP load generator: every request gets one outcome, latency counts queueing."""

import http.server
import json
import threading
import time

import numpy as np
import pytest

from mixfleet.platform.loadgen import poisson_schedule, run_open_loop


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the generator expects
    delay_s = 0.0
    lock = None  # set: one request at a time (a server with a single worker)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.lock is not None:
            with self.lock:
                time.sleep(self.delay_s)
        else:
            time.sleep(self.delay_s)
        out = json.dumps({"echo": json.loads(body), "path": self.path}).encode()
        code = 429 if json.loads(body).get("shed") else 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def _server(serial: bool, delay_s: float):
    handler = type("Handler", (_Echo,), {"delay_s": delay_s, "lock": threading.Lock() if serial else None})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def echo():
    srv = _server(serial=False, delay_s=0.02)
    yield srv.server_address[1]
    srv.shutdown()


def test_every_request_gets_one_outcome_in_schedule_order(echo):
    bodies = [json.dumps({"i": i}).encode() for i in range(5)] + [b'{"shed": true}']
    schedule = np.linspace(0.0, 0.5, 40)
    pick = np.arange(40) % 6
    res = run_open_loop("127.0.0.1", echo, "/predict", bodies, schedule, pick, procs=2)
    assert len(res.status) == 40
    assert (res.status[pick == 5] == 429).all() and (res.status[pick != 5] == 200).all()
    for i in np.flatnonzero(pick != 5):  # request i's answer came back as request i's outcome
        assert json.loads(res.bodies[i])["echo"] == {"i": int(pick[i])}
    assert (res.latency_s >= 0.02).all() and np.isfinite(res.latency_s).all()


def test_a_list_of_paths_loads_several_applications_side_by_side(echo):
    """Request i goes to ``paths[index // len(bodies)]`` with body ``index % len(bodies)``."""
    bodies = [json.dumps({"i": i}).encode() for i in range(3)]
    which = np.arange(30) % 2
    pick = np.arange(30) % 3
    res = run_open_loop("127.0.0.1", echo, ["/a/predict", "/b/predict"], bodies, np.linspace(0.0, 0.3, 30),
                        which * len(bodies) + pick, procs=2)
    got = [json.loads(b) for b in res.bodies]
    assert [g["path"] for g in got] == [("/a/predict", "/b/predict")[w] for w in which]
    assert [g["echo"]["i"] for g in got] == pick.tolist()


def test_queueing_at_a_slow_server_shows_up_as_latency():
    srv = _server(serial=True, delay_s=0.1)  # one request at a time, 0.1 s each
    try:
        schedule = np.zeros(10)  # all due at once: an open-loop client does not wait for answers
        res = run_open_loop("127.0.0.1", srv.server_address[1], "/x", [b"{}"], schedule, np.zeros(10, dtype=int),
                            procs=1, max_conns=10)
    finally:
        srv.shutdown()
    assert (res.status == 200).all()
    assert res.latency_s.max() >= 0.9  # the last waited for the nine before it, counted from its scheduled time
    assert res.latency_s.min() < 0.5


def test_a_dead_server_is_status_zero_not_a_hang():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    t = time.monotonic()
    res = run_open_loop("127.0.0.1", port, "/x", [b"{}"], np.array([0.0, 0.01]), np.zeros(2, dtype=int),
                        procs=1, timeout_s=2.0)
    assert (res.status == 0).all() and np.isinf(res.latency_s).all()
    assert time.monotonic() - t < 30


def test_poisson_schedule_follows_each_phase_rate():
    t, phase = poisson_schedule([(100.0, 10.0), (300.0, 10.0)], np.random.default_rng(0))
    assert (np.diff(t) >= 0).all() and t.min() >= 0 and t.max() < 20
    assert abs((phase == 0).sum() - 1000) < 150 and abs((phase == 1).sum() - 3000) < 250
    assert (t[phase == 0] < 10).all() and (t[phase == 1] >= 10).all()
