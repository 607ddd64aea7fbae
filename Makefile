# The README's two first-run commands are `make run` (main job) and `make test` (the test suite).
# Both set up everything first (system packages when root, .venv/, npm pieces) and reuse what exists.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: setup lerobot-env run test soak test-fast bench clean

setup:
	@bash scripts/setup.sh

# Python 3.12 env for `policy=lerobot` (LeRobot ACT/SmolVLA served by our policy server); `make test` builds it too
lerobot-env:
	@bash scripts/lerobot_env.sh

run: setup
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(VENV)/bin/hil-robot run experiment=sim_pick_cube $(RUN_ARGS)

test:
	@HIL_ROBOT_LEROBOT=1 bash scripts/setup.sh
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(PY) -m pytest -m "not gpu and not hardware and not soak" $(PYTEST_ARGS)

# the long fuzz storms (>= 10^5 malformed frames per endpoint) and crash-trial series; minutes
soak: setup
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(PY) -m pytest -m soak $(PYTEST_ARGS)

# unit tests only, no slow/ros/browser (quick local loop)
test-fast: setup
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(PY) -m pytest tests/unit -m "not slow and not soak and not ros and not browser and not gpu and not hardware" $(PYTEST_ARGS)

bench: setup
	@for b in scripts/bench_*.py; do echo "== $$b"; MUJOCO_GL=egl $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .venv-lerobot .pytest_cache
