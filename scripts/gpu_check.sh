#!/usr/bin/env bash
# Check mixfleet's GPU telemetry against real NVML on a machine with an NVIDIA GPU.
#
#   scripts/gpu_check.sh            # uses .venv/bin/python if present, else python3 (PYTHON=... overrides)
#
# 1. reads every GPU once through the NVML reader in this process (no Ray);
# 2. starts an embedded Ray, places the telemetry agent on the node with
#    source=nvml, and prints one hub snapshot as JSON on stdout.
# Exits non-zero if NVML is not usable or a reading is not from NVML. Finishes in < 2 minutes.
#
#   scripts/gpu_check.sh routing    # the REAL LLM engine on the GPU instead (routing, engine: torch)
#
# `routing`: profiles the real engine (transformers continuous batching over tiny-llama, seeded random
# weights: real compute, random weights) on CUDA (`mixfleet routing profile --device cuda --quick`), then runs
# a 100-request fidelity check (benchmarks/routing_fidelity.py --device cuda: live replay vs the
# simulator with that profile, at 50% and 85% of the measured capacity) and prints one JSON summary
# on stdout. Exits non-zero without CUDA. Finishes in < 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ "${1:-}" = "routing" ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || { echo "error: no CUDA GPU is visible to torch; run 'scripts/gpu_check.sh routing' on a machine with one" >&2; exit 2; }
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # the CLI's quick grid (a check of the command on CUDA); the fidelity run profiles fully before each load
  timeout 60 "$PY" -m mixfleet routing profile --engine torch --device cuda --gpu CUDA --quick \
    --out "$work/profile.yaml" --json > "$work/profile.json"
  timeout 230 "$PY" benchmarks/routing_fidelity.py --device cuda --requests 100 --load 0.5 --load 0.85 --no-repeat \
    --out "$work" > "$work/fidelity.log"
  exec "$PY" - "$work" <<'PYEOF'
import json
import sys
from pathlib import Path

work = Path(sys.argv[1])
prof = json.loads((work / "profile.json").read_text())
fid = json.loads((work / "routing_fidelity.json").read_text())
runs = [{"load": r["load"], "rate_req_s": r["rate_req_s"], "bar": r["bar"], "within_bar": r["within_bar"],
         "real_over_sim": r["real_over_sim"], "simulator": r["simulator"],
         "real": {k: v for k, v in r["live"].items() if k != "failed"}, "failed": len(r["live"]["failed"])}
        for r in fid["runs"]]
print(json.dumps({"check": "routing real engine on CUDA", "note": prof["note"], "device": prof["device"],
                  "profile": {"entry": prof["entry"], "fit_error": prof["fit_error"]},
                  "capacity_req_s": fid["capacity"]["req_s_per_replica"], "fidelity": runs,
                  "all_within_bars": all(r["within_bar"] for r in runs)}, indent=2))
PYEOF
fi
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
