"""A Pyroscope-compatible local profile collector with a flamegraph web UI.

Agents (pyroscope-io) push to it exactly as to Grafana Pyroscope; clients query it through the
subset of Pyroscope's query API that :mod:`profiling.capture` uses, so the same client code works
against this collector and a real Pyroscope server. Entry points: ``kvbench profile serve`` and
:func:`profiling.capture.start_local_collector`.
"""
