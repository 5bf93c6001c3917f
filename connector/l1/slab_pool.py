"""Fixed-size slots carved out of large host-memory slabs, allocated only when needed.

Allocating pinned memory is slow and allocating all of L1 up front delays engine start and invites
OOM kills, so slabs are created one at a time as slots run out. Invariant:
`allocated_bytes <= capacity_bytes` at all times; when no slab fits, `allocate` returns None and the
caller evicts.
"""

from __future__ import annotations

import torch

DEFAULT_SLAB_BYTES = 256 << 20


class SlabPool:
    """Slots of `slot_bytes` each, in slabs of up to `slab_bytes`, within `capacity_bytes`."""

    def __init__(
        self,
        slot_bytes: int,
        capacity_bytes: int,
        *,
        slab_bytes: int = DEFAULT_SLAB_BYTES,
        pin_memory: bool = False,
    ) -> None:
        if slot_bytes <= 0:
            raise ValueError("slot_bytes must be positive")
        self.slot_bytes = slot_bytes
        self.capacity_slots = capacity_bytes // slot_bytes
        self._slots_per_slab = max(1, min(slab_bytes // slot_bytes, self.capacity_slots or 1))
        self._pin = pin_memory
        self._slabs: list[torch.Tensor] = []
        self._free: list[int] = []
        self._created = 0

    @property
    def allocated_bytes(self) -> int:
        return sum(s.numel() for s in self._slabs)

    @property
    def used_slots(self) -> int:
        return self._created - len(self._free)

    def allocate(self) -> int | None:
        """A free slot id, growing by one slab if capacity allows; None when full."""
        if self._free:
            return self._free.pop()
        remaining = self.capacity_slots - self._created
        if remaining <= 0:
            return None
        count = min(self._slots_per_slab, remaining)
        slab = torch.empty(count * self.slot_bytes, dtype=torch.uint8, pin_memory=self._pin)
        base = self._created
        self._slabs.append(slab)
        self._created += count
        self._free.extend(range(base + count - 1, base, -1))
        return base

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def view(self, slot: int) -> torch.Tensor:
        """The slot's bytes as a 1-D uint8 tensor sharing memory with the slab."""
        slab_index, offset = divmod(slot, self._slots_per_slab)
        start = offset * self.slot_bytes
        return self._slabs[slab_index][start : start + self.slot_bytes]
