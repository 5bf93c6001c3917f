"""kvbench: prove that KV-cache offloading pays.

The CLI (`kvbench`) drives prefix-reuse workloads against OpenAI-compatible endpoints, builds the
offline tiny model, benchmarks the cache tiers and collects profiles. The engine-side code lives in
the separate `connector` package, which never imports `kvbench`.
"""

__version__ = "0.1.0"
