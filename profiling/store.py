"""On-disk profile store: one sqlite3 file of aggregated stack rows.

Layout: a *stream* is one (profile type, full label set) pair, where the label set is the series
labels plus per-sample tags; a *stack* is a root-first frame list stored once; a *sample row* is the
summed value of one stack in one stream over one ``BUCKET_S``-second bucket. Ingesting the same stack
twice in a bucket adds to the row, so the file grows with distinct stacks and time, not with
uploads. Retention drops whole buckets older than the horizon, then streams and stacks nothing refers
to. All methods are thread-safe (one connection behind a lock; sqlite's WAL keeps readers cheap).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from profiling.ingest import Batch, Stack
from profiling.selector import Selector

BUCKET_S = 10
_SEP = "\x1f"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    profile_type TEXT NOT NULL,
    labels TEXT NOT NULL,
    first_bucket INTEGER NOT NULL,
    last_bucket INTEGER NOT NULL,
    UNIQUE (profile_type, labels)
);
CREATE TABLE IF NOT EXISTS stacks (
    id INTEGER PRIMARY KEY,
    frames TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS samples (
    stream_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    stack_id INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (stream_id, bucket, stack_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_bucket ON samples (bucket);
"""


@dataclass(frozen=True)
class Stream:
    id: int
    profile_type: str
    labels: dict[str, str]
    first_bucket: int
    last_bucket: int


def bucket_of(t: float) -> int:
    return int(t // BUCKET_S) * BUCKET_S


class Store:
    """Profiles under ``data_dir/profiles.sqlite3``, kept for ``retention_s`` seconds."""

    def __init__(self, data_dir: Path, retention_s: float = 7 * 86400.0) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "profiles.sqlite3"
        self.retention_s = retention_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._streams: dict[int, Stream] = {}
        self._stream_ids: dict[tuple[str, str], int] = {}
        self._stack_ids: dict[str, int] = {}
        self._load_streams()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _load_streams(self) -> None:
        self._streams.clear()
        self._stream_ids.clear()
        for sid, ptype, labels, first, last in self._db.execute(
            "SELECT id, profile_type, labels, first_bucket, last_bucket FROM streams"
        ):
            self._streams[sid] = Stream(sid, ptype, json.loads(labels), first, last)
            self._stream_ids[(ptype, labels)] = sid

    def ingest(self, batches: Iterable[Batch]) -> int:
        """Store ``batches``; returns the number of (stream, bucket, stack) rows touched."""
        rows = 0
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for batch in batches:
                    bucket = bucket_of(batch.time_s)
                    sid = self._stream_id(batch, bucket)
                    self._db.executemany(
                        "INSERT INTO samples (stream_id, bucket, stack_id, value) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (stream_id, bucket, stack_id) "
                        "DO UPDATE SET value = value + excluded.value",
                        [(sid, bucket, self._stack_id(stack), v) for stack, v in batch.stacks.items()],
                    )
                    rows += len(batch.stacks)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._load_streams()
                self._stack_ids.clear()
                raise
        return rows

    def _stream_id(self, batch: Batch, bucket: int) -> int:
        key = (batch.profile_type, json.dumps(batch.labels, sort_keys=True, separators=(",", ":")))
        sid = self._stream_ids.get(key)
        if sid is None:
            cur = self._db.execute(
                "INSERT INTO streams (profile_type, labels, first_bucket, last_bucket) VALUES (?, ?, ?, ?)",
                (*key, bucket, bucket),
            )
            sid = int(cur.lastrowid or 0)
            self._stream_ids[key] = sid
            self._streams[sid] = Stream(sid, batch.profile_type, dict(batch.labels), bucket, bucket)
            return sid
        s = self._streams[sid]
        if bucket > s.last_bucket or bucket < s.first_bucket:
            first, last = min(s.first_bucket, bucket), max(s.last_bucket, bucket)
            self._db.execute(
                "UPDATE streams SET first_bucket = ?, last_bucket = ? WHERE id = ?", (first, last, sid)
            )
            self._streams[sid] = Stream(sid, s.profile_type, s.labels, first, last)
        return sid

    def _stack_id(self, stack: Stack) -> int:
        text = _SEP.join(stack)
        sid = self._stack_ids.get(text)
        if sid is None:
            row = self._db.execute(
                "INSERT INTO stacks (frames) VALUES (?) ON CONFLICT (frames) DO UPDATE SET frames = frames "
                "RETURNING id",
                (text,),
            ).fetchone()
            sid = int(row[0])
            if len(self._stack_ids) > 200_000:
                self._stack_ids.clear()
            self._stack_ids[text] = sid
        return sid

    def streams(self, selector: Selector | None, start: float, end: float) -> list[Stream]:
        """Streams with data in [start, end] that ``selector`` (None: all) matches."""
        lo, hi = bucket_of(start), end
        with self._lock:
            candidates = list(self._streams.values())
        return [
            s
            for s in candidates
            if s.last_bucket >= lo
            and s.first_bucket <= hi
            and (selector is None or selector.profile_type in (None, s.profile_type))
            and (selector is None or selector.matches(s.labels))
        ]

    def select(self, selector: Selector, start: float, end: float) -> tuple[dict[Stack, int], dict[int, int]]:
        """(merged stacks, per-bucket totals) of matching streams in [start, end]."""
        ids = [s.id for s in self.streams(selector, start, end)]
        stacks: dict[Stack, int] = {}
        timeline: dict[int, int] = {}
        if not ids:
            return stacks, timeline
        lo, hi = bucket_of(start), end
        with self._lock:
            self._db.execute("DROP TABLE IF EXISTS temp.sel")
            self._db.execute("CREATE TEMP TABLE sel (id INTEGER PRIMARY KEY)")
            self._db.executemany("INSERT INTO temp.sel VALUES (?)", [(i,) for i in ids])
            rows = self._db.execute(
                "SELECT st.frames, SUM(sa.value) FROM samples sa JOIN temp.sel ON sa.stream_id = sel.id "
                "JOIN stacks st ON st.id = sa.stack_id WHERE sa.bucket >= ? AND sa.bucket <= ? "
                "GROUP BY sa.stack_id",
                (lo, hi),
            ).fetchall()
            buckets = self._db.execute(
                "SELECT sa.bucket, SUM(sa.value) FROM samples sa JOIN temp.sel ON sa.stream_id = sel.id "
                "WHERE sa.bucket >= ? AND sa.bucket <= ? GROUP BY sa.bucket",
                (lo, hi),
            ).fetchall()
            self._db.execute("DROP TABLE temp.sel")
        for frames, value in rows:
            stacks[tuple(frames.split(_SEP))] = int(value)
        for bucket, value in buckets:
            timeline[int(bucket)] = int(value)
        return stacks, timeline

    def label_names(self, selector: Selector | None, start: float, end: float) -> list[str]:
        names = {k for s in self.streams(selector, start, end) for k in s.labels}
        return sorted(names)

    def label_values(self, name: str, selector: Selector | None, start: float, end: float) -> list[str]:
        values = {s.labels[name] for s in self.streams(selector, start, end) if name in s.labels}
        return sorted(values)

    def profile_types(self, selector: Selector | None, start: float, end: float) -> list[str]:
        return sorted({s.profile_type for s in self.streams(selector, start, end)})

    def prune(self, now: float | None = None) -> int:
        """Drop data older than the retention horizon; returns the number of sample rows removed."""
        cutoff = bucket_of((time.time() if now is None else now) - self.retention_s)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                removed = self._db.execute("DELETE FROM samples WHERE bucket < ?", (cutoff,)).rowcount
                self._db.execute("DELETE FROM streams WHERE last_bucket < ?", (cutoff,))
                self._db.execute(
                    "UPDATE streams SET first_bucket = ? WHERE first_bucket < ?", (cutoff, cutoff)
                )
                if removed:
                    self._db.execute(
                        "DELETE FROM stacks WHERE id NOT IN (SELECT DISTINCT stack_id FROM samples)"
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._stack_ids.clear()
                self._load_streams()
        return int(removed)
