"""The REAL engine's model: a small causal LM from ``transformers`` with seeded RANDOM weights.

No weights are downloaded. A :class:`TorchModelConfig` names a Llama-style
architecture (``transformers.LlamaConfig``) small enough for a CPU, and a
``seed`` that draws its weights: the same config and seed give the same
model, bit for bit, in every process. Its tokens are real compute on random
weights, so they are noise; every output that shows them says so
(:data:`REAL_NOTE`).

Tokenisation is a byte-level fallback (no tokenizer files): a text prompt is
its UTF-8 bytes, one token per byte, so the vocabulary is 256 ids; a
generated id is shown as the character ``chr(id)`` (one character per token,
so a client can recover the ids with ``[ord(c) for c in text]``).

Decoding is greedy: a request's tokens depend only on the prompt, the
weights seed and how many tokens it asks for, so they equal an offline
``model.generate`` of the same prompt (:func:`offline_generate`).

Built-in configurations: :data:`BUILTIN` (``tiny-llama`` is the one the
fleet files, tests and benchmarks use). A YAML file with the fields of
:class:`TorchModelConfig` defines another (``--model-config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mixfleet.errors import ConfigError, unknown_name
from mixfleet.platform.config import StrictModel, load_model

REAL_NOTE = "real compute, random weights"
VOCAB = 256  # byte-level tokens


class TorchModelConfig(StrictModel):
    """A Llama-style architecture plus the seed of its random weights."""

    name: str = "tiny-llama"
    layers: int = Field(default=4, ge=1, le=64)
    hidden: int = Field(default=256, ge=16, le=8192)
    heads: int = Field(default=4, ge=1, le=128)
    kv_heads: int = Field(default=2, ge=1, le=128)
    intermediate: int = Field(default=688, ge=16, le=65536)
    max_context: int = Field(default=1024, ge=64, le=131072)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    seed: int = Field(default=0, ge=0)
    init_std: float = Field(default=0.1, gt=0, le=2.0)  # weight init std: 0.1 gives varied (not looping) greedy tokens

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def bytes_per_value(self) -> int:
        return 4 if self.dtype == "float32" else 2

    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_value

    def params(self) -> int:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        per_layer = h * h * 2 + h * kv * 2 + 3 * h * self.intermediate + 2 * h
        return self.layers * per_layer + 2 * VOCAB * h + h

    def model_profile(self) -> dict:
        """The simulator's :class:`~mixfleet.routing.profiles.ModelProfile` fields for this model."""
        return {"params_b": self.params() / 1e9, "layers": self.layers, "hidden": self.hidden,
                "kv_bytes_per_token": self.kv_bytes_per_token(), "max_context": self.max_context}


BUILTIN: dict[str, TorchModelConfig] = {"tiny-llama": TorchModelConfig()}


def model_config(name_or_path: str | None, seed: int | None = None) -> TorchModelConfig:
    """A built-in config by name, or one read from a YAML/JSON file; ``seed`` overrides its seed."""
    name = name_or_path or "tiny-llama"
    if name in BUILTIN:
        cfg = BUILTIN[name]
    elif Path(name).suffix.lower() in (".yaml", ".yml", ".json"):
        cfg = load_model(name, TorchModelConfig, what="model config")
    else:
        raise unknown_name("real-engine model", name, BUILTIN)
    if cfg.hidden % cfg.heads or cfg.heads % cfg.kv_heads:
        raise ConfigError(f"model config '{cfg.name}': hidden {cfg.hidden} must divide by heads {cfg.heads}, "
                          f"and heads by kv_heads {cfg.kv_heads}", "fix the head counts")
    return cfg if seed is None else cfg.model_copy(update={"seed": seed})


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA GPU is visible, else ``cpu``; ``cuda`` without one is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no CUDA GPU is visible here",
                          "use device 'cpu' (or 'auto')")
    return device


def build_model(cfg: TorchModelConfig, device: str = "cpu"):
    """The ``transformers`` Llama model of ``cfg`` with weights drawn from ``cfg.seed`` (no download)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its warnings about a missing EOS are expected: stopping is by length
    hf = LlamaConfig(vocab_size=VOCAB, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                     num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads,
                     max_position_embeddings=cfg.max_context, bos_token_id=None, eos_token_id=None,
                     pad_token_id=0, tie_word_embeddings=False, initializer_range=cfg.init_std,
                     attn_implementation="sdpa")
    model = LlamaForCausalLM(hf)
    # the weights come from a private generator, not the global RNG that other threads (another engine's
    # generation loop) may draw from meanwhile: Llama's own init (normal(0, std) matrices, unit norms)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        for _name, p in sorted(model.named_parameters()):
            if p.dim() >= 2:
                p.normal_(0.0, cfg.init_std, generator=gen)
            else:
                p.fill_(1.0)
    return model.to(device=device, dtype=getattr(torch, cfg.dtype)).eval()


def generation_config(max_new_tokens: int = 16):
    """Greedy decoding, no EOS (stopping is by length: the request's cap or its hidden true length)."""
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)


def encode_text(text: str) -> list[int]:
    """Byte-level fallback tokeniser: the UTF-8 bytes of ``text``."""
    return list(text.encode("utf-8"))


def encode_chat(messages: list[dict]) -> list[int]:
    """A minimal chat template over the byte tokens: ``<role>content\\n`` per message."""
    return encode_text("".join(f"<{m['role']}>{m['content']}\n" for m in messages))


def decode_ids(ids: list[int]) -> str:
    """One character per token id (``chr(id)``), so the ids survive the text round trip."""
    return "".join(chr(i) for i in ids)


def offline_generate(cfg: TorchModelConfig, prompt_ids: list[int], max_new_tokens: int, model=None) -> list[int]:
    """The tokens ``model.generate`` (no continuous batching) produces for one prompt: the reference output."""
    import torch

    model = model or build_model(cfg)
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids], device=model.device), attention_mask=None,
                             generation_config=generation_config(max_new_tokens))
    return out[0, len(prompt_ids):].tolist()
