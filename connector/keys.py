"""Chunk keys: a chain of strong hashes that names a whole token prefix, inside a namespace.

A chunk key is `blake2b(parent_hash || token_ids)` where the first parent is the namespace seed, so
equal keys mean "the same tokens from the start of the sequence, for the same model, dtype, layout
and geometry". The rank identity and the user namespace are part of the storage key, so two ranks,
models or tenants never read each other's chunks. Hashing uses only bytes derived from the inputs:
keys are identical across processes and machines (PYTHONHASHSEED plays no part).
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

_HASH_BYTES = 32
_SAFE_USER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class KeyNamespace:
    """Everything that must match for two chunks to be interchangeable.

    `model` should identify the weights (name or path plus anything that changes them);
    `kv_layout` names the attention backend's tensor layout; ranks name the shard.
    """

    model: str
    kv_dtype: str
    kv_layout: str
    block_size: int
    chunk_size: int
    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1
    user: str = "aibrix"

    def __post_init__(self) -> None:
        if not _SAFE_USER.match(self.user) or not self.user.strip("."):
            raise ValueError(
                f"namespace {self.user!r}: expected 1-64 characters of A-Z a-z 0-9 . _ -, not only dots"
            )
        if self.chunk_size <= 0 or self.block_size <= 0 or self.chunk_size % self.block_size:
            raise ValueError(
                f"chunk size {self.chunk_size} must be a positive multiple of block size {self.block_size}"
            )
        if not (0 <= self.tp_rank < self.tp_size and 0 <= self.pp_rank < self.pp_size):
            raise ValueError(
                f"rank tp{self.tp_rank}/{self.tp_size} pp{self.pp_rank}/{self.pp_size} is out of range"
            )

    @property
    def seed(self) -> bytes:
        """Root of every hash chain: digest of the model-level identity (rank-independent)."""
        identity = "\x1f".join(
            [
                "kvbench-chunk-v1",
                self.model,
                self.kv_dtype,
                self.kv_layout,
                str(self.block_size),
                str(self.chunk_size),
                str(self.tp_size),
                str(self.pp_size),
            ]
        )
        return hashlib.blake2b(identity.encode(), digest_size=_HASH_BYTES).digest()

    @property
    def prefix(self) -> str:
        """Storage-key prefix: user namespace, model-level digest, and this shard's rank."""
        return f"{self.user}:{self.seed.hex()[:32]}:tp{self.tp_rank}pp{self.pp_rank}"

    def for_rank(self, tp_rank: int, pp_rank: int | None = None) -> KeyNamespace:
        from dataclasses import replace

        return replace(self, tp_rank=tp_rank, pp_rank=self.pp_rank if pp_rank is None else pp_rank)

    def storage_key(self, chain_hash: bytes) -> str:
        return f"{self.prefix}:{chain_hash.hex()}"


def chain_hashes(
    seed_or_parent: bytes,
    token_ids: Sequence[int],
    chunk_size: int,
    *,
    start: int = 0,
    limit: int | None = None,
) -> list[bytes]:
    """Hashes of the full chunks of `token_ids[start:]`, chained from `seed_or_parent`.

    `start` must be a chunk boundary whose parent hash is `seed_or_parent` (the namespace seed when
    `start == 0`), so callers can extend a request's chain as its tokens grow without rehashing.
    A trailing partial chunk has no key. At most `limit` hashes are returned.
    """
    if start % chunk_size:
        raise ValueError(f"start {start} is not a multiple of the chunk size {chunk_size}")
    hashes: list[bytes] = []
    parent = seed_or_parent
    end = start + ((len(token_ids) - start) // chunk_size) * chunk_size
    for begin in range(start, end, chunk_size):
        if limit is not None and len(hashes) >= limit:
            break
        tokens = array("I", token_ids[begin : begin + chunk_size]).tobytes()
        parent = hashlib.blake2b(parent + tokens, digest_size=_HASH_BYTES).digest()
        hashes.append(parent)
    return hashes


def chunk_keys(namespace: KeyNamespace, token_ids: Sequence[int], *, limit: int | None = None) -> list[str]:
    """Storage keys of every full chunk of `token_ids`, in order, for `namespace`'s rank."""
    return [
        namespace.storage_key(h)
        for h in chain_hashes(namespace.seed, token_ids, namespace.chunk_size, limit=limit)
    ]
