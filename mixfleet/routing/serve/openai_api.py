"""OpenAI-compatible request parsing and response shaping (no Ray, no web framework).

Covers ``POST /v1/completions`` and ``POST /v1/chat/completions``, plain
and SSE streaming, as the official ``openai`` client speaks them. Every bad
input raises :class:`~mixfleet.errors.InputError` naming the field, the bad
value and what to do (the ingress turns it into HTTP 400 with OpenAI's
error shape, or gRPC INVALID_ARGUMENT).

EMULATION: with the emulated engine there is no real tokenizer or model.
Prompt tokens are counted with a simple word/punctuation splitter (a list
of token ids counts as given), and generated tokens are ids turned into
placeholder words; the model always generates ``max_tokens`` tokens
(``finish_reason: "length"``). Responses say ``"system_fingerprint":
"mixfleet-emulated"`` so nobody mistakes them for model output.

REAL engine (``engine: torch``): prompts are tokenised by a byte-level
fallback (text -> UTF-8 bytes; token ids must be bytes, 0..255), generated
ids are shown one character each (``chr(id)``), and responses say
``"system_fingerprint": "mixfleet-torch (real compute, random weights)"``.

Trace replay extension: ``"true_output_tokens": N`` in the body is the
request's hidden true output length: the engine stops there (as if the
model emitted EOS; ``finish_reason: "stop"``); the router never sees it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass

from mixfleet.errors import InputError
from mixfleet.platform.jsonbody import loads_body

_TOKEN = re.compile(r"\w+|[^\w\s]")
CHAT_OVERHEAD_TOKENS = 4  # per message: role and separators of a chat template
MAX_REQUEST_BYTES = 4 * 1024 * 1024
_WORDS = ("the", "fleet", "routes", "tokens", "across", "mixed", "GPUs", "while", "queues", "stay", "short",
          "and", "latency", "falls", "on", "every", "replica", "of", "A100", "V100", "T4", "plans", "load",
          "with", "care", "so", "that", "tails", "shrink", "again", "today", "now")


def count_tokens(text: str) -> int:
    """EMULATED tokenizer: words and punctuation marks (about 1.3 BPE tokens per English word less)."""
    return len(_TOKEN.findall(text))


def detokenize(ids: list[int]) -> str:
    """EMULATED detokenizer: placeholder words, one per token id."""
    return "".join(" " + _WORDS[i % len(_WORDS)] for i in ids)


@dataclass(frozen=True)
class GenRequest:
    """A validated generation request."""

    kind: str  # "completion" | "chat"
    model: str
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool = False
    prompt_ids: tuple[int, ...] | None = None  # byte-level tokens (real engine), else None
    true_output: int | None = None  # hidden true output length (trace replay), else None


def fingerprint(engine: str) -> str:
    return "mixfleet-torch (real compute, random weights)" if engine == "torch" else f"mixfleet-{engine}"


def finish_reason(req: GenRequest, completion_tokens: int) -> str:
    return "length" if completion_tokens >= req.max_tokens else "stop"


def _bad(field: str, value, why: str, fix: str) -> InputError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return InputError(f"bad '{field}' {shown}: {why}", fix)


def parse_body(raw: bytes) -> dict:
    """The JSON object of a request body, or an InputError saying what is wrong with it."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise InputError(f"request body of {len(raw)} bytes is too large (limit {MAX_REQUEST_BYTES})",
                         "send a shorter prompt")
    body = loads_body(raw, example="{\"model\": ..., \"prompt\": ...}")
    if not isinstance(body, dict):
        raise InputError(f"the request body is a JSON {type(body).__name__}, not an object",
                         "send a JSON object such as {\"model\": ..., \"prompt\": ...}")
    return body


def _prompt_tokens(prompt, nested: bool = False) -> int:
    if isinstance(prompt, str):
        return count_tokens(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        if any(t < 0 for t in prompt):
            raise _bad("prompt", prompt, "token ids must be >= 0", "send token ids or a string")
        return len(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)) and not nested:
        return _prompt_tokens(prompt[0], nested=True)  # ["text"] or [[ids]]: one level, as OpenAI's API
    if isinstance(prompt, list) and len(prompt) > 1:
        raise _bad("prompt", prompt, "batched prompts are not supported", "send one prompt per request")
    raise _bad("prompt", prompt, "expected a string or a list of token ids", "e.g. \"prompt\": \"Hello\"")


def _chat_tokens(messages) -> int:
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", messages, "expected a non-empty list of {role, content} objects",
                   "e.g. \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]")
    total = 0
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise _bad(f"messages[{k}]", m, "each message needs a 'role' and a 'content'",
                       "e.g. {\"role\": \"user\", \"content\": \"Hi\"}")
        if m["role"] not in ("system", "user", "assistant", "tool", "developer"):
            raise _bad(f"messages[{k}].role", m["role"], "unknown role",
                       "use system, user, assistant, tool or developer")
        content = m.get("content")
        if isinstance(content, list):  # content parts: count the text parts
            texts = [p.get("text", "") for p in content if isinstance(p, dict)]
            if not all(isinstance(t, str) for t in texts):
                raise _bad(f"messages[{k}].content", content, "a content part's 'text' must be a string",
                           "e.g. [{\"type\": \"text\", \"text\": \"Hi\"}]")
            content = " ".join(texts)
        if not isinstance(content, str):
            raise _bad(f"messages[{k}].content", content, "expected a string", "send text content")
        total += count_tokens(content) + CHAT_OVERHEAD_TOKENS
    return total


def _byte_prompt(body: dict, kind: str) -> tuple[int, ...]:
    """The real engine's prompt tokens (byte-level fallback); the body is already validated."""
    from mixfleet.routing.torch_model import encode_chat, encode_text

    if kind == "chat":
        msgs = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                 " ".join(p.get("text", "") for p in m["content"] if isinstance(p, dict))} for m in body["messages"]]
        return tuple(encode_chat(msgs))
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tuple(encode_text(prompt)) or (32,)
    if any(t > 255 for t in prompt):
        raise _bad("prompt", prompt, "the real engine's token ids are bytes (0..255)", "send text or byte ids")
    return tuple(prompt)


def parse_request(body: dict, kind: str, *, models: list[str], max_context: int,
                  default_max_tokens: int = 16, byte_tokens: bool = False) -> GenRequest:
    """Validate a completions (``kind="completion"``) or chat (``"chat"``) body.

    ``byte_tokens``: the fleet has real-engine replicas, so prompts are their byte-level tokens."""
    if "model" not in body:
        raise InputError("missing field 'model'", f"add \"model\": \"{models[0]}\" (GET /v1/models lists them)")
    model = body["model"]
    if model not in models:
        from mixfleet.errors import did_you_mean

        raise InputError(f"unknown model {model!r}{did_you_mean(str(model), models)}",
                         f"this server serves: {', '.join(models)}")
    if kind == "completion":
        if "prompt" not in body:
            raise InputError("missing field 'prompt'", "add \"prompt\": \"...\" (a string or a list of token ids)")
        prompt = _prompt_tokens(body["prompt"])
    else:
        if "messages" not in body:
            raise InputError("missing field 'messages'", "add \"messages\": [{\"role\": \"user\", \"content\": \"...\"}]")
        prompt = _chat_tokens(body["messages"])
    prompt_ids = _byte_prompt(body, kind) if byte_tokens else None
    prompt = len(prompt_ids) if prompt_ids is not None else max(1, prompt)
    key = "max_tokens"
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        key = "max_completion_tokens"
    max_tokens = body.get(key)
    if max_tokens is None:
        max_tokens = min(default_max_tokens, max(1, max_context - prompt))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _bad(key, max_tokens, "expected an integer", "e.g. \"max_tokens\": 64")
    if max_tokens <= 0:
        raise _bad(key, max_tokens, "must be at least 1", "ask for 1 or more tokens")
    if max_tokens > max_context:
        raise _bad(key, max_tokens, f"exceeds the model's context of {max_context} tokens",
                   f"ask for at most {max_context - prompt} tokens")
    if prompt + max_tokens > max_context:
        raise InputError(f"the prompt ({prompt} tokens) plus max_tokens ({max_tokens}) exceeds the context limit "
                         f"of {max_context} tokens", f"shorten the prompt or ask for at most "
                         f"{max(0, max_context - prompt)} tokens")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream", stream, "expected true or false", "e.g. \"stream\": true")
    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        raise _bad("n", n, "only one choice per request is supported", "send n=1 (or leave it out)")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise _bad("stream_options", opts, "expected an object", "e.g. \"stream_options\": {\"include_usage\": true}")
    include_usage = opts.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise _bad("stream_options.include_usage", include_usage, "expected true or false", "e.g. true")
    true_output = body.get("true_output_tokens")
    if true_output is not None and (isinstance(true_output, bool) or not isinstance(true_output, int)
                                    or true_output < 1):
        raise _bad("true_output_tokens", true_output, "expected an integer >= 1", "e.g. \"true_output_tokens\": 40")
    return GenRequest(kind, model, prompt, max_tokens, stream, include_usage, prompt_ids, true_output)


# -- responses ------------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(req: GenRequest, completion_tokens: int) -> dict:
    return {"prompt_tokens": req.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": req.prompt_tokens + completion_tokens}


def full_response(req: GenRequest, rid: str, text: str, completion_tokens: int, replica: dict) -> dict:
    base = {"id": rid, "created": int(time.time()), "model": req.model,
            "system_fingerprint": fingerprint(replica.get("engine", "emulated")),
            "usage": usage(req, completion_tokens), "mixfleet": replica}
    reason = finish_reason(req, completion_tokens)
    if req.kind == "chat":
        return {**base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": reason, "logprobs": None}]}
    return {**base, "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}]}


def stream_chunk(req: GenRequest, rid: str, text: str, *, first: bool = False, finish: bool = False,
                 engine: str = "emulated", reason: str = "length") -> dict:
    base = {"id": rid, "created": int(time.time()), "model": req.model, "system_fingerprint": fingerprint(engine)}
    reason = reason if finish else None
    if req.kind == "chat":
        delta: dict = {"content": text} if text or not finish else {}
        if first:
            delta["role"] = "assistant"
        return {**base, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}
    return {**base, "object": "text_completion",
            "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": None}]}


def usage_chunk(req: GenRequest, rid: str, completion_tokens: int) -> dict:
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return {"id": rid, "created": int(time.time()), "model": req.model, "object": obj, "choices": [],
            "usage": usage(req, completion_tokens)}


def sse(obj: dict | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def error_body(message: str, *, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
