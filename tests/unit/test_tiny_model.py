"""The offline model builder: determinism, tokenizer, chat template, config, weights, errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from kvbench.errors import UserError
from kvbench.model import PRESETS, ensure_tiny, make_tiny
from kvbench.model.build import MARKER, MODEL_FILES, weight_shapes
from kvbench.model.tokenizer import BOS, EOS, PAD, VOCAB_SIZE


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "model")


def test_same_arguments_give_byte_identical_files_across_processes(tiny: Path, tmp_path: Path) -> None:
    """A second build in a fresh interpreter (new hash seeds, new RNG state) matches byte for byte."""
    other = tmp_path / "again"
    subprocess.run(
        [sys.executable, "-m", "kvbench.cli", "model", "make-tiny", str(other)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert set(_digests(tiny)) == {*MODEL_FILES, MARKER}
    assert _digests(other) == _digests(tiny)


def test_seed_changes_weights_but_not_tokenizer(tiny: Path, tmp_path: Path) -> None:
    other = make_tiny(tmp_path / "seed1", seed=1)
    a, b = _digests(tiny), _digests(other)
    assert a["model.safetensors"] != b["model.safetensors"]
    assert a["tokenizer.json"] == b["tokenizer.json"]
    assert a["config.json"] == b["config.json"]


@pytest.mark.parametrize(
    "text",
    [
        "The engineer repaired the wooden boat near the station.",
        "Unseen words: quixotic zeppelin, 3.14159 and user@example.com\n\ttabs",
        "héllo wörld ✓ 日本語 🚀",
    ],
)
def test_tokenizer_round_trips_text_and_starts_with_bos(tiny: Path, text: str) -> None:
    tokenizer = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    ids = tokenizer.encode(text).ids
    assert ids[0] == tokenizer.token_to_id(BOS)
    assert BOS not in tokenizer.decode(ids, skip_special_tokens=True)
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_compresses_english_and_has_fixed_vocabulary(tiny: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == VOCAB_SIZE
    sentence = "Yesterday, the old baker carried a basket of apples across the harbour."
    assert len(tokenizer.encode(sentence).ids) < len(sentence) / 3


def test_chat_template_renders_turns_and_generation_prompt(tiny: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    with_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert with_prompt == f"{BOS}<|system|>\nBe brief.{EOS}\n<|user|>\nHi there{EOS}\n<|assistant|>\n"
    assert with_prompt == without + "<|assistant|>\n"
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.convert_ids_to_tokens(ids[-2]) == "<|assistant|>"
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS, EOS, PAD)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_and_weights_match_the_preset(preset: str, tiny: Path, tmp_path: Path) -> None:
    model_dir = tiny if preset == "tiny" else make_tiny(tmp_path / preset, preset=preset)
    spec = PRESETS[preset]
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] == spec.hidden_size
    assert config["intermediate_size"] == spec.intermediate_size
    assert config["num_hidden_layers"] == spec.num_hidden_layers
    assert config["num_key_value_heads"] == spec.num_key_value_heads
    assert (config["num_attention_heads"], config["head_dim"]) == (spec.num_attention_heads, spec.head_dim)
    assert config["max_position_embeddings"] >= 8192
    assert config["vocab_size"] == tokenizer.get_vocab_size()
    assert config["bos_token_id"] == tokenizer.token_to_id(BOS)
    assert config["eos_token_id"] == tokenizer.token_to_id(EOS)

    weights = load_file(str(model_dir / "model.safetensors"))
    expected = weight_shapes(spec, config["vocab_size"])
    assert {name: tuple(t.shape) for name, t in weights.items()} == expected
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert torch.equal(weights["model.norm.weight"], torch.ones(spec.hidden_size, dtype=torch.bfloat16))
    q = weights["model.layers.0.self_attn.q_proj.weight"].float()
    assert abs(q.std().item() - spec.initializer_range) < 0.01
    assert abs(q.mean().item()) < 0.01


def test_tiny_preset_is_the_small_one() -> None:
    tiny, bench = PRESETS["tiny"], PRESETS["bench"]
    assert (tiny.hidden_size, tiny.intermediate_size, tiny.num_hidden_layers) == (256, 512, 4)
    assert (tiny.num_attention_heads, tiny.num_key_value_heads, tiny.head_dim) == (4, 2, 64)
    assert bench.hidden_size * bench.intermediate_size > tiny.hidden_size * tiny.intermediate_size


def test_unknown_preset_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown model preset 'huge'; choose one of: tiny, bench"):
        make_tiny(tmp_path / "m", preset="huge")
    assert not (tmp_path / "m").exists()


def test_foreign_non_empty_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and was not made by kvbench"):
        make_tiny(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_file_path_and_negative_seed_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is not a directory"):
        make_tiny(tmp_path / "f")
    with pytest.raises(UserError, match="seed must be >= 0"):
        make_tiny(tmp_path / "m", seed=-1)


def test_empty_or_own_directory_is_rebuilt(tiny: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _digests(make_tiny(empty)) == _digests(tiny)
    make_tiny(empty, seed=3)
    assert _digests(empty)["model.safetensors"] != _digests(tiny)["model.safetensors"]


def test_cli_reports_bad_input_as_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kvbench.cli import main

    monkeypatch.setattr(
        sys, "argv", ["kvbench", "model", "make-tiny", str(tmp_path / "m"), "--preset", "huge"]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip().count("\n") == 0
    assert "unknown model preset 'huge'" in err
    assert not (tmp_path / "m").exists()


def test_ensure_tiny_reuses_a_complete_directory_and_repairs_a_broken_one(tmp_path: Path) -> None:
    first = ensure_tiny(tmp_path, "tiny", 0)
    weights = first / "model.safetensors"
    inode = weights.stat().st_ino
    assert ensure_tiny(tmp_path, "tiny", 0) == first
    assert weights.stat().st_ino == inode

    (first / "tokenizer.json").unlink()
    repaired = ensure_tiny(tmp_path, "tiny", 0)
    assert (repaired / "tokenizer.json").is_file()

    (first / MARKER).write_text(json.dumps({"kind": "kvbench-model", "key": "stale"}))
    ensure_tiny(tmp_path, "tiny", 0)
    assert json.loads((first / MARKER).read_text())["key"] != "stale"
    assert ensure_tiny(tmp_path, "tiny", 1) != first
