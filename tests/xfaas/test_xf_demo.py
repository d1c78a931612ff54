"""The xfaas demo step: Smart Grid on each cloud and the ILP placement, as the demo frame calls it."""

from __future__ import annotations

import time
from pathlib import Path


class Ctx:
    def __init__(self, tmp: Path):
        self.workdir, self.json_mode, self.address, self.extras = tmp, True, None, {}

    def say(self, text: str) -> None:
        print(text)


def test_demo_step_runs_smart_grid_on_all_clouds(ray_local, tmp_path):
    from mixfleet.xfaas.demo import step

    t0 = time.monotonic()
    out = step(Ctx(tmp_path))
    assert time.monotonic() - t0 < 60  # seconds on an idle machine; generous so a busy one cannot fail it
    p = out["placements"]
    assert set(p) == {"aws", "azure", "gcp", "ilp"} and out["emulated"]
    assert p["aws"]["clouds_used"] == ["aws"] and p["azure"]["clouds_used"] == ["azure"]
    assert p["ilp"]["latency_s"] <= min(p[c]["latency_s"] for c in ("aws", "azure", "gcp")) * 1.05
    assert all(v["cost_usd"] > 0 for v in p.values())
