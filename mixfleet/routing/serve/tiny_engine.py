"""A REAL but TINY torch causal-LM engine for replicas on a CUDA GPU (opt-in: ``engine: tiny-torch``).

This is not the fleet's model: it is a 2-layer, 128-wide decoder with
random (seeded) weights, so its tokens are meaningless and its timing is
that of a tiny model on the GPU, not of the profiled LLM. It exists to run
the serving path (Serve replicas on GPU-typed nodes, streaming, batching,
the router) against real GPU kernels when a GPU is present. Without CUDA it
is refused (:func:`check_cuda`); tests never need it.

Scheduling: iteration-level batching. Each step runs one forward pass per
active sequence (no KV cache; sequences are clipped to the last
``window`` tokens) in a worker thread, so the replica's event loop stays
responsive. The prompt's *length* is what the router sends; its content is
replaced by seeded token ids.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from mixfleet.errors import ClusterError
from mixfleet.routing.serve.emulated_engine import Chunk, EngineOverloaded


def check_cuda() -> None:
    try:
        import torch

        ok = torch.cuda.is_available()
    except ImportError:
        ok = False
    if not ok:
        raise ClusterError("engine 'tiny-torch' needs a CUDA GPU and none is visible here",
                           "use the default emulated engine (engine: emulated) on machines without a GPU")


def build_tiny_lm(vocab: int = 512, dim: int = 128, layers: int = 2, heads: int = 4, seed: int = 0):
    """A tiny causal LM: tokens (B, T) -> logits (B, T, vocab). Random weights from ``seed``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, dim)
            self.pos = nn.Embedding(1024, dim)
            layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True)
            self.body = nn.TransformerEncoder(layer, layers)
            self.head = nn.Linear(dim, vocab)

        def forward(self, ids):  # ids: (B, T) int64
            t = ids.shape[1]
            x = self.embed(ids) + self.pos(torch.arange(t, device=ids.device))  # (B, T, dim)
            mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids.device)
            return self.head(self.body(x, mask=mask, is_causal=True))  # (B, T, vocab)

    return TinyLM().eval()


class _Seq:
    __slots__ = ("ids", "left", "queue", "t_submit", "first_at", "n")

    def __init__(self, ids, left: int, t_submit: float) -> None:
        self.ids, self.left, self.t_submit = ids, left, t_submit
        self.queue: asyncio.Queue = asyncio.Queue()
        self.first_at: float | None = None
        self.n = 0


class TinyTorchEngine:
    """Same interface as :class:`~mixfleet.routing.serve.emulated_engine.EmulatedEngine` (see module doc)."""

    kind = "tiny-torch"

    def __init__(self, replica_id: str, *, max_waiting: int = 64, max_batch: int = 16, window: int = 256,
                 device: str = "cuda", vocab: int = 512) -> None:
        import torch

        self.replica_id, self.max_waiting, self.max_batch, self.window = replica_id, max_waiting, max_batch, window
        self.device, self.vocab = device, vocab
        self.model = build_tiny_lm(vocab).to(device)
        self._torch = torch
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self.tokens = 0
        self.busy_s = 0.0
        self.completed = 0
        self._t0 = time.monotonic()

    def set_speed(self, speed: float) -> None:
        """A real engine cannot be slowed on request; telemetry reports what the GPU really does."""

    def in_system(self) -> int:
        return len(self.waiting) + len(self.running)

    def stats(self) -> dict[str, float]:
        return {"queue_len": float(len(self.waiting)), "running": float(len(self.running)), "kv_frac": 0.0,
                "busy_s": self.busy_s, "profile_s": self.busy_s, "tokens": float(self.tokens), "speed": 1.0,
                "completed": float(self.completed), "model_time_s": time.monotonic() - self._t0}

    async def generate(self, prompt_tokens: int, max_tokens: int):
        if len(self.waiting) >= self.max_waiting:
            raise EngineOverloaded(self.replica_id, len(self.waiting), 1.0)
        g = self._torch.Generator().manual_seed(prompt_tokens * 7919 + max_tokens)
        ids = self._torch.randint(0, self.vocab, (min(prompt_tokens, self.window),), generator=g).tolist()
        seq = _Seq(ids, max_tokens, time.monotonic())
        self.waiting.append(seq)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()
        while True:
            chunk = await seq.queue.get()
            if chunk is None:
                return
            yield chunk

    def _step(self, batch: list[list[int]]) -> list[int]:
        """One forward pass per sequence; the next token of each (greedy)."""
        torch = self._torch
        out = []
        with torch.inference_mode():
            for ids in batch:
                x = torch.tensor([ids[-self.window:]], device=self.device)
                out.append(int(self.model(x)[0, -1].argmax()))
        if self.device == "cuda":
            torch.cuda.synchronize()
        return out

    async def _run(self) -> None:
        while True:
            while self.waiting and len(self.running) < self.max_batch:
                self.running.append(self.waiting.popleft())
            if not self.running:
                self._wake.clear()
                await self._wake.wait()
                continue
            t = time.monotonic()
            nxt = await asyncio.to_thread(self._step, [s.ids for s in self.running])
            now = time.monotonic()
            self.busy_s += now - t
            self.tokens += len(nxt)
            keep = []
            for s, tok in zip(self.running, nxt, strict=True):
                s.ids.append(tok)
                s.left -= 1
                s.n += 1
                first = s.first_at is None
                if first:
                    s.first_at = now
                done = s.left <= 0
                c = Chunk([tok], first=first, done=done)
                if done:
                    c.ttft_s, c.e2e_s = s.first_at - s.t_submit, now - s.t_submit
                    c.t_submit, c.t_end, c.t_emit = s.t_submit, now, now
                s.queue.put_nowait(c)
                if done:
                    s.queue.put_nowait(None)
                    self.completed += 1
                else:
                    keep.append(s)
            self.running = keep
