"""Sizes of the offline Llama models kvbench builds.

`tiny` keeps integration tests fast; `bench` is sized so that, in vLLM CPU on a 2-core
machine, a 3000-token prefill costs about one second (measured 0.93-1.09 s, versus ~0.05 s on a
prefix-cache hit): recompute is then clearly dearer than loading KV, which an offloading benchmark
needs to show. Both use head_dim 64 and grouped-query attention, like current Llama models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kvbench.errors import UserError


@dataclass(frozen=True)
class ModelPreset:
    """Architecture of one preset; vocabulary and special tokens come from the shared tokenizer."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int = 16384
    initializer_range: float = 0.2
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(
        name="tiny",
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    ),
    "bench": ModelPreset(
        name="bench",
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=64,
    ),
}


def get_preset(name: str) -> ModelPreset:
    """The preset called `name`, or a one-line UserError listing the valid names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
