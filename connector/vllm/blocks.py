"""Moving whole KV blocks between an engine's paged KV tensors and a chunk payload.

Attention backends lay KV out differently (CPU_ATTN `[blocks, heads, block, 2*head]` with K stored
transposed inside a block, FlashAttention `[2, blocks, block, heads, head]`, FlashInfer
`[blocks, 2, block, heads, head]`, MLA `[blocks, block, latent]`). Inside a block the layout may be
anything, so this module never slices tokens: it finds the block dimension of each layer's tensor
(the one sized `num_blocks`) and copies whole blocks. A chunk payload is, layer by layer (sorted by
name), the chunk's blocks stacked along that layer's block dimension.

The CUDA path (pinned host slots, copies on a side stream) is the same code with the device copy
in between; it is NOT exercised here (no GPU on this project's machines).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class _Layer:
    name: str
    tensor: torch.Tensor
    block_dim: int
    block_bytes: int

    def chunk_view(self, payload: torch.Tensor, offset: int, num_blocks: int) -> torch.Tensor:
        shape = list(self.tensor.shape)
        shape[self.block_dim] = num_blocks
        nbytes = num_blocks * self.block_bytes
        return payload[offset : offset + nbytes].view(self.tensor.dtype).view(shape)


def find_block_dim(shape: torch.Size, num_blocks: int) -> int:
    """The dimension sized `num_blocks` (the first such, among the two leading dimensions)."""
    for dim in (0, 1):
        if dim < len(shape) and shape[dim] == num_blocks:
            return dim
    raise ValueError(f"no block dimension of size {num_blocks} in KV tensor shape {tuple(shape)}")


class KVBlockMover:
    """Gathers/scatters whole blocks of every registered layer into/out of a chunk payload."""

    def __init__(self, kv_caches: dict[str, torch.Tensor], num_blocks: int, blocks_per_chunk: int) -> None:
        if not kv_caches:
            raise ValueError("no KV tensors registered")
        self.blocks_per_chunk = blocks_per_chunk
        self._layers = []
        for name in sorted(kv_caches):
            tensor = kv_caches[name]
            dim = find_block_dim(tensor.shape, num_blocks)
            block_bytes = tensor.numel() // num_blocks * tensor.element_size()
            self._layers.append(_Layer(name, tensor, dim, block_bytes))
        self.device = self._layers[0].tensor.device
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @property
    def payload_bytes(self) -> int:
        return sum(layer.block_bytes for layer in self._layers) * self.blocks_per_chunk

    @property
    def fingerprint(self) -> str:
        """The physical layout as this process sees it (shape with N for the block dimension)."""
        shapes = sorted(
            {
                "x".join("N" if i == layer.block_dim else str(s) for i, s in enumerate(layer.tensor.shape))
                + f":{layer.tensor.dtype}".replace("torch.", "")
                for layer in self._layers
            }
        )
        return f"{len(self._layers)}L:" + ",".join(shapes)

    def gather(self, block_ids: list[int], payload: torch.Tensor) -> None:
        """Copy blocks `block_ids` of every layer into `payload` (a 1-D uint8 host tensor)."""
        index = torch.tensor(block_ids, dtype=torch.long, device=self.device)
        offset = 0
        for layer in self._layers:
            dst = layer.chunk_view(payload, offset, len(block_ids))
            if self._stream is None:
                torch.index_select(layer.tensor, layer.block_dim, index, out=dst)
            else:
                with torch.cuda.stream(self._stream):
                    dst.copy_(layer.tensor.index_select(layer.block_dim, index), non_blocking=True)
            offset += len(block_ids) * layer.block_bytes
        if self._stream is not None:
            self._stream.synchronize()

    def scatter(self, block_ids: list[int], payload: torch.Tensor, skip_blocks: int = 0) -> None:
        """Write a chunk payload back into blocks `block_ids`, leaving the first `skip_blocks` alone."""
        if skip_blocks >= len(block_ids):
            return
        index = torch.tensor(block_ids[skip_blocks:], dtype=torch.long, device=self.device)
        offset = 0
        for layer in self._layers:
            src = layer.chunk_view(payload, offset, len(block_ids))
            if skip_blocks:
                src = src.narrow(layer.block_dim, skip_blocks, len(block_ids) - skip_blocks)
            if self._stream is None:
                layer.tensor.index_copy_(layer.block_dim, index, src)
            else:
                with torch.cuda.stream(self._stream):
                    layer.tensor.index_copy_(layer.block_dim, index, src.to(self.device, non_blocking=True))
            offset += len(block_ids) * layer.block_bytes
        if self._stream is not None:
            self._stream.synchronize()
