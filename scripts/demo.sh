#!/usr/bin/env bash
# The main job on the embedded default: a local vLLM CPU engine on the offline tiny model, a local
# redis-server, and the quickstart scenario (baseline vs L1 vs L2 Redis vs L1+L2).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/kvbench run scenarios/quickstart.yaml "$@"
