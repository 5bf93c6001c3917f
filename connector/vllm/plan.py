"""What the scheduler side asks the workers to move in one engine step, and what they report back.

Plain picklable data: chunk identities (chain hashes, never storage keys, so each rank derives its
own), engine block ids, and token ids when token validation is on. No tensors cross processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorMetadata, KVConnectorWorkerMetadata


@dataclass
class ChunkTransfer:
    """One chunk between the cache and the engine's paged KV.

    `block_ids` are the engine blocks holding the chunk's tokens, in order. On load, the first
    `skip_blocks` of them are the engine's own prefix-cache blocks (shared with other requests) and
    must not be written.
    """

    chain_hash: bytes
    block_ids: list[int]
    skip_blocks: int = 0
    token_ids: list[int] | None = None

    @property
    def written_blocks(self) -> list[int]:
        return self.block_ids[self.skip_blocks :]


@dataclass
class LoadJob:
    """Chunks to load for one request: synchronously before this step's forward, or in the
    background with completion reported through `get_finished`."""

    req_id: str
    chunks: list[ChunkTransfer]
    asynchronous: bool


@dataclass
class StepPlan(KVConnectorMetadata):
    loads: list[LoadJob] = field(default_factory=list)
    saves: list[ChunkTransfer] = field(default_factory=list)


@dataclass
class L1Report(KVConnectorWorkerMetadata):
    """Per TP rank, the chunks that entered (True) or left (False) its L1 this step, in order."""

    events: dict[int, list[tuple[bytes, bool]]] = field(default_factory=dict)

    def aggregate(self, other: KVConnectorWorkerMetadata) -> KVConnectorWorkerMetadata:
        assert isinstance(other, L1Report)
        merged = {rank: list(events) for rank, events in self.events.items()}
        for rank, events in other.events.items():
            merged.setdefault(rank, []).extend(events)
        return L1Report(merged)
