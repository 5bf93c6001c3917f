"""A tiny CPU workload profiled by the real pyroscope-io agent, tagged like the KV-cache connector.

It alternates untagged "model" work with connector-style work under
``pyroscope.tag_wrapper({"op": "load"|"save", "tier": "l2"})`` so a collector (ours or Grafana
Pyroscope) receives what an engine would send. Used by the profiling integration tests and handy to
try the UI::

    kvbench profile serve --port 4040 &
    python samples/profiling/tagged_workload.py --server http://127.0.0.1:4040 --seconds 10
    # open http://127.0.0.1:4040/ and pick service kvbench-sample, tag op

Runs for ``--seconds`` and then flushes with ``pyroscope.shutdown()``; it never loops forever.

The agent samples asynchronously: a stack captured just before a ``tag_wrapper`` boundary can be
attributed with the tags that hold just after it, so ~1-2% of samples land under the neighbouring
op. ``--gap-s`` sleeps (off-CPU, so unsampled) around each tagged block, which keeps the ops' stacks
cleanly apart when a test needs that.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import pyroscope


def decode_kv_block(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


def read_l2_block(n: int) -> int:
    data = b"x" * 4096
    for _ in range(n // 2000):
        data = hashlib.sha256(data).digest() * 128
    return decode_kv_block(n)


def kv_connector_load(n: int) -> int:
    return read_l2_block(n)


def encode_kv_block(n: int) -> int:
    acc = 1
    for i in range(n):
        acc ^= (i * 2654435761) & 0xFFFF
    return acc


def write_l2_block(n: int) -> int:
    return encode_kv_block(n)


def kv_connector_save(n: int) -> int:
    return write_l2_block(n)


def model_forward(n: int) -> float:
    s = 0.0
    for i in range(n):
        s += (i % 7) * 0.5
    return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="http://127.0.0.1:4040")
    p.add_argument("--service", default="kvbench-sample")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--upload-interval", type=int, default=1)
    p.add_argument("--scale", type=float, default=1.0, help="Multiply the work per block.")
    p.add_argument("--gap-s", type=float, default=0.0, help="Sleep around each tagged block.")
    args = p.parse_args()
    pyroscope.configure(
        application_name=args.service,
        server_address=args.server,
        sample_rate=100,
        upload_interval=args.upload_interval,
        tags={"workload": "sample"},
    )
    n = max(1, round(args.scale * 20_000))
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            model_forward(2 * n)
            time.sleep(args.gap_s)
            with pyroscope.tag_wrapper({"op": "load", "tier": "l2"}):
                kv_connector_load(3 * n)
            time.sleep(args.gap_s)
            with pyroscope.tag_wrapper({"op": "save", "tier": "l2"}):
                kv_connector_save(2 * n)
            time.sleep(args.gap_s)
    finally:
        pyroscope.shutdown()


if __name__ == "__main__":
    main()
