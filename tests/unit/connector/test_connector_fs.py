"""FS backend on a real directory: atomic writes, layout under the root, byte bound with eviction."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from connector.l2.base import L2Error
from connector.l2.fs import FSBackend

SIZE = 1000


def _key(i: int) -> str:
    return f"aibrix:{'ab' * 16}:tp0pp0:{i:064x}"


def _value(i: int) -> bytes:
    return bytes([i % 256]) * SIZE


def _age(backend: FSBackend, key: str, mtime: float) -> None:
    os.utime(backend._path(key), (mtime, mtime))


def test_round_trip_exists_delete(tmp_path: Path) -> None:
    fs = FSBackend(tmp_path, capacity_bytes=1 << 20)
    fs.put([(_key(1), _value(1)), (_key(2), memoryview(_value(2)))])
    assert fs.exists([_key(1), _key(2), _key(3)]) == [True, True, False]
    assert fs.get([_key(2), _key(3), _key(1)]) == [_value(2), None, _value(1)]
    fs.delete([_key(1), _key(3)])
    assert fs.exists([_key(1)]) == [False]
    assert fs.used_bytes == SIZE


def test_files_stay_under_the_root(tmp_path: Path) -> None:
    fs = FSBackend(tmp_path / "root", capacity_bytes=1 << 20)
    fs.put([(_key(1), _value(1))])
    (path,) = list((tmp_path / "root").rglob("*.kvc"))
    assert path.is_relative_to(tmp_path / "root")
    assert path.read_bytes() == _value(1)


def test_existing_chunk_is_not_replaced(tmp_path: Path) -> None:
    fs = FSBackend(tmp_path, capacity_bytes=1 << 20)
    fs.put([(_key(1), _value(1))])
    fs.put([(_key(1), _value(9))])
    assert fs.get([_key(1)]) == [_value(1)]
    assert fs.used_bytes == SIZE


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    fs = FSBackend(tmp_path, capacity_bytes=1 << 20)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for i in range(20):
                fs.put([(_key(i), _value(i))])  # every thread writes the same keys
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    names = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert len(names) == 20 and all(n.endswith(".kvc") and not n.startswith(".") for n in names)
    assert fs.get([_key(i) for i in range(20)]) == [_value(i) for i in range(20)]


def test_failed_write_removes_its_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FSBackend(tmp_path, capacity_bytes=1 << 20)

    def no_rename(src, dst) -> None:
        assert Path(src).is_file(), "the data is written to a temporary file first"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("connector.l2.fs.os.replace", no_rename)
    with pytest.raises(L2Error):
        fs.put([(_key(1), _value(1))])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert fs.exists([_key(1)]) == [False]
    assert fs.used_bytes == 0


def test_capacity_bound_evicts_the_oldest(tmp_path: Path) -> None:
    fs = FSBackend(tmp_path, capacity_bytes=int(4.5 * SIZE))
    for i in range(4):
        fs.put([(_key(i), _value(i))])
        _age(fs, _key(i), 1_000_000 + i)
    fs.put([(_key(4), _value(4))])  # over the bound: down to 90% of it
    assert fs.exists([_key(i) for i in range(5)]) == [False, True, True, True, True]
    assert fs.used_bytes <= int(4.5 * SIZE)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.kvc")) == fs.used_bytes


def test_reads_refresh_age(tmp_path: Path) -> None:
    fs = FSBackend(tmp_path, capacity_bytes=int(3.5 * SIZE))
    for i in range(3):
        fs.put([(_key(i), _value(i))])
        _age(fs, _key(i), 1_000_000 + i)
    assert fs.get([_key(0)]) == [_value(0)]  # now the most recently used
    fs.put([(_key(3), _value(3))])
    assert fs.exists([_key(i) for i in range(4)]) == [True, False, True, True]


def test_existing_files_count_towards_the_bound(tmp_path: Path) -> None:
    first = FSBackend(tmp_path, capacity_bytes=int(3.5 * SIZE))
    for i in range(3):
        first.put([(_key(i), _value(i))])
        _age(first, _key(i), 1_000_000 + i)
    second = FSBackend(tmp_path, capacity_bytes=int(3.5 * SIZE))
    assert second.used_bytes == 3 * SIZE
    second.put([(_key(3), _value(3))])
    assert second.exists([_key(0)]) == [False]


def test_unusable_root_is_a_connection_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(L2Error) as info:
        FSBackend(blocker / "sub", capacity_bytes=1 << 20)
    assert info.value.kind == "connection"
