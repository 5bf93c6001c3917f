"""FS backend: one file per chunk under a directory, on local NVMe or a shared filesystem.

Writes go to a unique temporary name and are renamed into place, so readers (in this or another
process or host) only ever see complete files. The directory is bounded by `capacity_bytes`: when a
write takes this process's view of the total over the bound, the least recently used files are
deleted (reads refresh a file's mtime) until the total is back under 90% of it.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from connector.l2.base import Buffer, L2Backend, L2Error

_SUFFIX = ".kvc"


class FSBackend(L2Backend):
    name = "FS"

    def __init__(self, root: str | os.PathLike[str], *, capacity_bytes: int) -> None:
        self._root = Path(root)
        self._capacity = capacity_bytes
        self._lock = threading.Lock()
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise L2Error(f"FS root {self._root}: {exc.strerror}", "connection") from exc
        self._total = sum(size for _, size, _ in self._scan())

    def _path(self, key: str) -> Path:
        parts = key.split(":")
        digest = parts[-1]
        return self._root.joinpath(*parts[:-1], digest[:2], digest + _SUFFIX)

    def _scan(self) -> list[tuple[Path, int, float]]:
        found = []
        for dirpath, _dirs, files in os.walk(self._root):
            for name in files:
                if name.endswith(_SUFFIX):
                    path = Path(dirpath, name)
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue
                    found.append((path, st.st_size, st.st_mtime))
        return found

    def exists(self, keys: Sequence[str]) -> list[bool]:
        return [self._path(key).is_file() for key in keys]

    def get(self, keys: Sequence[str]) -> list[Buffer | None]:
        out: list[Buffer | None] = []
        for key in keys:
            path = self._path(key)
            try:
                with open(path, "rb") as f:
                    out.append(f.read())
                os.utime(path)
            except FileNotFoundError:
                out.append(None)
            except OSError as exc:
                raise L2Error(f"FS read {path}: {exc.strerror}") from exc
        return out

    def put(self, items: Sequence[tuple[str, Buffer]]) -> None:
        written = 0
        for key, value in items:
            path = self._path(key)
            if path.exists():
                continue
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as f:
                    f.write(value)
                os.replace(tmp, path)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise L2Error(f"FS write {path}: {exc.strerror}") from exc
            written += len(memoryview(value))
        if written:
            with self._lock:
                self._total += written
                over = self._total > self._capacity
            if over:
                self._evict()

    def _evict(self) -> None:
        with self._lock:
            files = sorted(self._scan(), key=lambda item: item[2])
            total = sum(size for _, size, _ in files)
            target = int(self._capacity * 0.9)
            for path, size, _ in files:
                if total <= target:
                    break
                path.unlink(missing_ok=True)
                total -= size
            self._total = total

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            path = self._path(key)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            with self._lock:
                self._total -= size

    @property
    def used_bytes(self) -> int:
        return self._total
