"""The byte-level BPE tokenizer of the offline models, trained on text that ships in this package.

Invariants: training is a pure function of `corpus.txt` and the constants below (the `tokenizers` BPE
trainer breaks ties deterministically), so every machine gets the same `tokenizer.json`. Byte-level
means any UTF-8 text encodes without unknown tokens. Every encoding starts with BOS, as Llama's do;
the chat template writes BOS itself and engines tokenize its output without adding special tokens.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 2048
PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS)

# Each turn is `<|role|>\n{content}<|eos|>\n`; the generation prompt opens an assistant turn, so a
# model that emits EOS ends exactly one turn.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>\\n' + (message['content'] or '') + eos_token + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"
)


def corpus_text() -> str:
    """The shipped training text (original prose, identical on every machine)."""
    return resources.files("kvbench.model").joinpath("corpus.txt").read_text(encoding="utf-8")


def train_tokenizer() -> Tokenizer:
    """Train the BPE tokenizer; the result has exactly `VOCAB_SIZE` tokens, specials first (ids 0-5)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_text().split("\n\n"), trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    if tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} tokens, expected {VOCAB_SIZE}")
    return tokenizer


def tokenizer_config(model_max_length: int) -> dict[str, Any]:
    """`tokenizer_config.json` for transformers' fast tokenizer, with the chat template."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def special_tokens_map() -> dict[str, str]:
    return {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
