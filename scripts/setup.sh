#!/usr/bin/env bash
# One-time set-up, re-run cheaply: system packages (when root and missing), .venv/ with the project
# and all extras, and the npm pieces used by the browser tests. Reuses a complete .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

bash scripts/install_system_deps.sh

stamp="$VENV/.hil_robot_setup"
want=$(cat pyproject.toml scripts/setup.sh $(ls tests/browser/package.json 2>/dev/null) | sha256sum | cut -d' ' -f1)
# The LeRobot policy environment (Python 3.12, its own torch): reused when complete. Not fatal: without
# it policy=lerobot and its tests say why they cannot run (HIL_ROBOT_SKIP_LEROBOT=1 skips building it).
if [ "${HIL_ROBOT_SKIP_LEROBOT:-0}" != 1 ]; then
  bash scripts/lerobot_env.sh || echo "[setup] the LeRobot environment is not available (see above); policy=lerobot will not run"
fi

# openpi-client (numpy < 2) for the openpi protocol tests, in its own small venv. Not fatal: those tests skip.
bash scripts/openpi_env.sh || echo "[setup] the openpi-client environment is not available; its protocol tests will skip"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/hil-robot" ]; then
  exit 0
fi

echo "[setup] creating/updating $VENV"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and pinned: a bare requirement would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[all]"

if [ -f tests/browser/package.json ] && command -v npm >/dev/null; then
  echo "[setup] npm install (tests/browser)"
  (cd tests/browser && npm install --no-audit --no-fund --silent)
fi
echo "$want" > "$stamp"
echo "[setup] done"
