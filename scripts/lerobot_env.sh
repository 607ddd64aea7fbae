#!/usr/bin/env bash
# The LeRobot policy environment: a Python 3.12 virtual environment (lerobot needs >= 3.12) with
# lerobot[smolvla,dataset] and hil_robot's base dependencies (not the [learn] extra: its torch pin is
# for the main .venv). `hil-robot serve-policy policy=lerobot` runs with its interpreter; the robot
# side stays in .venv without torch. Stamped and reused when complete; re-run cheaply.
#
#   bash scripts/lerobot_env.sh            # creates/updates .venv-lerobot/
#   LEROBOT_VENV=/path bash scripts/lerobot_env.sh
#   LEROBOT_PYTHON=/usr/bin/python3.12 bash scripts/lerobot_env.sh
#
# Exit codes: 0 ready, 3 no Python >= 3.12 found, 4 the install failed (the message says why).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LEROBOT_VENV:-.venv-lerobot}
LEROBOT_SPEC='lerobot[smolvla,dataset,peft]==0.6.1'  # peft: LoRA fine-tuning (hil_robot/learn/lerobot_bc.py)

stamp="$VENV/.hil_robot_lerobot_setup"
want=$(cat pyproject.toml scripts/lerobot_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

find_python() {
  local c
  for c in "${LEROBOT_PYTHON:-}" python3.12 python3.13 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 \
           "$HOME"/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.13; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

if ! py=$(find_python); then
  echo "[lerobot-env] no Python >= 3.12 found (lerobot needs it); install one (e.g. apt-get install python3.12-venv," \
       "or pyenv install 3.12) or set LEROBOT_PYTHON=/path/to/python3.12, then run: make lerobot-env" >&2
  exit 3
fi

echo "[lerobot-env] creating/updating $VENV with $py ($LEROBOT_SPEC, ~3 GB of wheels: torch + CUDA runtime libraries)"
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
       "$VENV/bin/python" -m pip install -q "$LEROBOT_SPEC" -e .; }; then
  echo "[lerobot-env] pip could not install $LEROBOT_SPEC into $VENV (see the pip output above);" \
       "fix that and re-run: make lerobot-env" >&2
  exit 4
fi
"$VENV/bin/python" -c 'import lerobot, torch, hil_robot' || { echo "[lerobot-env] $VENV was installed but lerobot/torch/hil_robot do not import" >&2; exit 4; }
echo "$want" > "$stamp"
echo "[lerobot-env] done in $(( $(date +%s) - t0 )) s: $VENV"
