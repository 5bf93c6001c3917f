"""Write an offline Llama model directory that vLLM loads like any Hugging Face checkpoint.

Invariants:
- The directory is a pure function of (preset, seed, FORMAT_VERSION, the shipped corpus): the same
  arguments give byte-identical files on every run (no timestamps, no library versions in files,
  JSON with sorted keys, weights drawn in a fixed order).
- Weights are real random values, not `--load-format dummy` zeros: uniform with standard deviation
  `initializer_range`, drawn from `torch.Generator().manual_seed(seed)` as exact uniform floats and
  rounded to bf16, so the output depends on the KV cache and a wrong cache changes the tokens.
- A directory is complete only once its marker file exists; the marker is written last and the
  directory is swapped into place with a rename, so an interrupted build never looks complete.
- An existing non-empty directory is replaced only if our marker says we made it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kvbench.errors import UserError
from kvbench.model.presets import ModelPreset, get_preset
from kvbench.model.tokenizer import (
    BOS,
    EOS,
    PAD,
    corpus_text,
    special_tokens_map,
    tokenizer_config,
    train_tokenizer,
)

FORMAT_VERSION = 1
MARKER = ".kvbench-model.json"
MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
)


def build_key(preset: str, seed: int) -> str:
    """Hash of everything the files depend on; a marker with another key means "rebuild"."""
    payload = {
        "format_version": FORMAT_VERSION,
        "preset": get_preset(preset).as_dict(),
        "seed": seed,
        "corpus_sha256": hashlib.sha256(corpus_text().encode("utf-8")).hexdigest(),
    }
    return hashlib.sha256(_json_bytes(payload)).hexdigest()


def make_tiny(out_dir: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Build the model for (`preset`, `seed`) into `out_dir` and return `out_dir`.

    Raises UserError for an unknown preset, a negative seed, or an `out_dir` that is a file or a
    non-empty directory kvbench did not make.
    """
    out_dir = Path(out_dir)
    spec = get_preset(preset)
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    _check_replaceable(out_dir)
    key = build_key(preset, seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        _write_model(staging, spec, seed)
        marker = {"kind": "kvbench-model", "preset": preset, "seed": seed, "key": key}
        (staging / MARKER).write_bytes(_json_bytes(marker))
        _apply_umask(staging)
        _swap_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def ensure_tiny(cache_dir: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """`cache_dir/<preset>-seed<seed>`, built only if it is missing, incomplete or out of date.

    Builders serialise on a lock file next to the directory, so concurrent test sessions and
    `kvbench run`s build it once and never replace a complete directory another one is serving.
    """
    get_preset(preset)
    target = Path(cache_dir) / f"{preset}-seed{seed}"
    if is_complete(target, preset, seed):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_complete(target, preset, seed):
            make_tiny(target, preset=preset, seed=seed)
    if not is_complete(target, preset, seed):
        raise UserError(f"could not build the {preset} model in {target}")
    return target


def is_complete(model_dir: Path, preset: str, seed: int) -> bool:
    """Whether `model_dir` holds every file and a marker for exactly these arguments."""
    marker = _read_marker(Path(model_dir))
    if marker is None or marker.get("key") != build_key(preset, seed):
        return False
    return all((Path(model_dir) / name).is_file() for name in MODEL_FILES)


def llama_config(spec: ModelPreset, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> dict[str, Any]:
    """`config.json` for LlamaForCausalLM; rope given both ways so transformers 4 and 5 read it."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "initializer_range": spec.initializer_range,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": vocab_size,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "dtype": "bfloat16",
        "torch_dtype": "bfloat16",
    }


def weight_shapes(spec: ModelPreset, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of the Hugging Face Llama checkpoint layout, in the order they are drawn."""
    h, i, d = spec.hidden_size, spec.intermediate_size, spec.head_dim
    q, kv = spec.num_attention_heads * d, spec.num_key_value_heads * d
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, h)}
    for layer in range(spec.num_hidden_layers):
        p = f"model.layers.{layer}"
        shapes |= {
            f"{p}.input_layernorm.weight": (h,),
            f"{p}.self_attn.q_proj.weight": (q, h),
            f"{p}.self_attn.k_proj.weight": (kv, h),
            f"{p}.self_attn.v_proj.weight": (kv, h),
            f"{p}.self_attn.o_proj.weight": (h, q),
            f"{p}.post_attention_layernorm.weight": (h,),
            f"{p}.mlp.gate_proj.weight": (i, h),
            f"{p}.mlp.up_proj.weight": (i, h),
            f"{p}.mlp.down_proj.weight": (h, i),
        }
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (vocab_size, h)
    return shapes


def random_weights(spec: ModelPreset, vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """Norm weights are ones (as Llama initialises them); all others uniform with std `initializer_range`.

    Uniform floats from torch's generator are exact (random bits times a power of two), so unlike
    `randn`, whose vectorised kernels differ between CPUs, the values are the same on every machine.
    """
    generator = torch.Generator().manual_seed(seed)
    half_width = spec.initializer_range * math.sqrt(3.0)
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in weight_shapes(spec, vocab_size).items():
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
            continue
        uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
        tensors[name] = ((uniform * 2.0 - 1.0) * half_width).to(torch.bfloat16)
    return tensors


def _write_model(directory: Path, spec: ModelPreset, seed: int) -> None:
    tokenizer = train_tokenizer()
    vocab_size = tokenizer.get_vocab_size()
    ids = {tok: tokenizer.token_to_id(tok) for tok in (BOS, EOS, PAD)}
    (directory / "tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_bytes(
        _json_bytes(tokenizer_config(spec.max_position_embeddings))
    )
    (directory / "special_tokens_map.json").write_bytes(_json_bytes(special_tokens_map()))
    config = llama_config(spec, vocab_size, bos_id=ids[BOS], eos_id=ids[EOS], pad_id=ids[PAD])
    (directory / "config.json").write_bytes(_json_bytes(config))
    save_file(
        random_weights(spec, vocab_size, seed), directory / "model.safetensors", metadata={"format": "pt"}
    )


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.is_file() or out_dir.is_symlink():
        raise UserError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and _read_marker(out_dir) is None:
        raise UserError(f"{out_dir} is not empty and was not made by kvbench; choose a new directory")


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Replace `out_dir` by `staging` with two renames, so readers see the old or the new tree."""
    if out_dir.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        try:
            os.replace(out_dir, retired / "model")
        finally:
            shutil.rmtree(retired, ignore_errors=True)
    os.rename(staging, out_dir)


def _apply_umask(directory: Path) -> None:
    """Give the staged tree ordinary permissions (mkdtemp and safetensors create owner-only ones)."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def _read_marker(model_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((model_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "kvbench-model" else None


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
