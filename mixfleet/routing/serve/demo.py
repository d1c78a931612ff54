"""Demo step ``routing_live``: the live router on the emulated cluster, through the OpenAI API.

Deploys a small mixed fleet (one A100, one V100, one T4 replica; EMULATED
GPUs and engines), sends two dozen requests (sizes from the Azure conversation trace) with the
official ``openai`` client (some streamed), and shows how many each GPU type served and its
latency. Serve is started on a free loopback port if it is not running,
and everything this step started is torn down before the next step.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

DEMO_FLEET = {"model": "llama-3.2-3b", "pools": [{"gpu": "A100-80GB", "count": 1}, {"gpu": "V100-32GB", "count": 1},
                                                 {"gpu": "T4", "count": 1}]}
N_REQUESTS = 24


def step(ctx) -> dict:
    import openai

    from mixfleet.platform.bootstrap import connect
    from mixfleet.platform.output import print_table
    from mixfleet.platform.serving import serving
    from mixfleet.routing.fleet import fleet_from_dict
    from mixfleet.routing.serve import APP_NAME, ServeOptions, deploy
    from mixfleet.routing.traces import open_trace

    connect(ctx.address)
    fleet = fleet_from_dict(DEMO_FLEET)
    t0 = time.perf_counter()
    with serving() as srv:
        port = srv.ports.http_port
        srv.own(APP_NAME)
        deploy(fleet, ServeOptions(policy="ilp"))
        deploy_s = time.perf_counter() - t0
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        # request sizes from the Azure conversation trace (prompts as token ids), outputs capped for time
        rows = [r for r in open_trace("azure-conv").head(200) if r.prompt <= 4000][:N_REQUESTS]

        def one(k: int) -> tuple[str, float, int]:
            r = rows[k]
            n = min(r.output, 64)
            t = time.perf_counter()
            if k % 3 == 2:  # some streamed
                with client.completions.with_streaming_response.create(
                        model=fleet.model, prompt=[11] * r.prompt, max_tokens=n, stream=True) as resp:
                    gpu = resp.headers["x-mixfleet-accelerator"]
                    tokens = sum(1 for line in resp.iter_lines() if line.startswith("data: {"))
            else:
                raw = client.completions.with_raw_response.create(model=fleet.model, prompt=[11] * r.prompt,
                                                                  max_tokens=n)
                gpu, tokens = raw.headers["x-mixfleet-accelerator"], raw.parse().usage.completion_tokens
            return gpu, time.perf_counter() - t, tokens

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, range(len(rows))))
    by_gpu: dict[str, dict] = {}
    for gpu, dt, _ in results:
        row = by_gpu.setdefault(gpu, {"requests": 0, "latencies": []})
        row["requests"] += 1
        row["latencies"].append(dt)
    summary = {g: {"requests": v["requests"], "mean_latency_s": round(sum(v["latencies"]) / len(v["latencies"]), 3)}
               for g, v in sorted(by_gpu.items())}
    if not ctx.json_mode:
        print_table(f"routing_live: {len(results)} OpenAI API calls, live ilp router, EMULATED GPUs and engines",
                    ["GPU type", "requests", "mean latency s"],
                    [(g, v["requests"], v["mean_latency_s"]) for g, v in summary.items()])
    return {"emulated": True, "policy": "ilp", "requests": len(results), "by_accelerator": summary,
            "deploy_s": round(deploy_s, 2)}


REAL_FLEET = {"model": "tiny-llama", "pools": [{"gpu": "CPU", "count": 1, "engine": "torch"}],
              "max_batch": 8, "max_batched_tokens": 256}


def real_step(ctx) -> dict:
    """Demo step ``routing_real``: a REAL engine replica (real compute, random weights) via the openai client."""
    import openai

    from mixfleet.platform.bootstrap import connect
    from mixfleet.platform.output import print_table
    from mixfleet.platform.serving import serving
    from mixfleet.routing.fleet import fleet_from_dict
    from mixfleet.routing.serve import APP_NAME, ServeOptions, deploy
    from mixfleet.routing.torch_model import REAL_NOTE

    connect(ctx.address)
    fleet = fleet_from_dict(REAL_FLEET)
    ctx.say(f"[dim]REAL engine: transformers continuous batching over {fleet.model} on this CPU ({REAL_NOTE})[/dim]")
    t0 = time.perf_counter()
    with serving() as srv:
        srv.own(APP_NAME)
        deploy(fleet, ServeOptions(policy="round_robin", device="cpu"))
        deploy_s = time.perf_counter() - t0
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.ports.http_port}/v1", api_key="unused", max_retries=0)

        def one(k: int) -> int:
            if k % 2:  # chat, streamed
                stream = client.chat.completions.create(model=fleet.model, max_tokens=32, stream=True, messages=[
                    {"role": "user", "content": f"Which GPU serves request {k}?"}])
                return sum(len(c.choices[0].delta.content or "") for c in stream if c.choices)
            out = client.completions.create(model=fleet.model, prompt=f"Request {k} to the fleet:", max_tokens=32)
            return out.usage.completion_tokens

        t1 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=4) as pool:
            tokens = sum(pool.map(one, range(4)))
        wall = time.perf_counter() - t1
    rate = tokens / wall
    if not ctx.json_mode:
        print_table(f"real engine over the OpenAI API ({REAL_NOTE})", ["requests", "tokens", "seconds", "tokens/s"],
                    [(4, tokens, round(wall, 2), round(rate, 1))])
    return {"engine": "torch", "note": REAL_NOTE, "emulated": False, "requests": 4, "tokens": tokens,
            "tokens_per_s": round(rate, 1), "deploy_s": round(deploy_s, 2)}
