#!/usr/bin/env bash
# Check mixfleet's GPU telemetry against real NVML on a machine with an NVIDIA GPU.
#
#   scripts/gpu_check.sh            # uses .venv/bin/python if present, else python3 (PYTHON=... overrides)
#
# 1. reads every GPU once through the NVML reader in this process (no Ray);
# 2. starts an embedded Ray, places the telemetry agent on the node with
#    source=nvml, and prints one hub snapshot as JSON on stdout.
# Exits non-zero if NVML is not usable or a reading is not from NVML. Finishes in < 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout 110 "$PY" - <<'PYEOF'
import json
import sys
import time

from mixfleet.errors import MixfleetError
from mixfleet.platform.telemetry.sources import NvmlSource

try:
    src = NvmlSource("local", time.time)
except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: no GPU stack here
    sys.exit(f"error: NVML is not usable here: {exc}; run this on a machine with an NVIDIA driver")
direct = src.sample()
src.close()
print(f"NVML reader: {len(direct)} GPU(s): " + ", ".join(f"{r['gpu_index']}={r['name']}" for r in direct),
      file=sys.stderr)
if not direct:
    sys.exit("error: NVML loaded but reports no GPU")

from mixfleet.platform.bootstrap import connect, shutdown
from mixfleet.platform.telemetry import start_agents

try:
    connect(num_cpus=2)
    snap = start_agents(source="nvml", period_s=0.5, wait_s=60)
except MixfleetError as exc:
    sys.exit(f"error: {exc}")
gpus = [g for g in snap["gpus"] if not g["stale"]]
print(json.dumps({"gpus": gpus, "nodes": snap["nodes"], "reason": snap["reason"]}, indent=2, default=str))
shutdown()
bad = [g for g in gpus if g["source"] != "nvml"]
if not gpus or bad:
    sys.exit(f"error: expected fresh NVML readings from the agent, got {len(gpus)} GPU(s), {len(bad)} not from NVML")
unsupported = sorted({k for g in gpus for k, v in g.items() if v is None})
print(f"ok: {len(gpus)} GPU(s) read through NVML by the agent; fields this GPU does not report: "
      f"{', '.join(unsupported) or 'none'}", file=sys.stderr)
PYEOF
