"""Text of an exact number of tokens in the target's own tokenizer.

Workloads are sized in tokens, not characters: a 2000-token history must be 2000 tokens for the engine
under test. Text is built from single-token words of the tokenizer's vocabulary (so token counts add
up across words) and then checked by encoding it; the invariant is
`len(tokenizer.encode(text)) == n` for every piece returned by `TextSynth.text(n, rng)`.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Protocol

from kvbench.errors import UserError

_WORD = re.compile(r"^ [a-z]{3,12}$")
_MIN_POOL = 16


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def vocab_size(self) -> int: ...


class _FastTokenizer:
    """`tokenizers.Tokenizer` (tokenizer.json): fast, and what the tiny model ships."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._tok = HFTokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=False)


class _TransformersTokenizer:
    """Any local tokenizer `transformers` can load (e.g. sentencepiece models without tokenizer.json)."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def vocab_size(self) -> int:
        return int(self._tok.vocab_size)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load from a model dir, a tokenizer dir or a tokenizer.json file (local files only)."""
    path = Path(path)
    try:
        if path.is_file():
            return _FastTokenizer(path)
        if (path / "tokenizer.json").is_file():
            return _FastTokenizer(path / "tokenizer.json")
        if path.is_dir():
            return _TransformersTokenizer(path)
    except Exception as exc:
        raise UserError(f"{path}: cannot load tokenizer: {type(exc).__name__}: {exc}") from None
    raise UserError(f"{path}: no tokenizer found (want tokenizer.json or a transformers tokenizer dir)")


class TextSynth:
    """Random word text of exact token lengths, reproducible from the caller's `random.Random`."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        pool: list[str] = []
        for token_id in range(tokenizer.vocab_size()):
            piece = tokenizer.decode([token_id])
            if _WORD.match(piece) and tokenizer.encode(piece) == [token_id]:
                pool.append(piece)
        if len(pool) < _MIN_POOL:
            raise UserError(
                f"tokenizer has only {len(pool)} single-token words; cannot size prompts in its tokens"
            )
        pool.sort()
        self._pool = pool

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def text(self, n: int, rng: random.Random) -> str:
        """A string of exactly `n` tokens (no leading space, so it reads as a sentence)."""
        if n <= 0:
            return ""
        words = rng.choices(self._pool, k=n)
        # Dropping the first word's space can split it into several tokens: trim or extend to fit.
        for _ in range(4 * n + 32):
            text = "".join(words)[1:]
            got = self.count(text)
            if got == n:
                return text
            if got > n and len(words) > 1:
                words.pop()
            else:
                words.append(rng.choice(self._pool))
        raise UserError(f"cannot build a text of exactly {n} tokens with this tokenizer")
