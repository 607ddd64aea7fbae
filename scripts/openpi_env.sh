#!/usr/bin/env bash
# The openpi-client environment for the protocol tests: openpi-client 0.1.2 pins numpy < 2 (ours is
# 2.x), so its msgpack_numpy and WebsocketClientPolicy live in their own small venv. The tests
# (tests/unit/test_openpi_*.py, tests/integration/test_openpi_*.py) run helper scripts with its
# interpreter in a subprocess; without it they skip and say how to create it. Stamped and reused.
#
#   bash scripts/openpi_env.sh        # creates/updates .venv-openpi/
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${OPENPI_VENV:-.venv-openpi}
SPEC='openpi-client==0.1.2 typing_extensions'  # its websocket client imports typing_extensions

stamp="$VENV/.hil_robot_openpi_setup"
want=$(echo "$SPEC" | cat - scripts/openpi_env.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "[setup] creating/updating $VENV ($SPEC)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $SPEC
"$VENV/bin/python" -c "import openpi_client.msgpack_numpy, openpi_client.websocket_client_policy"
echo "$want" > "$stamp"
