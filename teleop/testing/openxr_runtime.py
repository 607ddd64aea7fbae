"""Build the scripted OpenXR runtime (C, system compiler) and point the OpenXR loader at it.

    rt = build_runtime(tmp_dir)                 # gcc -> libhil_scripted_xr.so + runtime manifest JSON
    write_script(path, samples)                 # recorded controller states to play back
    env = {"XR_RUNTIME_JSON": rt.manifest, "HIL_XR_SCRIPT": path}
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

SOURCE = Path(__file__).resolve().parent / "scripted_openxr_runtime.c"
INCLUDE_DIRS = ("/usr/include",)


@dataclasses.dataclass(frozen=True)
class ScriptedRuntime:
    library: Path
    manifest: Path


@dataclasses.dataclass
class ControllerSample:
    t_s: float
    hand: str = "right"
    valid: bool = True
    pose: tuple[float, float, float, float, float, float, float] = (0.0, 1.2, -0.3, 1.0, 0.0, 0.0, 0.0)
    trigger: float = 0.0
    squeeze: float = 0.0
    primary: bool = False
    secondary: bool = False
    stick_click: bool = False
    stick: tuple[float, float] = (0.0, 0.0)

    def line(self) -> str:
        vals = [f"{self.t_s:.6f}", self.hand, str(int(self.valid)), *(f"{v:.7f}" for v in self.pose),
                f"{self.trigger:.4f}", f"{self.squeeze:.4f}", str(int(self.primary)), str(int(self.secondary)),
                str(int(self.stick_click)), f"{self.stick[0]:.4f}", f"{self.stick[1]:.4f}"]
        return " ".join(vals)


def unavailable_reason() -> str | None:
    if shutil.which("gcc") is None:
        return "no C compiler: run `sudo apt-get install gcc`"
    if not Path("/usr/include/openxr/openxr.h").is_file():
        return "no OpenXR headers: run `sudo apt-get install libopenxr-dev`"
    return None


def build_runtime(out_dir: str | Path) -> ScriptedRuntime:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lib = out / "libhil_scripted_xr.so"
    cmd = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-fvisibility=hidden", "-o", str(lib), str(SOURCE), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"building the scripted OpenXR runtime failed:\n{' '.join(cmd)}\n{proc.stderr}")
    manifest = out / "hil_scripted_runtime.json"
    manifest.write_text(json.dumps({
        "file_format_version": "1.0.0",
        "runtime": {"name": "hil_robot scripted runtime", "library_path": str(lib.resolve())},
    }, indent=2))
    return ScriptedRuntime(lib, manifest)


def write_script(path: str | Path, samples: Iterable[ControllerSample]) -> Path:
    p = Path(path)
    p.write_text("\n".join(s.line() for s in samples) + "\n")
    return p
