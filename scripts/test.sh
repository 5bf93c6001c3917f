#!/usr/bin/env bash
# The whole test suite: lint, unit tests, integration tests against real servers.
# pytest's exit 5 ("no tests collected") is a failure here: a suite that ran nothing proves nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
mkdir -p test-artifacts
"$VENV/bin/ruff" check . || exit 1
"$VENV/bin/ruff" format --check . || exit 1
"$VENV/bin/python" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$rc"
