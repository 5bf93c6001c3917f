"""The contract every L2 store implements: batched, blocking primitives over many keys.

Backends are deliberately simple and synchronous; `L2Client` adds the asynchrony, timeouts,
batching and outage handling once for all of them. A backend raises `L2Error` (or lets its client
library's exception escape) on failure; it never returns partial garbage: `get` gives either the
exact bytes stored or None.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

Buffer = bytes | bytearray | memoryview


class L2Error(Exception):
    """An L2 operation failed; `kind` is a short metric label (connection, timeout, error)."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class L2Backend(ABC):
    """A shared key-value store for chunks, addressed by storage key strings."""

    name: str = "L2"

    @abstractmethod
    def exists(self, keys: Sequence[str]) -> list[bool]: ...

    @abstractmethod
    def get(self, keys: Sequence[str]) -> list[Buffer | None]: ...

    @abstractmethod
    def put(self, items: Sequence[tuple[str, Buffer]]) -> None:
        """Store every item; an existing value under the same key may be kept or replaced."""

    @abstractmethod
    def delete(self, keys: Sequence[str]) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""
