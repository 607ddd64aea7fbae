"""Offscreen camera rendering with one reusable ``mujoco.Renderer`` per image size.

A missing EGL/OSMesa backend is turned into a ``RenderBackendError`` that says what to install.
Shadows and reflections are off unless the config asks (they dominate llvmpipe render time).
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

INSTALL_HINT = {
    "egl": "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri  (or set MUJOCO_GL=osmesa with libosmesa6)",
    "osmesa": "apt-get install libosmesa6  (or set MUJOCO_GL=egl with libegl1 libegl-mesa0 libgl1-mesa-dri)",
    "glfw": "apt-get install libglfw3 libgl1 and run under a display (headless machines: MUJOCO_GL=egl)",
}


class RenderBackendError(RuntimeError):
    """No usable OpenGL backend for offscreen rendering."""


def backend_error(exc: BaseException) -> RenderBackendError:
    import sim

    if sim.GL_DEFAULT_TOO_LATE:
        return RenderBackendError(
            f"cannot create an offscreen OpenGL context ({exc}): mujoco was imported before `import sim` with "
            "MUJOCO_GL unset, so it chose glfw, which needs a display. Export MUJOCO_GL=egl before starting Python "
            "(needs: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)."
        )
    backend = os.environ.get("MUJOCO_GL", "") or "(unset; MuJoCo tries glfw)"
    hint = INSTALL_HINT.get(os.environ.get("MUJOCO_GL", "").lower(), INSTALL_HINT["egl"] + "; then export MUJOCO_GL=egl")
    return RenderBackendError(
        f"cannot create an offscreen OpenGL context for MuJoCo rendering (MUJOCO_GL={backend}): {exc}. "
        f"Install the backend: {hint}. For state-only use set sim.render=false."
    )


class CameraRenderer:
    """Renders named cameras of one model to uint8 [H, W, 3] arrays."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int, shadows: bool = False) -> None:
        try:
            self.renderer = mujoco.Renderer(model, height, width)
        except Exception as e:  # mujoco raises various errors (FatalError, RuntimeError) per backend
            raise backend_error(e) from e
        flags = self.renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(shadows)
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = False
        self.option = mujoco.MjvOption()
        self.option.sitegroup[:] = 0  # hide helper sites in images

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        self.renderer.update_scene(data, camera=camera, scene_option=self.option)
        return self.renderer.render()

    def close(self) -> None:
        self.renderer.close()
