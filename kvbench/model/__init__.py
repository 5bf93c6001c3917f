"""Offline Llama models for tests and benchmarks: no download, same bytes on every machine."""

from kvbench.model.build import ensure_tiny, is_complete, make_tiny
from kvbench.model.presets import PRESETS, ModelPreset, get_preset

__all__ = ["PRESETS", "ModelPreset", "ensure_tiny", "get_preset", "is_complete", "make_tiny"]
