"""Early answers: a request is answered when its samples exit, before its batch finishes."""

import asyncio
import time

import torch

from mixfleet.earlyexit.criteria import get_criterion
from mixfleet.earlyexit.inference import run_exits
from mixfleet.earlyexit.serve.answers import EarlyAnswers


def test_requests_are_answered_at_their_exit_while_the_batch_runs_on():
    async def scenario():
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        answers = EarlyAnswers([1, 2, 1], futures, [0.0, 0.0, 0.0], ["e0", "e1", "final"], loop)
        resolved_before_last_stage: list[bool] = []
        # sample rows: 0 -> request 0, 1-2 -> request 1, 3 -> request 2; rows 0 and 3 are confident at exit 0
        confident = torch.tensor([[9.0, 0.0], [0.0, 0.1], [0.0, 0.1], [0.0, 9.0]])
        def last_stage(h):
            time.sleep(0.1)  # the event loop settles the early answers meanwhile (hand-off is asynchronous)
            resolved_before_last_stage.extend(f.done() for f in futures)
            return h

        stages = [lambda h: h, lambda h: h, last_stage]
        heads = {0: lambda h: h, 1: lambda h: h}

        def compute():
            return run_exits(confident, stages, heads, [0.9, 0.9], get_criterion("max_softmax"),
                             on_exit=answers.on_exit)

        r = await asyncio.to_thread(compute)
        await asyncio.sleep(0)  # let call_soon_threadsafe callbacks run
        out = answers.finish(r.labels.tolist(), r.confidence.tolist(), r.exit_index.tolist())
        return futures, resolved_before_last_stage, out, answers

    futures, early, out, answers = asyncio.run(scenario())
    # requests 0 and 2 left at exit 0: answered (resolved) before the last stage ran
    assert early == [True, False, True]
    assert [p["exit"] for p in futures[0].result()] == [0] and futures[2].result()[0]["label"] == 1
    assert [p["exit_name"] for p in futures[1].result()] == ["final", "final"]  # both its samples went deep
    assert out == [f.result() for f in futures]  # the batch's own result agrees with the early answers
    assert all(v is not None and v >= 0 for v in answers.latency)


def test_the_plain_backbone_is_answered_by_finish():
    async def scenario():
        loop = asyncio.get_running_loop()
        answers = EarlyAnswers([2], [loop.create_future()], [0.0], ["e0", "final"], loop)
        return answers.finish([3, 4], [0.9, 0.8], [1, 1])

    assert asyncio.run(scenario()) == [[
        {"label": 3, "confidence": 0.9, "exit": 1, "exit_name": "final", "forced": False},
        {"label": 4, "confidence": 0.8, "exit": 1, "exit_name": "final", "forced": False}]]
